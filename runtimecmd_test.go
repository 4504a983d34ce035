package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/minisgg/studio-worker/studio"
)

// version --verbose keeps the version alone on its first line and says on
// the next which llama.cpp runtime loads (or why none does).
func TestCLIVersionVerbose(t *testing.T) {
	lib := os.Getenv("STUDIO_WORKER_LLAMA_LIB")
	code, out, errs := runCLI(t, "version", "--verbose", "--config", t.TempDir())
	if code != 0 || errs != "" {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) < 2 || lines[0] != "studio-worker "+studio.Version {
		t.Fatalf("output %q", out)
	}
	if _, err := os.Stat(filepath.Join(lib, "libllama.so")); lib != "" && err == nil {
		abs, _ := filepath.Abs(lib)
		if !strings.HasPrefix(lines[1], "llama.cpp runtime: ") || !strings.Contains(lines[1], abs) {
			t.Errorf("runtime line %q should name %s", lines[1], abs)
		}
	} else if !strings.HasPrefix(lines[1], "llama.cpp runtime: not loaded: ") {
		t.Errorf("without a runtime: %q", lines[1])
	}
	// Then which stable-diffusion.cpp library loads and what image jobs it
	// runs (or why none does).
	sdLine := ""
	for i, l := range lines {
		if strings.HasPrefix(l, "stable-diffusion.cpp runtime: ") {
			sdLine = l
			if sdLib := os.Getenv("STUDIO_WORKER_SD_LIB"); sdLib != "" {
				if _, err := os.Stat(sdLib); err == nil {
					if !strings.Contains(l, "master-827-97d2990") || !strings.Contains(l, sdLib) ||
						i+1 >= len(lines) || !strings.Contains(lines[i+1], "image jobs: txt2img") {
						t.Errorf("image runtime lines %q should name %s and the image jobs it runs", lines[i:], sdLib)
					}
				}
			}
		}
	}
	if sdLine == "" {
		t.Errorf("no stable-diffusion.cpp line in %q", out)
	}
	// Then where runtime packs go and what this computer offers them.
	if !strings.Contains(out, "\nruntime packs: ") || !strings.Contains(out, "; this computer: ") {
		t.Errorf("no runtime packs line in %q", out)
	}
	// Printing the version writes nothing into the settings folder.
	dir := t.TempDir()
	runCLI(t, "version", "--verbose", "--config", dir)
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("version --verbose wrote %v into the settings folder", ents)
	}
}

func TestCLIRuntimeCheckUsage(t *testing.T) {
	code, _, errs := runCLI(t, "runtime-check")
	if code != 2 {
		t.Errorf("exit %d", code)
	}
	oneLine(t, errs, "usage: runtime-check")
}
