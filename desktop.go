package main

import (
	"fmt"
	"os"
)

// runDesktop starts the desktop app. The Fyne shell is wired in by the app
// package; until then the binary says so instead of pretending.
func runDesktop(args []string) int {
	fmt.Fprintln(os.Stderr, "studio-worker: the desktop app is not built into this binary yet; use `studio-worker run`")
	return 2
}
