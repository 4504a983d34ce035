package sd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/minisgg/studio-worker/engine"
)

// FindLib tries the setting, the variable, lib/ next to the program, then a
// source tree's runtime/sd/<variant>/, and names every place it tried.
func TestFindLibOrder(t *testing.T) {
	tree := t.TempDir()
	bin := filepath.Join(tree, "bin")
	rt := filepath.Join(tree, "runtime", "sd", engine.PlatformVariant())
	for _, d := range []string{bin, rt, filepath.Join(bin, "lib")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(tree, "go.mod"), []byte("module x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	prev := executable
	executable = func() (string, error) { return filepath.Join(bin, "studio-worker"), nil }
	defer func() { executable = prev }()
	t.Setenv(EnvLib, "")

	_, err := FindLib("")
	if err == nil || !strings.Contains(err.Error(), "make runtime") || !strings.Contains(err.Error(), rt) {
		t.Fatalf("nothing installed: %v", err)
	}
	put := func(dir string) string {
		p := filepath.Join(dir, LibFile())
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	inTree := put(rt)
	if f, err := FindLib(""); err != nil || f.Path != inTree || f.From != "the source tree's runtime folder" {
		t.Fatalf("source tree: %+v %v", f, err)
	}
	nextTo := put(filepath.Join(bin, "lib"))
	if f, err := FindLib(""); err != nil || f.Path != nextTo || f.From != "next to the program" {
		t.Fatalf("lib/: %+v %v", f, err)
	}
	envDir := t.TempDir()
	fromEnv := put(envDir)
	t.Setenv(EnvLib, envDir) // a folder works as well as the file
	if f, err := FindLib(""); err != nil || f.Path != fromEnv || f.From != EnvLib {
		t.Fatalf("env: %+v %v", f, err)
	}
	set := put(t.TempDir())
	if f, err := FindLib(set); err != nil || f.Path != set || f.From != "setting" {
		t.Fatalf("setting: %+v %v", f, err)
	}
	// A setting that names nothing falls through to the next place, and
	// says so when nothing at all is found.
	t.Setenv(EnvLib, "")
	for _, p := range []string{nextTo, inTree} {
		os.Remove(p)
	}
	missing := filepath.Join(t.TempDir(), "nope.so")
	if _, err := FindLib(missing); err == nil || !strings.Contains(err.Error(), missing+" (setting: not there)") {
		t.Fatalf("missing setting: %v", err)
	}
}
