package main

import "strings"

// wantsConsole reports whether args run a command that prints (run,
// devstudio, demo, version, help, an unknown command's error) rather than
// the desktop app, which cli starts with no arguments or with flags only.
// The Windows build is a GUI program and attaches to the console it was
// started from only for these.
func wantsConsole(args []string) bool {
	if len(args) == 0 {
		return false
	}
	switch args[0] {
	case "--version", "-version", "-h", "-help", "--help":
		return true
	}
	return !strings.HasPrefix(args[0], "-")
}
