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

// sd_log_cb_t: void (*)(enum sd_log_level_t, const char*, void*).
func newLogCallback() uintptr {
	return purego.NewCallback(func(level int32, text *byte, _ uintptr) {
		onLog(level, text)
	})
}

// sd_progress_cb_t: void (*)(int step, int steps, float time, void*). The
// float travels in a floating-point register, so it is declared as one.
func newProgressCallback() uintptr {
	return purego.NewCallback(func(step, steps int32, _ float32, _ uintptr) {
		onProgress(step, steps)
	})
}
