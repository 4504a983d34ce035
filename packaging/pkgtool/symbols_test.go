package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// yzmaBindings reads, from the yzma module this project builds with, the
// C functions its llama package looks up, keyed by the library yzma opens
// them from (ggml, ggml-base, llama).
func yzmaBindings(t *testing.T) map[string][]string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/hybridgroup/yzma").Output()
	if err != nil {
		t.Skipf("needs the yzma module source (go mod download): %v", err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "pkg", "llama")
	files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
	re := regexp.MustCompile(`lib\.Prep\("([A-Za-z0-9_]+)"`)
	by := map[string][]string{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		lib := "llama"
		switch filepath.Base(f) {
		case "ggml.go":
			lib = "ggml"
		case "ggml_base.go":
			lib = "ggml-base"
		}
		for _, m := range re.FindAllSubmatch(b, -1) {
			by[lib] = append(by[lib], string(m[1]))
		}
	}
	if len(by["llama"]) == 0 || len(by["ggml"]) == 0 {
		t.Fatalf("found no lib.Prep calls in %s: has yzma's loader changed?", dir)
	}
	return by
}

// Every runtime variant that is fetched here must export every function
// yzma binds, under the library name yzma opens: the Windows and macOS
// builds are an older llama.cpp (v0.4.0) than the one yzma targets, so a
// missing symbol would only show on a donor's machine otherwise.
func TestFetchedRuntimesExportWhatYzmaBinds(t *testing.T) {
	vs, err := loadManifest("../runtimes.json")
	if err != nil {
		t.Fatal(err)
	}
	want := yzmaBindings(t)
	tested := 0
	for _, v := range vs {
		src := filepath.Join("..", "..", "runtime", "llama", v.Name)
		if verify(v, src) != nil {
			continue // not fetched here (or stale): nothing to inspect
		}
		tested++
		fileOf := func(lib string) string {
			var name string
			switch v.OS {
			case "windows":
				name = lib + ".dll"
				if npm, ok := v.Renames[name]; ok {
					name = npm
				}
			case "darwin":
				name = "lib" + lib + ".dylib"
			default:
				name = "lib" + lib + ".so"
			}
			if target, ok := v.Links[name]; ok {
				name = target
			}
			return filepath.Join(src, name)
		}
		for lib, syms := range want {
			exp, err := exportedSymbols(fileOf(lib))
			if err != nil {
				t.Errorf("%s: %s: %v", v.Name, lib, err)
				continue
			}
			have := map[string]bool{}
			for _, s := range exp {
				have[s] = true
			}
			var missing []string
			for _, s := range syms {
				if !have[s] {
					missing = append(missing, s)
				}
			}
			if len(missing) > 0 {
				t.Errorf("%s: %s lacks %d functions yzma binds: %s", v.Name, filepath.Base(fileOf(lib)), len(missing), strings.Join(missing, " "))
			}
		}
	}
	if tested == 0 {
		t.Skip("needs a fetched runtime in runtime/llama (make runtime, or make package-linux/package-windows)")
	}
	t.Logf("%d fetched runtime variants export every function yzma binds", tested)
}
