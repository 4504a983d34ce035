package llama

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/adrg/xdg"

	"github.com/minisgg/studio-worker/engine"
)

// dataHome points the data folder (where runtime packs live) at a
// temporary one for the test.
func dataHome(t *testing.T) {
	t.Helper()
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	xdg.Reload()
	t.Cleanup(xdg.Reload)
}

// packAt records a fake runtime pack (build record and libllama) as the
// one fetched for this computer.
func packAt(t *testing.T, backend, gpuField string) string {
	t.Helper()
	variant := engine.PlatformVariant()
	if backend != "cpu" {
		variant += "-" + backend
	}
	dir := filepath.Join(engine.PacksDir(), "llama", variant, "v0.5.0")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, metadataFile), []byte(record("linux", "x64", gpuField, "v0.5.0")), 0o644)
	os.WriteFile(filepath.Join(dir, libFile()), nil, 0o644)
	if err := engine.WriteCurrentPack("", engine.PackRecord{Runtime: "llama", Variant: variant, Version: "v0.5.0", Backend: backend, Dir: dir,
		Problem: "a note from the pack's install"}); err != nil {
		t.Fatal(err)
	}
	return dir
}

// The runtime pack fetched for this computer comes after every runtime
// beside the program, except that a GPU pack beats a CPU build there; a
// missing pack folder is passed over.
func TestFindLibRuntimePack(t *testing.T) {
	t.Setenv(LibEnv, "")
	dataHome(t)
	prev := executable
	exeDir := t.TempDir()
	executable = func() (string, error) { return filepath.Join(exeDir, "studio-worker"), nil }
	t.Cleanup(func() { executable = prev })

	// Nothing beside the program: the CPU pack.
	cpuPack := packAt(t, "cpu", "false")
	c, err := findLib("")
	if err != nil || c.dir != cpuPack || !strings.Contains(c.from, "the CPU runtime pack "+engine.PlatformVariant()+" v0.5.0 fetched for this computer") {
		t.Fatalf("pack alone: %+v %v", c, err)
	}
	if c.problem != "a note from the pack's install" {
		t.Errorf("the pack's problem is carried: %q", c.problem)
	}

	// A CPU build beside the program wins over a CPU pack.
	beside := filepath.Join(exeDir, "lib")
	os.Mkdir(beside, 0o755)
	os.WriteFile(filepath.Join(beside, metadataFile), []byte(record("linux", "x64", "false", "v0.5.0")), 0o644)
	os.WriteFile(filepath.Join(beside, libFile()), nil, 0o644)
	if c, _ := findLib(""); c.dir != beside {
		t.Fatalf("CPU beside the program vs CPU pack: %+v", c)
	}

	// A Vulkan pack beats the CPU build beside the program.
	gpuPack := packAt(t, "vulkan", `"vulkan"`)
	c, _ = findLib("")
	if c.dir != gpuPack || !strings.Contains(c.from, "preferred to the CPU build next to the program") {
		t.Fatalf("Vulkan pack vs CPU beside the program: %+v", c)
	}

	// A GPU runtime beside the program (the Vulkan package) wins.
	os.WriteFile(filepath.Join(beside, "libggml-vulkan.so"), nil, 0o644)
	if c, _ := findLib(""); c.dir != beside {
		t.Fatalf("GPU beside the program vs GPU pack: %+v", c)
	}

	// A pack whose folder went away is passed over, with the reason in the log.
	os.RemoveAll(filepath.Join(beside))
	os.RemoveAll(gpuPack)
	if _, err := findLib(""); err == nil {
		t.Fatal("a recorded pack whose folder is gone was found")
	}
}
