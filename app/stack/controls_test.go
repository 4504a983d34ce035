package stack

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/minisgg/studio-worker/controls"
	"github.com/minisgg/studio-worker/studio"
)

type atKeyboard struct{}

func (atKeyboard) IdleTime(context.Context) (time.Duration, error) { return time.Second, nil }
func (atKeyboard) Source() string                                  { return "test" }

// A control saved on the Settings page holds the worker at once, without
// a restart, and lets go when it is turned off again.
func TestControlsApplyWhenSaved(t *testing.T) {
	opts := testOptions(t)
	opts.Probes = &studio.Probes{Idle: atKeyboard{}, Every: 10 * time.Millisecond}
	st, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Shutdown(5 * time.Second)
	if d := st.Worker.Snapshot().Controls; !d.MayWork {
		t.Fatalf("held before any control is on: %+v", d)
	}
	s := st.Settings.Current()
	s.OnlyWhenIdle = true
	if _, err := st.Settings.Save(s); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	until(ctx, t, st.Worker, func(s studio.Snapshot) bool {
		return s.Controls.Held(controls.ControlAway) && s.Controls.Presence == controls.PresenceActive
	}, nil)
	if caps := st.Worker.Capabilities(); caps.AutoEnabled || !caps.OnlyWhenIdle || caps.UserPresence != "active" {
		t.Fatalf("heartbeat %+v", caps)
	}
	s.OnlyWhenIdle = false
	if _, err := st.Settings.Save(s); err != nil {
		t.Fatal(err)
	}
	if d := st.Worker.Snapshot().Controls; !d.MayWork {
		t.Fatalf("still held after turning it off: %+v", d)
	}
}

func TestOwnProcessIsThisProgram(t *testing.T) {
	st := &Stack{}
	if !st.ownProcess(os.Getpid()) || st.ownProcess(os.Getpid()+100000) || st.ownProcess(0) {
		t.Fatal("own process")
	}
}
