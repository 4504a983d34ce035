package main

import (
	"os"

	"golang.org/x/sys/windows"
)

// The Windows exe is linked as a GUI program (-H windowsgui) so that the
// desktop app opens no console window. Started from a console, such a
// program gets no standard output, and `studio-worker version` or `run`
// would print nothing; so for those commands it attaches to the console of
// the process that started it. Output already redirected to a file or pipe
// has valid handles and is left alone.
func init() {
	if wantsConsole(os.Args[1:]) {
		attachParentConsole()
	}
}

// attachParentProcess is ATTACH_PARENT_PROCESS, (DWORD)-1.
const attachParentProcess = ^uint32(0)

func attachParentConsole() {
	needOut := !usableHandle(windows.STD_OUTPUT_HANDLE)
	needErr := !usableHandle(windows.STD_ERROR_HANDLE)
	if !needOut && !needErr {
		return
	}
	attach := windows.NewLazySystemDLL("kernel32.dll").NewProc("AttachConsole")
	if r, _, _ := attach.Call(uintptr(attachParentProcess)); r == 0 {
		return // started from Explorer or a shortcut: there is no console
	}
	out, err := os.OpenFile("CONOUT$", os.O_WRONLY, 0)
	if err != nil {
		return
	}
	h := windows.Handle(out.Fd())
	if needOut {
		os.Stdout = out
		_ = windows.SetStdHandle(windows.STD_OUTPUT_HANDLE, h)
	}
	if needErr {
		os.Stderr = out
		_ = windows.SetStdHandle(windows.STD_ERROR_HANDLE, h)
	}
}

// usableHandle reports whether a standard handle leads somewhere: a GUI
// program started from a console has none, or one of unknown type.
func usableHandle(std uint32) bool {
	h, err := windows.GetStdHandle(std)
	if err != nil || h == 0 || h == windows.InvalidHandle {
		return false
	}
	t, err := windows.GetFileType(h)
	return err == nil && t != windows.FILE_TYPE_UNKNOWN
}
