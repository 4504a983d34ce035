// Command studio-worker lends this computer's GPU to the minis.gg studio.
// With no argument it starts the desktop app; `run` is the headless worker,
// `devstudio` a local studio for tests, demos and self-hosters, `version`
// prints the version.
package main

import "os"

func main() {
	os.Exit(cli(os.Args[1:], os.Stdout, os.Stderr))
}
