//go:build darwin || freebsd || linux || netbsd

package sd

import "github.com/ebitengine/purego"

// openLibrary loads the library with RTLD_LOCAL: it carries its own copy of
// ggml, and loaded globally those symbols would bind llama.cpp's ggml calls
// to it.
func openLibrary(path string) (uintptr, error) {
	return purego.Dlopen(path, purego.RTLD_NOW|purego.RTLD_LOCAL)
}

func lookupSymbol(handle uintptr, name string) (uintptr, error) {
	return purego.Dlsym(handle, name)
}

func newLogCallback() uintptr      { return purego.NewCallback(logCallback) }
func newProgressCallback() uintptr { return purego.NewCallback(progressCallback) }
