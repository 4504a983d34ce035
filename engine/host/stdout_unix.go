//go:build unix

package host

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// protocolStdout takes the process's stdout for the protocol and points
// file descriptor 1 at stderr, so that whatever native code prints to
// stdout cannot corrupt a frame: it joins the error output the parent
// watches instead.
func protocolStdout() (io.Writer, error) {
	fd, err := unix.Dup(1)
	if err != nil {
		return nil, fmt.Errorf("cannot keep stdout for the protocol: %w", err)
	}
	unix.CloseOnExec(fd)
	if err := unix.Dup2(2, 1); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("cannot point stdout at stderr: %w", err)
	}
	return os.NewFile(uintptr(fd), "engine-host protocol"), nil
}
