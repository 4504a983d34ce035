package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// stage copies a fetched runtime (src, as fetch-runtime.sh leaves it) into
// out in the layout the installed app loads: every file verified against
// the manifest first, renames and import patches applied, links made, and
// on Windows every ggml/llama import checked to resolve inside the folder.
// out is replaced only when all of that succeeded.
func stage(v Variant, src, out string) error {
	if err := verify(v, src); err != nil {
		return err
	}
	parent := filepath.Dir(out)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(out)+".stage-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}

	installAs := map[string]string{} // npm name -> installed name
	for dst, srcName := range v.Renames {
		installAs[srcName] = dst
	}
	for _, f := range v.Files {
		name := f.Name
		if dst, ok := installAs[f.Name]; ok {
			name = dst
		}
		if err := copyFile(filepath.Join(src, f.Name), filepath.Join(tmp, name), 0o644); err != nil {
			return fmt.Errorf("runtime %s: %w", v.Name, err)
		}
	}
	for _, p := range v.ImportPatches {
		path := filepath.Join(tmp, p.File)
		if err := patchImport(path, p.From, p.To); err != nil {
			return fmt.Errorf("runtime %s: %w", v.Name, err)
		}
		got, err := fileSHA256(path)
		if err != nil {
			return err
		}
		if got != p.SHA256 {
			return &MismatchError{Variant: v.Name, Path: p.File + " (after rewriting its " + p.From + " import)", Want: p.SHA256, Got: got}
		}
	}
	for l, t := range v.Links {
		if err := os.Symlink(t, filepath.Join(tmp, l)); err != nil {
			return fmt.Errorf("runtime %s: %w", v.Name, err)
		}
	}
	if v.OS == "windows" {
		if err := checkDLLClosure(v.Name, tmp); err != nil {
			return err
		}
	}
	if err := os.RemoveAll(out); err != nil {
		return err
	}
	return os.Rename(tmp, out)
}

// checkDLLClosure fails when a staged DLL imports a ggml or llama DLL that
// is not in the folder: Windows would then either fail to load it or, worse,
// find a second copy of ggml elsewhere.
func checkDLLClosure(variant, dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	have := map[string]bool{}
	for _, e := range entries {
		have[strings.ToLower(e.Name())] = true
	}
	for _, e := range entries {
		if !strings.HasSuffix(strings.ToLower(e.Name()), ".dll") {
			continue
		}
		libs, err := peImports(filepath.Join(dir, e.Name()))
		if err != nil {
			return fmt.Errorf("runtime %s: %s: %w", variant, e.Name(), err)
		}
		for _, lib := range libs {
			l := strings.ToLower(lib)
			if (strings.HasPrefix(l, "ggml") || strings.HasPrefix(l, "llama")) && !have[l] {
				return fmt.Errorf("runtime %s: %s imports %s, which is not installed beside it", variant, e.Name(), lib)
			}
		}
	}
	return nil
}

// peImports lists the DLL names in a PE file's import and delay-import
// tables. (debug/pe's ImportedLibraries is a stub that returns nothing.)
func peImports(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	offs, err := importNameOffsets(data)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, off := range offs {
		end := bytes.IndexByte(data[off:], 0)
		if end < 0 {
			return nil, fmt.Errorf("unterminated import name")
		}
		out = append(out, string(data[off:off+end]))
	}
	return out, nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
