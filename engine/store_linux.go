package engine

import (
	"os"

	"golang.org/x/sys/unix"
)

// startWriteback asks Linux to begin writing a range of the file to disk
// without waiting for it; errors only mean the final fsync does more work.
func startWriteback(f *os.File, off, n int64) {
	_ = unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
}
