package host

import (
	"io"
	"os"

	"golang.org/x/sys/windows"
)

// protocolStdout keeps the process's stdout for the protocol and makes the
// standard output handle that code looking it up later gets stderr's, so
// that native code printing to it does not corrupt a frame. (A C runtime
// that opened its stdout before this keeps the old handle.)
func protocolStdout() (io.Writer, error) {
	out := os.Stdout
	_ = windows.SetStdHandle(windows.STD_OUTPUT_HANDLE, windows.Handle(os.Stderr.Fd()))
	os.Stdout = os.Stderr
	return out, nil
}
