//go:build !linux

package engine

import "os"

// startWriteback has no portable equivalent; the final fsync does the work.
func startWriteback(*os.File, int64, int64) {}
