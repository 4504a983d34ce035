package ui

import (
	"testing"

	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/studio"
)

// A job fetching its engine's runtime pack says so, with the figures, not
// "Downloading the model" (issue #14).
func TestProgressLineRuntimePack(t *testing.T) {
	j := studio.JobInfo{Phase: engine.PhaseRuntime, Done: 23 << 20, Total: 80 << 20, Note: "downloading the image runtime (23 of 80 MB)"}
	if got, want := progressLine(j), "Downloading the engine's runtime: 23.0 MB of 80.0 MB (28%)"; got != want {
		t.Errorf("progressLine = %q, want %q", got, want)
	}
}
