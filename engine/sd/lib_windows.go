//go:build windows

package sd

import "syscall"

// DLLs keep their own symbol namespace on Windows: no RTLD_LOCAL needed.
func openLibrary(path string) (uintptr, error) {
	h, err := syscall.LoadLibrary(path)
	return uintptr(h), err
}

func lookupSymbol(handle uintptr, name string) (uintptr, error) {
	if name == "free" {
		// The DLL's C runtime is not necessarily ours; never free its
		// memory with another one's free.
		return 0, syscall.EINVAL
	}
	return syscall.GetProcAddress(syscall.Handle(handle), name)
}

// syscall.NewCallback, which is what purego.NewCallback calls on Windows.
func newLogCallback() uintptr      { return syscall.NewCallback(logCallback) }
func newProgressCallback() uintptr { return syscall.NewCallback(progressCallback) }
