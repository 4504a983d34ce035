// Command studio-worker lends this computer's GPU to the minis.gg studio.
// With no argument it starts the desktop app; `run` is the headless worker,
// `devstudio` a local studio for tests, demos and self-hosters, `version`
// prints the version.
package main

import (
	"os"

	// First: it must run before Fyne reads the locale (see its comment).
	_ "github.com/minisgg/studio-worker/internal/clocale"
)

func main() {
	installRuntimeCheck()
	os.Exit(cli(os.Args[1:], os.Stdout, os.Stderr))
}
