// Package controls decides whether the worker may take work now, and if
// not, why: the donor's pause, "only when I'm away", "pause when the GPU
// is busy or one of my programs runs", the weekly schedule and the GPU
// temperature and power ceilings all feed one decision that the worker,
// the heartbeat (autoEnabled, onlyWhenIdle, userPresence), the tray and
// the window's one-line reason read.
//
// This file is the contract between the decision and the machine: the
// probes that read the machine live in subpackages (controls/presence,
// controls/gpuwatch) and are wired in by the app, so that the decision is
// tested with fake probes and a fake clock, and the probes with the real
// machine. Imports: controls imports neither studio nor engine; its
// subpackages may import controls for these types.
package controls

import (
	"context"
	"errors"
	"time"
)

// ErrUnknown is wrapped by a probe that cannot tell on this machine (no X
// server, no NVIDIA driver, no permission to read a process's fdinfo). The
// decision treats it as "unknown", which for presence counts as active
// (studio-protocol.md §5.4) and for the GPU counts as not busy; the reason
// is logged once, not on every poll.
var ErrUnknown = errors.New("cannot tell on this machine")

// IdleProbe reads how long ago the person last used the keyboard or mouse.
// Sources by platform (studio-protocol.md §5.4): the X11 screensaver
// extension; GNOME's org.gnome.Mutter.IdleMonitor.GetIdletime, then
// org.freedesktop.ScreenSaver.GetSessionIdleTime on Wayland; Windows
// GetLastInputInfo; macOS IOHIDSystem HIDIdleTime.
type IdleProbe interface {
	// IdleTime returns the time since the last input. An error (wrapping
	// ErrUnknown where the source is absent) means presence is unknown.
	IdleTime(ctx context.Context) (time.Duration, error)
	// Source names where the figure comes from, for logs and the
	// Settings page ("X11 screensaver extension").
	Source() string
}

// GPUProcess is a process that is using a GPU.
type GPUProcess struct {
	PID  int
	Name string // executable name, e.g. "blender" or "game.exe"; "" when unknown
	// Device is the GPU it uses as its driver names it ("NVIDIA GeForce
	// RTX 4070", "card0"); "" when unknown.
	Device string
	// MemoryBytes is the GPU memory it holds; 0 when unknown.
	MemoryBytes uint64
}

// GPUSample is one reading of the machine's GPUs.
type GPUSample struct {
	// Processes are the processes using a GPU now, ours included: the
	// decision leaves out the worker's own PIDs (the app and its engine
	// children), so a probe need not know them.
	Processes []GPUProcess
	// ProcessesKnown is false where no source lists GPU processes.
	ProcessesKnown bool
	// TemperatureC is the hottest GPU's core temperature in °C; 0 with
	// TemperatureKnown false when no source reports one.
	TemperatureC     float64
	TemperatureKnown bool
	// PowerW is the highest GPU power draw in watts; 0 with PowerKnown
	// false when no source reports one.
	PowerW     float64
	PowerKnown bool
	// Source names where the figures come from ("NVML 12.4",
	// "nvidia-smi", "DRM fdinfo").
	Source string
}

// GPUProbe reads the GPUs. It only reads: it never changes a driver
// setting (no power limits, no clocks).
type GPUProbe interface {
	Sample(ctx context.Context) (GPUSample, error)
}

// ProgramProbe tells which of the named programs run now. Names are
// executable names as the donor typed them; matching is by the
// executable's base name, case-insensitive, with or without ".exe".
type ProgramProbe interface {
	Running(ctx context.Context, names []string) ([]string, error)
}
