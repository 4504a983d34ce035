package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/BurntSushi/toml"

	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/engine/llama"
	"github.com/minisgg/studio-worker/engine/packs"
	"github.com/minisgg/studio-worker/engine/sd"
	"github.com/minisgg/studio-worker/settings"
	"github.com/minisgg/studio-worker/studio"
)

// installRuntimeCheck makes the engine try a GPU runtime in a child of this
// program (`studio-worker runtime-check <dir>`) before loading it: a GPU
// backend that fails inside ggml aborts the whole process. main calls it,
// not cli, so that a test binary never starts itself as that child.
func installRuntimeCheck() {
	exe, err := os.Executable()
	if err != nil {
		return // without a path to ourselves, GPU runtimes load untried
	}
	llama.SetRuntimeChecker(llama.ChildChecker(exe, "runtime-check"))
}

// cmdVersion prints the version on one line; --verbose adds which llama.cpp
// runtime this program finds and loads, what it computes on and, when a GPU
// goes unused, what to install; then which stable-diffusion.cpp library
// loads, from where, and what image jobs it runs.
func cmdVersion(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	verbose := fs.Bool("verbose", false, "also say which llama.cpp and stable-diffusion.cpp runtimes load and on what they run")
	configDir := fs.String("config", "", "settings folder (default: the user's config folder)")
	if code, done := parseCommand(fs, args, stderr, stderr); done {
		return code
	}
	fmt.Fprintf(stdout, "studio-worker %s\n", studio.Version)
	if !*verbose {
		return 0
	}
	// The donor's llama library folder setting, when there is one. Read,
	// not Load: Load writes (a first install id, a corrupt file set aside),
	// and printing a version must change nothing. A problem with the file
	// is the app's to report, not this line's.
	var saved settings.Settings
	dir := *configDir
	if dir == "" {
		dir, _ = settings.DefaultDir()
	}
	if dir != "" {
		if data, err := os.ReadFile(settings.NewStore(dir).Path()); err == nil {
			_, _ = toml.Decode(string(data), &saved)
		}
	}
	defer func() {
		// Runtime packs: where they go, and what this computer can run.
		m := packs.DetectMachine(context.Background())
		fmt.Fprintf(stdout, "runtime packs: %s (fetched from the release feed when a runtime is missing or a GPU one fits; this computer: %s)\n", engine.PacksDir(), m)
	}()
	defer func() {
		img := sd.New(sd.Config{LibPath: saved.SDLibPath, Threads: saved.Threads, Log: slog.New(slog.DiscardHandler)})
		for _, line := range img.Summary() {
			fmt.Fprintln(stdout, line)
		}
	}()
	libDir := saved.LlamaLibDir
	if _, err := llama.LoadRuntime(libDir, slog.New(slog.DiscardHandler)); err != nil {
		fmt.Fprintln(stdout, "llama.cpp runtime: not loaded: "+err.Error())
		return 0
	}
	info := llama.Runtime()
	fmt.Fprintln(stdout, info.Summary())
	for _, d := range info.Devices {
		fmt.Fprintf(stdout, "  GPU %s: %.1f GB total, %.1f GB free\n", d.Name, float64(d.TotalBytes)/(1<<30), float64(d.FreeBytes)/(1<<30))
	}
	for _, line := range []string{info.Problem, info.Advice} {
		if line != "" {
			fmt.Fprintln(stdout, line)
		}
	}
	return 0
}
