//go:build windows

package engine

import (
	"errors"

	"golang.org/x/sys/windows"
)

func diskFree(path string) (uint64, error) {
	p, err := windows.UTF16PtrFromString(path)
	if err != nil {
		return 0, err
	}
	var avail, total, free uint64
	if err := windows.GetDiskFreeSpaceEx(p, &avail, &total, &free); err != nil {
		return 0, err
	}
	return avail, nil
}

func isDiskFull(err error) bool {
	return errors.Is(err, windows.ERROR_DISK_FULL) || errors.Is(err, windows.ERROR_HANDLE_DISK_FULL)
}

// syncDir is a no-op: Windows cannot open a folder for syncing, and NTFS
// makes renames durable by its journal.
func syncDir(string) {}
