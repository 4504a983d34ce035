package llama

import (
	"testing"

	"github.com/minisgg/studio-worker/internal/ccallback"
)

// Every function handed to llama.cpp as a callback must be valid on each
// platform we ship, not only the one the test runs on: a log callback
// without a result passed every Linux test and panicked on Windows
// ("compileCallback: expected function with one uintptr-sized result").
func TestCallbacksValidOnEveryPlatform(t *testing.T) {
	for _, goos := range ccallback.Platforms {
		if err := ccallback.Check(logCallback, goos); err != nil {
			t.Errorf("log callback on %s: %v", goos, err)
		}
	}
}
