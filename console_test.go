package main

import "testing"

func TestWantsConsoleOnlyForCommands(t *testing.T) {
	cases := map[string]bool{
		"":                  false, // the desktop app
		"--start-minimised": false, // desktop flags from a start-up entry
		"run":               true,
		"devstudio":         true,
		"demo":              true,
		"version":           true,
		"--version":         true,
		"-h":                true,
		"help":              true,
		"frobnicate":        true, // its error must be seen
	}
	for arg, want := range cases {
		var args []string
		if arg != "" {
			args = []string{arg, "--studio", "x"}
		}
		if got := wantsConsole(args); got != want {
			t.Errorf("wantsConsole(%q) = %t, want %t", args, got, want)
		}
	}
}
