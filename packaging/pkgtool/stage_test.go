package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// fakeRuntime writes files into a new folder and returns it with a variant
// that pins them.
func fakeRuntime(t *testing.T, files map[string][]byte) (string, Variant) {
	t.Helper()
	dir := t.TempDir()
	v := Variant{Name: "test-x64", OS: "linux"}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
		v.Files = append(v.Files, File{Name: name, SHA256: sum(data)})
	}
	return dir, v
}

func TestStageCopiesVerifiedFilesAndLinks(t *testing.T) {
	src, v := fakeRuntime(t, map[string][]byte{"libllama.v1.so": []byte("llama"), "libggml-base.so": []byte("base")})
	v.Links = map[string]string{"libllama.so": "libllama.v1.so"}
	out := filepath.Join(t.TempDir(), "lib")
	if err := stage(v, src, out); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(out, "libllama.so"))
	if err != nil || string(got) != "llama" {
		t.Fatalf("link libllama.so reads %q, %v", got, err)
	}
	if target, err := os.Readlink(filepath.Join(out, "libllama.so")); err != nil || target != "libllama.v1.so" {
		t.Fatalf("libllama.so should be a relative symlink, got %q %v", target, err)
	}
	if err := verify(v, out); err != nil {
		t.Fatalf("staged folder does not verify: %v", err)
	}
}

func TestStageRefusesACorruptRuntimeFile(t *testing.T) {
	src, v := fakeRuntime(t, map[string][]byte{"libllama.v1.so": []byte("llama"), "libggml-base.so": []byte("base")})
	if err := os.WriteFile(filepath.Join(src, "libggml-base.so"), []byte("tampered"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "lib")
	err := stage(v, src, out)
	var mm *MismatchError
	if !errors.As(err, &mm) {
		t.Fatalf("want a MismatchError, got %v", err)
	}
	for _, want := range []string{"libggml-base.so", "does not match the manifest", "refusing to package it", sum([]byte("tampered"))} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused runtime must leave no output folder, stat says %v", err)
	}
}

func TestStageNamesAMissingFile(t *testing.T) {
	src, v := fakeRuntime(t, map[string][]byte{"libllama.v1.so": []byte("llama")})
	v.Files = append(v.Files, File{Name: "libggml.v1.so", SHA256: sum([]byte("x"))})
	err := stage(v, src, filepath.Join(t.TempDir(), "lib"))
	var miss *MissingError
	if !errors.As(err, &miss) || !strings.Contains(err.Error(), "libggml.v1.so is missing") {
		t.Fatalf("want a MissingError naming libggml.v1.so, got %v", err)
	}
}

func TestStageKeepsTheOldFolderWhenRefusing(t *testing.T) {
	src, v := fakeRuntime(t, map[string][]byte{"a.so": []byte("a")})
	out := filepath.Join(t.TempDir(), "lib")
	if err := stage(v, src, out); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "a.so"), []byte("b"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := stage(v, src, out); err == nil {
		t.Fatal("stage accepted a changed file")
	}
	if err := verify(v, out); err != nil {
		t.Fatalf("the previously staged folder was damaged: %v", err)
	}
}

// The manifest in the repository must be self-consistent and cover every
// platform the installers build.
func TestRepositoryManifest(t *testing.T) {
	vs, err := loadManifest("../runtimes.json")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"linux-x64", "linux-x64-vulkan", "linux-x64-cuda", "win-x64", "win-x64-vulkan", "win-x64-cuda", "mac-arm64-metal"}
	for _, name := range want {
		v, err := findVariant(vs, name)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		names := strings.Join(v.installedNames(), " ")
		switch v.OS {
		case "windows":
			// yzma opens these names; the versioned ones must not also be installed.
			for _, n := range []string{"llama.dll", "ggml.dll", "ggml-base.dll"} {
				if !strings.Contains(" "+names+" ", " "+n+" ") {
					t.Errorf("%s does not install %s: %s", name, n, names)
				}
			}
			if strings.Contains(names, ".v0.") {
				t.Errorf("%s installs a versioned DLL beside the renamed one: %s", name, names)
			}
		case "linux":
			for _, n := range []string{"libllama.so", "libggml.so", "libggml-base.so"} {
				if !strings.Contains(" "+names+" ", " "+n+" ") {
					t.Errorf("%s does not provide %s: %s", name, n, names)
				}
			}
		case "darwin":
			for _, n := range []string{"libllama.dylib", "libggml.dylib", "libggml-base.dylib"} {
				if !strings.Contains(" "+names+" ", " "+n+" ") {
					t.Errorf("%s does not provide %s: %s", name, n, names)
				}
			}
		}
	}
	if _, err := findVariant(vs, "win-arm64"); err == nil || !strings.Contains(err.Error(), "known:") {
		t.Errorf("an unknown variant should be refused with the list of known ones, got %v", err)
	}
}

// With the real runtime fetched (make runtime), a corrupted copy of it is
// refused with the file's name.
func TestRealRuntimeCorruptedCopyIsRefused(t *testing.T) {
	src := filepath.Join("..", "..", "runtime", "llama", "linux-x64")
	if _, err := os.Stat(filepath.Join(src, "libllama.v0.5.0.so")); err != nil {
		t.Skip("needs the fetched linux-x64 runtime: run `make runtime`")
	}
	vs, err := loadManifest("../runtimes.json")
	if err != nil {
		t.Fatal(err)
	}
	v, err := findVariant(vs, "linux-x64")
	if err != nil {
		t.Fatal(err)
	}
	if err := verify(v, src); err != nil {
		t.Fatalf("the fetched runtime itself does not verify: %v", err)
	}
	cp := t.TempDir()
	for _, f := range v.Files {
		if err := copyFile(filepath.Join(src, f.Name), filepath.Join(cp, f.Name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	victim := filepath.Join(cp, "libggml-base.so")
	data, err := os.ReadFile(victim)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0xff
	if err := os.WriteFile(victim, data, 0o644); err != nil {
		t.Fatal(err)
	}
	err = stage(v, cp, filepath.Join(t.TempDir(), "lib"))
	if err == nil || !strings.Contains(err.Error(), "libggml-base.so does not match the manifest") {
		t.Fatalf("want the corrupted libggml-base.so refused, got %v", err)
	}
}

// mingw builds two small DLLs shaped like the npm Windows runtime: a
// versioned ggml and a llama that imports it by the versioned name.
func buildFakeWindowsRuntime(t *testing.T) string {
	t.Helper()
	cc, err := exec.LookPath("x86_64-w64-mingw32-gcc")
	if err != nil {
		t.Skip("needs x86_64-w64-mingw32-gcc (Debian gcc-mingw-w64-x86-64)")
	}
	if runtime.GOOS == "windows" {
		t.Skip("builds DLLs with a cross compiler")
	}
	dir := t.TempDir()
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("ggml.c", "__declspec(dllexport) int ggml_answer(void) { return 42; }\n")
	write("llama.c", "__declspec(dllimport) int ggml_answer(void);\n__declspec(dllexport) int llama_answer(void) { return ggml_answer(); }\n")
	run := func(args ...string) {
		cmd := exec.Command(cc, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v\n%s", cc, args, err, out)
		}
	}
	run("-shared", "-o", "ggml.v9.dll", "ggml.c")
	run("-shared", "-o", "llama.v9.dll", "llama.c", "ggml.v9.dll")
	return dir
}

func TestPatchImportRewritesTheImportName(t *testing.T) {
	dir := buildFakeWindowsRuntime(t)
	p := filepath.Join(dir, "llama.v9.dll")
	before, err := peImports(p)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(before, " "), "ggml.v9.dll") {
		t.Fatalf("test DLL should import ggml.v9.dll, imports %v", before)
	}
	st0, _ := os.Stat(p)
	if err := patchImport(p, "ggml.v9.dll", "ggml.dll"); err != nil {
		t.Fatal(err)
	}
	after, err := peImports(p)
	if err != nil {
		t.Fatal(err)
	}
	joined := " " + strings.Join(after, " ") + " "
	if !strings.Contains(joined, " ggml.dll ") || strings.Contains(joined, "ggml.v9.dll") {
		t.Fatalf("after patching, imports are %v", after)
	}
	if st1, _ := os.Stat(p); st1.Size() != st0.Size() {
		t.Errorf("patching changed the file size from %d to %d", st0.Size(), st1.Size())
	}
	if err := patchImport(p, "ggml.v9.dll", "ggml.dll"); err == nil || !strings.Contains(err.Error(), "does not import ggml.v9.dll") {
		t.Errorf("patching twice should say the import is gone, got %v", err)
	}
	if err := patchImport(p, "ggml.dll", "ggml-longer-name.dll"); err == nil {
		t.Error("a longer replacement name must be refused")
	}
}

func TestStageWindowsRenamesPatchesAndChecksImports(t *testing.T) {
	dir := buildFakeWindowsRuntime(t)
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	v := Variant{Name: "win-test", OS: "windows", Files: []File{
		{Name: "ggml.v9.dll", SHA256: sum(read("ggml.v9.dll"))},
		{Name: "llama.v9.dll", SHA256: sum(read("llama.v9.dll"))},
	}, Renames: map[string]string{"ggml.dll": "ggml.v9.dll", "llama.dll": "llama.v9.dll"}}

	// Renaming without rewriting llama's import leaves it pointing at a
	// DLL that is not installed: the closure check must say so.
	err := stage(v, dir, filepath.Join(t.TempDir(), "lib"))
	if err == nil || !strings.Contains(err.Error(), "llama.dll imports ggml.v9.dll, which is not installed beside it") {
		t.Fatalf("want the dangling import reported, got %v", err)
	}

	// Learn the patched hash the way the manifest's author does, then stage.
	probe := filepath.Join(t.TempDir(), "llama.dll")
	if err := copyFile(filepath.Join(dir, "llama.v9.dll"), probe, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := patchImport(probe, "ggml.v9.dll", "ggml.dll"); err != nil {
		t.Fatal(err)
	}
	v.ImportPatches = []ImportPatch{{File: "llama.dll", From: "ggml.v9.dll", To: "ggml.dll", SHA256: sum(read2(t, probe))}}
	out := filepath.Join(t.TempDir(), "lib")
	if err := stage(v, dir, out); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(out)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if got := strings.Join(names, " "); got != "ggml.dll llama.dll" {
		t.Fatalf("staged %q, want exactly ggml.dll llama.dll", got)
	}

	// A patched result that differs from the pinned hash is refused too.
	v.ImportPatches[0].SHA256 = sum([]byte("something else"))
	err = stage(v, dir, filepath.Join(t.TempDir(), "lib"))
	if err == nil || !strings.Contains(err.Error(), "after rewriting its ggml.v9.dll import") {
		t.Fatalf("want the patched-hash mismatch reported, got %v", err)
	}
}

func read2(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
