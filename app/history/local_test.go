package history

import (
	"testing"

	"github.com/minisgg/studio-worker/studio"
)

// A job the local API ran comes out of the worker's snapshot marked local,
// so it stays out of the studio totals.
func TestFromJobInfoKeepsLocal(t *testing.T) {
	if !FromJobInfo(studio.JobInfo{ID: "local-1", Local: true, Outcome: studio.OutcomeDone}, nil).Local {
		t.Error("a local job lost its mark")
	}
	if FromJobInfo(studio.JobInfo{ID: "j1", Outcome: studio.OutcomeDone}, nil).Local {
		t.Error("a studio job was marked local")
	}
}
