//go:build windows

package presence

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestLastInputAnswers calls the real GetLastInputInfo and GetTickCount
// (run on Windows or under Wine): the probe answers with an idle time in
// range, and a cancelled context stops it.
func TestLastInputAnswers(t *testing.T) {
	p := LastInput{}
	d, err := p.IdleTime(context.Background())
	if err != nil {
		t.Fatalf("GetLastInputInfo: %v", err)
	}
	if d < 0 || d > (1<<32)*time.Millisecond {
		t.Fatalf("idle time %v out of range", d)
	}
	t.Logf("idle %v (%s)", d, p.Source())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := p.IdleTime(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("with a cancelled context: %v", err)
	}
}
