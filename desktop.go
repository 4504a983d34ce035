package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"

	"github.com/minisgg/studio-worker/app"
	"github.com/minisgg/studio-worker/app/stack"
)

// devStudioEnv turns on the embedded dev studio like --dev-studio does.
const devStudioEnv = "STUDIO_WORKER_DEV_STUDIO"

// runDesktop starts the desktop app (window and tray) and returns the exit
// code. With --dev-studio it talks to a dev studio on loopback that
// approves it and feeds it demo jobs, the way `make run` shows it first.
func runDesktop(args []string) int {
	fs := flag.NewFlagSet("studio-worker", flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	devDefault, _ := strconv.ParseBool(os.Getenv(devStudioEnv))
	dev := fs.Bool("dev-studio", devDefault, "run against an embedded dev studio on 127.0.0.1 that approves this worker and queues demo jobs (also "+devStudioEnv+"=1)")
	devDir := fs.String("dev-dir", "", "where the dev studio keeps its state, settings and models (default: the user's state folder)")
	demoJobs := fs.Int("demo-jobs", 3, "how many demo jobs the dev studio queues at start")
	demoOver := fs.Duration("demo-over", 0, "spread the demo jobs over this long from start (e.g. 1m), so they are seen to flow; 0 queues them all at once")
	minimised := fs.Bool("minimised", false, "start hidden in the tray")
	page := fs.String("page", "", "open the window at this page: Status, Jobs, Logs, Models or Settings (in the running app, if there is one)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: studio-worker [--dev-studio] [--minimised] [--page NAME]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "studio-worker: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return 2
	}
	return app.Run(app.Options{
		Stack: stack.Options{
			DevStudio: *dev,
			DevDir:    *devDir,
			DemoJobs:  *demoJobs,
			// As many image jobs beside them (when sd.cpp loads).
			DemoImageJobs: *demoJobs,
			LocalAPI:      true,
			DemoOver:      *demoOver,
		},
		Minimised: *minimised,
		Page:      *page,
	})
}
