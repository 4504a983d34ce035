package sd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/adrg/xdg"

	"github.com/minisgg/studio-worker/engine"
)

// The stable-diffusion.cpp pack fetched for this computer is looked for
// after the library beside the program, and FindLib says where it came from.
func TestFindLibRuntimePack(t *testing.T) {
	t.Setenv(EnvLib, "")
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	xdg.Reload()
	t.Cleanup(xdg.Reload)
	prev := executable
	exeDir := t.TempDir()
	executable = func() (string, error) { return filepath.Join(exeDir, "studio-worker"), nil }
	t.Cleanup(func() { executable = prev })

	if _, err := FindLib(""); err == nil {
		t.Fatal("found a library where there is none")
	}
	dir := filepath.Join(engine.PacksDir(), "sd", engine.PlatformVariant(), "master-827-97d2990")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, LibFile()), nil, 0o644)
	if err := engine.WriteCurrentPack("", engine.PackRecord{Runtime: "sd", Variant: engine.PlatformVariant(), Version: "master-827-97d2990", Backend: "cpu", Dir: dir}); err != nil {
		t.Fatal(err)
	}
	f, err := FindLib("")
	if err != nil || f.Path != filepath.Join(dir, LibFile()) || !strings.Contains(f.From, "the CPU runtime pack "+engine.PlatformVariant()+" master-827-97d2990 fetched for this computer") {
		t.Fatalf("pack: %+v %v", f, err)
	}
	beside := filepath.Join(exeDir, "lib")
	os.Mkdir(beside, 0o755)
	os.WriteFile(filepath.Join(beside, LibFile()), nil, 0o644)
	if f, _ := FindLib(""); f.Path != filepath.Join(beside, LibFile()) || f.From != "next to the program" {
		t.Fatalf("the library beside the program wins: %+v", f)
	}
}
