// Package hosted names the native engines that run in engine-host child
// processes: how a child builds each (Builders, for `studio-worker
// engine-host llama|sd`) and how the parent starts it (Client). It is the
// one place that imports both native engines; the parent's process never
// loads either library through it.
package hosted

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/engine/host"
	"github.com/minisgg/studio-worker/engine/llama"
	"github.com/minisgg/studio-worker/engine/sd"
)

// The names of the children (`engine-host <name>`).
const (
	Llama = "llama"
	SD    = "sd"
)

// ChildEnv marks a process started as an engine host; its value is the
// child's name. A test binary that stands in for studio-worker checks it in
// TestMain (see RunChildIfAsked).
const ChildEnv = "STUDIO_WORKER_ENGINE_HOST"

// Builders are the children's engines by name. The llama.cpp and
// stable-diffusion.cpp libraries are loaded there, each in its own
// process, so their two copies of ggml never meet.
func Builders() map[string]host.Builder {
	return map[string]host.Builder{
		Llama: func(in host.Init, log *slog.Logger) (engine.Engine, host.Hello) {
			e := llamaEngine{llama.New(llama.Config{LibDir: in.LibPath, Threads: in.Threads, Log: log})}
			h := host.Hello{Kinds: e.Kinds()}
			if err := e.LibError(); err != nil {
				h.LoadError = err.Error()
				return e, h
			}
			rt := e.Runtime()
			h.Runtime = rt.Summary()
			for _, n := range []string{rt.Problem, rt.Advice} {
				if n != "" {
					h.Notices = append(h.Notices, n)
				}
			}
			return e, h
		},
		SD: func(in host.Init, log *slog.Logger) (engine.Engine, host.Hello) {
			e := sd.New(sd.Config{LibPath: in.LibPath, Threads: in.Threads, Log: log})
			h := host.Hello{Kinds: e.Kinds()}
			if err := e.LoadError(); err != nil {
				h.LoadError = err.Error()
				return e, h
			}
			l := e.Library()
			h.Runtime = fmt.Sprintf("stable-diffusion.cpp %s (%s) from %s", l.Version(), l.Commit(), l.Path())
			return e, h
		},
	}
}

// CheckPack tries an unpacked runtime pack (engine/packs) in a child
// process of exe before it is used: llama.cpp through `exe runtime-check
// --need-gpu <dir>` (load, list the GPUs, decode a tiny model with every
// layer on them, and fail a GPU build that sees no GPU; llama.ChildChecker), stable-diffusion.cpp by starting its
// engine-host child on the pack's library (loaded, its release checked).
// nil means the pack works here; the error says why not, in words.
func CheckPack(exe string) func(ctx context.Context, runtime, dir string) error {
	return func(ctx context.Context, runtime, dir string) error {
		switch runtime {
		case engine.RuntimeLlama:
			// A GPU pack that finds no GPU is no better than the CPU one.
			return llama.ChildChecker(exe, "runtime-check", llama.NeedGPUFlag)(ctx, dir)
		case engine.RuntimeSD:
			c := Client(SD, Options{Exe: exe, LibPath: dir, KeepAlive: -1})
			defer c.Close()
			return c.LoadError()
		}
		return fmt.Errorf("no check is known for the runtime %q", runtime)
	}
}

// llamaEngine is the llama.cpp engine as a child serves it: it also lists
// the GPUs ggml sees, for the parent's GPU probe.
type llamaEngine struct{ *llama.Engine }

// Devices lists the GPUs the loaded ggml backends see (llama.Devices).
func (llamaEngine) Devices() ([]engine.GPUDevice, error) { return llama.Devices() }

// RunChildIfAsked serves the engine named by ChildEnv and exits, when that
// variable is set; otherwise it returns at once. A test binary calls it
// first thing in TestMain, so that it can stand in for studio-worker as the
// child (Options.Exe names it).
func RunChildIfAsked() {
	if name := os.Getenv(ChildEnv); name != "" {
		os.Exit(host.ChildMain([]string{name}, Builders(), os.Stderr))
	}
}

// Options say how the parent starts one child.
type Options struct {
	// Exe is the studio-worker program; empty is os.Executable().
	Exe string
	// LibPath and Threads go to the engine (see host.Init).
	LibPath string
	Threads int
	Log     *slog.Logger
	// Limits and KeepAlive: see host.Config (zero values are defaults).
	Limits    host.Limits
	KeepAlive time.Duration
}

// Client starts the child called name ("llama" or "sd") and returns its
// parent-side engine; see host.New.
func Client(name string, o Options) *host.Client {
	exe := o.Exe
	if exe == "" {
		exe, _ = os.Executable()
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg := host.Config{
		Command:   []string{exe, "engine-host", name},
		Env:       []string{ChildEnv + "=" + name},
		Init:      host.Init{LibPath: o.LibPath, Threads: o.Threads, LogLevel: slog.LevelDebug},
		Log:       log,
		Limits:    o.Limits,
		KeepAlive: o.KeepAlive,
	}
	for _, l := range []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn} {
		if log.Enabled(context.Background(), l) {
			cfg.Init.LogLevel = l
			break
		}
		cfg.Init.LogLevel = slog.LevelError
	}
	switch name {
	case Llama:
		cfg.Init.Engine, cfg.What = engine.EngineLlamaCpp, "the text engine"
	case SD:
		cfg.Init.Engine, cfg.What = engine.EngineSDCpp, "the image engine"
	}
	return host.New(cfg)
}
