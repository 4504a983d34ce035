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

// Windows callbacks take every argument as a pointer-sized integer slot
// (the x64 convention passes the float in the third slot's XMM register,
// which is ignored here), and return one.
func newLogCallback() uintptr {
	return syscall.NewCallback(func(level uintptr, text *byte, _ uintptr) uintptr {
		onLog(int32(level), text)
		return 0
	})
}

func newProgressCallback() uintptr {
	return syscall.NewCallback(func(step, steps, _, _ uintptr) uintptr {
		onProgress(int32(step), int32(steps))
		return 0
	})
}
