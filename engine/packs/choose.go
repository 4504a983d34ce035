package packs

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/release"
)

// ErrNoPack is wrapped when the feed has no pack of a runtime that this
// computer can run.
var ErrNoPack = errors.New("no runtime pack for this computer")

// ErrOtherPlatform is wrapped when a pack is for another OS or
// architecture than this computer's.
var ErrOtherPlatform = errors.New("the runtime pack is for another computer")

// Choice is the packs of one runtime to try on a machine, best first.
type Choice struct {
	// Packs to try in order: GPU packs the machine can run (Metal, CUDA,
	// Vulkan), then the CPU pack when the feed has one.
	Packs []release.Pack
	// Skipped says, in a donor's words, why each pack for this OS and
	// architecture was passed over ("the CUDA pack linux-x64-cuda needs
	// NVIDIA driver 580.65 or newer; this computer has 535.104.05").
	Skipped []string
}

// backendRank orders backends, best first.
var backendRank = map[string]int{"metal": 0, "cuda": 1, "vulkan": 2, "cpu": 3}

// Choose picks the packs of runtime ("llama" or "sd") that m can run, best
// first: Metal on Apple silicon; CUDA when an NVIDIA driver at least the
// pack's MinDriver is present (among CUDA packs, the one needing the newest
// driver the machine has: the newest CUDA); Vulkan when a Vulkan loader is
// installed; CPU otherwise and always last, as the fallback. Packs for
// another OS or architecture are never chosen. The error wraps ErrNoPack
// and says what the feed does have when nothing fits.
func Choose(all []release.Pack, runtime string, m Machine) (Choice, error) {
	var c Choice
	var elsewhere []string
	for _, p := range all {
		if p.Runtime != runtime {
			continue
		}
		if err := ForMachine(p, m); err != nil {
			if pl := p.OS + "/" + p.Arch; !slices.Contains(elsewhere, pl) {
				elsewhere = append(elsewhere, pl)
			}
			continue
		}
		if why := cannotRun(p, m); why != "" {
			c.Skipped = append(c.Skipped, why)
			continue
		}
		c.Packs = append(c.Packs, p)
	}
	slices.SortStableFunc(c.Packs, func(a, b release.Pack) int {
		ra, rb := rank(a.Backend), rank(b.Backend)
		if ra != rb {
			return ra - rb
		}
		if a.Backend == "cuda" {
			// The newest CUDA the driver runs first.
			if cmp, ok := compareDriver(b.MinDriver, a.MinDriver); ok {
				return cmp
			}
		}
		return 0
	})
	if len(c.Packs) == 0 {
		msg := fmt.Sprintf("the release feed has no %s runtime pack this computer (%s) can run", runtimeName(runtime), m)
		switch {
		case len(c.Skipped) > 0:
			msg += ": " + strings.Join(c.Skipped, "; ")
		case len(elsewhere) > 0:
			msg += "; it has packs for " + strings.Join(elsewhere, ", ") + " only"
		}
		return c, fmt.Errorf("%w: %s", ErrNoPack, msg)
	}
	return c, nil
}

func rank(backend string) int {
	if r, ok := backendRank[backend]; ok {
		return r
	}
	return len(backendRank) // a backend this worker does not know: never chosen (see cannotRun)
}

// ForMachine refuses a pack for another OS or architecture than m's.
func ForMachine(p release.Pack, m Machine) error {
	if p.OS != m.OS || p.Arch != m.Arch {
		return fmt.Errorf("%w: %s (%s %s) is for %s/%s, and this computer is %s; it was not installed",
			ErrOtherPlatform, p.Variant, runtimeName(p.Runtime), p.Version, p.OS, p.Arch, m.Platform())
	}
	return nil
}

// cannotRun says why m cannot run p ("" when it can).
func cannotRun(p release.Pack, m Machine) string {
	name := fmt.Sprintf("the %s pack %s", engine.BackendName(p.Backend), p.Variant)
	switch p.Backend {
	case "cpu":
		return ""
	case "metal":
		if !m.AppleSilicon {
			return name + " needs a Mac with Apple silicon"
		}
		return ""
	case "vulkan":
		if !m.VulkanLoader {
			return name + " needs the Vulkan loader, which is not installed"
		}
		return ""
	case "cuda":
		if m.NVIDIADriver == "" {
			return name + " needs an NVIDIA driver, and this computer has none"
		}
		if p.MinDriver == "" {
			return ""
		}
		cmp, ok := compareDriver(m.NVIDIADriver, p.MinDriver)
		switch {
		case !ok:
			return fmt.Sprintf("%s names a minimum NVIDIA driver %q that is not a driver version", name, p.MinDriver)
		case cmp < 0:
			return fmt.Sprintf("%s needs NVIDIA driver %s or newer; this computer has %s", name, p.MinDriver, m.NVIDIADriver)
		}
		return ""
	}
	return fmt.Sprintf("the pack %s has a backend this version does not know (%q)", p.Variant, p.Backend)
}

// runtimeName is a feed runtime as a donor reads it.
func runtimeName(runtime string) string {
	switch runtime {
	case engine.RuntimeLlama:
		return "llama.cpp"
	case engine.RuntimeSD:
		return "stable-diffusion.cpp"
	}
	return runtime
}
