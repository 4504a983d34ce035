package gpuwatch

import (
	"context"
	"errors"
	"unsafe"

	"golang.org/x/sys/windows"
)

// platformList reads the process snapshot (CreateToolhelp32Snapshot with
// TH32CS_SNAPPROCESS); szExeFile is the executable's file name.
func (p *Programs) platformList(ctx context.Context) ([]procNames, error) {
	snap, err := windows.CreateToolhelp32Snapshot(windows.TH32CS_SNAPPROCESS, 0)
	if err != nil {
		return nil, unknownf("the process list cannot be read: %v", err)
	}
	defer windows.CloseHandle(snap)
	var e windows.ProcessEntry32
	e.Size = uint32(unsafe.Sizeof(e))
	var out []procNames
	for err = windows.Process32First(snap, &e); err == nil; err = windows.Process32Next(snap, &e) {
		if name := windows.UTF16ToString(e.ExeFile[:]); name != "" {
			out = append(out, procNames{PID: int(e.ProcessID), Names: []string{name}})
		}
		if len(out)%64 == 0 {
			if cerr := ctx.Err(); cerr != nil {
				return nil, cerr
			}
		}
	}
	if !errors.Is(err, windows.ERROR_NO_MORE_FILES) {
		return nil, unknownf("the process list cannot be read: %v", err)
	}
	return out, nil
}
