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
