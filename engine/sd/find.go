package sd

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/minisgg/studio-worker/engine"
)

// LibFile is the stable-diffusion.cpp library's file name on this platform,
// as runtimes.json pins it and the packages install it.
func LibFile() string {
	switch runtime.GOOS {
	case "windows":
		return "libstable-diffusion.dll"
	case "darwin":
		return "libstable-diffusion.dylib"
	}
	return "libstable-diffusion.so"
}

// executable is os.Executable; tests move the program elsewhere.
var executable = os.Executable

// Found is where FindLib found the library.
type Found struct {
	Path string // the library file, absolute
	From string // "setting", EnvLib, "next to the program", "the source tree's runtime folder"
}

// FindLib looks for the library the way the llama.cpp runtime is looked
// for: explicit (the donor's sd_lib_path setting), then $STUDIO_WORKER_SD_LIB,
// then lib/ next to the real executable (the packages' layout), then
// runtime/sd/<variant>/ next to it, then ../runtime/sd/<variant>/ beside a
// source tree's bin/ (what `make runtime` fills). A setting or variable may
// name the file or the folder holding it. The error lists every place tried
// and why each failed.
func FindLib(explicit string) (Found, error) {
	type cand struct{ path, from string }
	var cands []cand
	if explicit != "" {
		cands = append(cands, cand{explicit, "setting"})
	}
	if env := os.Getenv(EnvLib); env != "" {
		cands = append(cands, cand{env, EnvLib})
	}
	tree := ""
	if exe, err := executable(); err == nil {
		if real, err := filepath.EvalSymlinks(exe); err == nil {
			exe = real
		}
		dir := filepath.Dir(exe)
		if st, err := os.Stat(filepath.Join(filepath.Dir(dir), "go.mod")); err == nil && !st.IsDir() {
			tree = filepath.Dir(dir)
		}
		cands = append(cands,
			cand{filepath.Join(dir, "lib"), "next to the program"},
			cand{filepath.Join(dir, "runtime", "sd", engine.PlatformVariant()), "next to the program"},
			cand{filepath.Join(filepath.Dir(dir), "runtime", "sd", engine.PlatformVariant()), "the source tree's runtime folder"})
	}
	// After the libraries beside the program (the packages carry them and
	// keep working offline): the pack fetched for this computer.
	if rec, err := engine.CurrentPack("", engine.RuntimeSD); err == nil {
		cands = append(cands, cand{rec.Dir, rec.Describe()})
	}
	var looked []string
	for _, c := range cands {
		p := c.path
		st, err := os.Stat(p)
		if err == nil && st.IsDir() {
			p = filepath.Join(p, LibFile())
			st, err = os.Stat(p)
		}
		switch {
		case err != nil:
			looked = append(looked, fmt.Sprintf("%s (%s: not there)", p, c.from))
			continue
		case st.IsDir():
			looked = append(looked, fmt.Sprintf("%s (%s: a folder)", p, c.from))
			continue
		}
		if abs, err := filepath.Abs(p); err == nil {
			p = abs
		}
		return Found{Path: p, From: c.from}, nil
	}
	hint := "set sd_lib_path in the settings or " + EnvLib
	if tree != "" {
		hint = "run `make runtime` in " + tree + ", or " + hint
	}
	return Found{}, fmt.Errorf("stable-diffusion.cpp library (%s) not found; looked in: %s. %s", LibFile(), strings.Join(looked, "; "), hint)
}

// Modes lists the kinds of image job this worker runs, in the studio's
// terms (studio-protocol §3, task.image).
var Modes = []string{"txt2img", "img2img (initImageUrl, denoise)", "inpainting (maskUrl)", "reference edits (refImageUrl)"}

// Summary says, in one line per fact, which library the engine loaded,
// from where, and what image jobs it runs; or why it is off.
func (e *Engine) Summary() []string {
	if e.lib == nil {
		return []string{"stable-diffusion.cpp runtime: not loaded: " + e.loadErr.Error()}
	}
	return []string{
		fmt.Sprintf("stable-diffusion.cpp runtime: %s (commit %s) from %s (%s), CPU, threads: %d",
			e.lib.Version(), e.lib.Commit(), e.lib.Path(), e.found.From, e.threads),
		fmt.Sprintf("  image jobs: %s; PNG or WebP; sides %d to %d pixels in multiples of %d (or of what the model needs), at most %d pixels, 1 to %d steps",
			strings.Join(Modes, ", "), MinSide, MaxSide, SizeMultiple, MaxPixels, MaxSteps),
	}
}
