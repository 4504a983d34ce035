package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Variant is one entry of packaging/runtimes.json: one prebuilt llama.cpp
// build as an npm package ships it, plus what packaging does to it.
type Variant struct {
	Name     string            `json:"variant"`
	OS       string            `json:"os"`
	Arch     string            `json:"arch"`
	Accel    string            `json:"accel"`
	NPM      string            `json:"npm"`
	Version  string            `json:"version"`
	LlamaCpp string            `json:"llamaCpp"`
	Dir      string            `json:"dir"`
	Links    map[string]string `json:"links,omitempty"`
	Files    []File            `json:"files"`
	// Renames installs a file under the name yzma opens instead of the
	// npm name (Windows has no symlinks a per-user installer can make).
	// Key: installed name; value: the npm file name.
	Renames map[string]string `json:"renames,omitempty"`
	// ImportPatches rewrite a DLL's import of a renamed DLL, so that the
	// library loads the one renamed copy instead of a second ggml.
	ImportPatches []ImportPatch `json:"importPatches,omitempty"`
	// SDCpp is the stable-diffusion.cpp release of an "sd-*" entry (its
	// files come from the shared runtimes folder, not npm).
	SDCpp string `json:"sdCpp,omitempty"`
	// MinDriver is the lowest NVIDIA driver version a CUDA build runs on
	// (the release feed's Pack.MinDriver); "" for other backends.
	MinDriver string `json:"minDriver,omitempty"`
}

// File is one pinned file of a variant.
type File struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
}

// ImportPatch names a DLL (by installed name), the import to rewrite and
// the sha256 the patched file must have.
type ImportPatch struct {
	File   string `json:"file"`
	From   string `json:"from"`
	To     string `json:"to"`
	SHA256 string `json:"sha256"`
}

// MismatchError is a runtime file that is not the one the manifest pins.
type MismatchError struct {
	Variant, Path, Want, Got string
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("runtime %s: %s does not match the manifest (sha256 %s, expected %s): "+
		"refusing to package it; delete the runtime folder and fetch it again (make runtime)",
		e.Variant, e.Path, e.Got, e.Want)
}

// MissingError is a pinned runtime file that is not there.
type MissingError struct {
	Variant, Path string
}

func (e *MissingError) Error() string {
	return fmt.Sprintf("runtime %s: %s is missing: fetch the runtime first (packaging/fetch-runtime.sh %s <folder>)",
		e.Variant, e.Path, e.Variant)
}

func loadManifest(path string) ([]Variant, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read the runtime manifest: %w", err)
	}
	var vs []Variant
	if err := json.Unmarshal(b, &vs); err != nil {
		return nil, fmt.Errorf("runtime manifest %s is not valid JSON: %w", path, err)
	}
	return vs, nil
}

func findVariant(vs []Variant, name string) (Variant, error) {
	var names []string
	for _, v := range vs {
		if v.Name == name {
			return v, v.check()
		}
		names = append(names, v.Name)
	}
	return Variant{}, fmt.Errorf("no runtime variant %q in the manifest (known: %s)", name, strings.Join(names, ", "))
}

// check catches a manifest that contradicts itself before anything is copied.
func (v Variant) check() error {
	if len(v.Files) == 0 {
		return fmt.Errorf("runtime %s lists no files", v.Name)
	}
	have := map[string]bool{}
	for _, f := range v.Files {
		if f.Name == "" || strings.ContainsAny(f.Name, `/\`) || len(f.SHA256) != 64 {
			return fmt.Errorf("runtime %s: bad file entry %+v", v.Name, f)
		}
		have[f.Name] = true
	}
	for dst, src := range v.Renames {
		if !have[src] {
			return fmt.Errorf("runtime %s: rename %s -> %s names a file that is not pinned", v.Name, src, dst)
		}
	}
	for l, t := range v.Links {
		if !have[t] {
			return fmt.Errorf("runtime %s: link %s -> %s points at a file that is not pinned", v.Name, l, t)
		}
	}
	for _, p := range v.ImportPatches {
		if len(p.SHA256) != 64 || len(p.To) > len(p.From) {
			return fmt.Errorf("runtime %s: bad import patch %+v", v.Name, p)
		}
	}
	return nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// verify checks every pinned file of v in dir against its sha256.
func verify(v Variant, dir string) error {
	for _, f := range v.Files {
		p := filepath.Join(dir, f.Name)
		got, err := fileSHA256(p)
		if errors.Is(err, os.ErrNotExist) {
			return &MissingError{Variant: v.Name, Path: p}
		}
		if err != nil {
			return fmt.Errorf("runtime %s: %w", v.Name, err)
		}
		if got != f.SHA256 {
			return &MismatchError{Variant: v.Name, Path: p, Want: f.SHA256, Got: got}
		}
	}
	return nil
}

// installedNames lists what stage writes, sorted: pinned files under their
// installed names, then links.
func (v Variant) installedNames() []string {
	renamedFrom := map[string]bool{}
	for _, src := range v.Renames {
		renamedFrom[src] = true
	}
	var out []string
	for _, f := range v.Files {
		if !renamedFrom[f.Name] {
			out = append(out, f.Name)
		}
	}
	for dst := range v.Renames {
		out = append(out, dst)
	}
	for l := range v.Links {
		out = append(out, l)
	}
	sort.Strings(out)
	return out
}
