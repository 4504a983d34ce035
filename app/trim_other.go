//go:build !linux

package app

// trimCode gives back the resident pages of the program's code; only on
// Linux (trim_linux.go). Windows trims a minimised program's working set
// itself, and macOS compresses and pages out idle memory on its own.
func trimCode() (int64, error) { return 0, nil }
