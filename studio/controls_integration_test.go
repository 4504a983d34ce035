package studio_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minisgg/studio-worker/controls"
	"github.com/minisgg/studio-worker/studio"
	"github.com/minisgg/studio-worker/studio/devstudio"
)

// switchIdle is an idle-time probe the test turns: away (an hour idle) or
// at the keyboard (a second).
type switchIdle struct{ away atomic.Bool }

func (p *switchIdle) IdleTime(context.Context) (time.Duration, error) {
	if p.away.Load() {
		return time.Hour, nil
	}
	return time.Second, nil
}
func (p *switchIdle) Source() string { return "test switch" }

// The heartbeat's onlyWhenIdle, userPresence and autoEnabled as the dev
// studio reads them: no offer while the person is at the computer, the
// queued job within a heartbeat or two of them leaving, and the setting
// turned off without a restart.
func TestIntegrationOnlyWhenIdleHeartbeat(t *testing.T) {
	ls := startStudio(t, t.TempDir(), "", true)
	probe := &switchIdle{}
	tw, id := connectedWorker(t, ls, newStubRunner(), func(c *studio.WorkerConfig) {
		c.Probes = &studio.Probes{Idle: probe, Every: 20 * time.Millisecond}
	})
	tw.mu.Lock()
	tw.set.OnlyWhenIdle = true
	tw.mu.Unlock()
	tw.w.ApplySettings()
	caps := func(pred func(studio.Capabilities) bool) {
		t.Helper()
		if _, err := ls.srv.WaitWorker(waitCtx(t), func(w devstudio.WorkerStatus) bool {
			return w.ID == id && w.Capabilities != nil && pred(*w.Capabilities)
		}); err != nil {
			for _, w := range ls.srv.Workers() {
				if w.Capabilities != nil {
					t.Logf("worker %s: %+v", w.ID, *w.Capabilities)
				}
			}
			t.Logf("snapshot: %+v", tw.w.Snapshot().Controls)
			t.Fatal(err)
		}
	}
	caps(func(c studio.Capabilities) bool {
		return c.OnlyWhenIdle && c.UserPresence == "active" && !c.AutoEnabled
	})
	job := enqueue(t, ls, llmSpec("wait until I am away"))
	// One more heartbeat saying "active": the job stays queued.
	w0, _ := ls.srv.WaitWorker(waitCtx(t), func(w devstudio.WorkerStatus) bool { return w.ID == id })
	if _, err := ls.srv.WaitWorker(waitCtx(t), func(w devstudio.WorkerStatus) bool { return w.ID == id && w.Heartbeats > w0.Heartbeats }); err != nil {
		t.Fatal(err)
	}
	if st, _ := ls.srv.Job(job); st.State != devstudio.JobQueued {
		t.Fatalf("offered while the person is here: %+v", st)
	}
	probe.away.Store(true)
	caps(func(c studio.Capabilities) bool { return c.UserPresence == "idle" && c.AutoEnabled })
	if st := waitJob(t, ls, job); st.State != devstudio.JobDone {
		t.Fatalf("after leaving: %+v", st)
	}
	probe.away.Store(false)
	caps(func(c studio.Capabilities) bool { return c.UserPresence == "active" && !c.AutoEnabled })
	tw.mu.Lock()
	tw.set.OnlyWhenIdle = false
	tw.mu.Unlock()
	tw.w.ApplySettings()
	caps(func(c studio.Capabilities) bool {
		return !c.OnlyWhenIdle && c.UserPresence == "active" && c.AutoEnabled
	})
	if snap := tw.w.Snapshot(); !snap.Controls.MayWork || snap.Controls.Presence != controls.PresenceActive {
		t.Fatalf("%+v", snap.Controls)
	}
}
