package studio

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/minisgg/studio-worker/engine"
)

// The updater's hold on the gate (§6.1, §6.2): it waits for the running
// job, offers meanwhile are rejected busy, local jobs are turned away, and
// the autoUpdate capability follows the setting.
func TestHoldGateWaitsForTheJobAndTurnsOffersAway(t *testing.T) {
	h := newHarness(t)
	s := newFakeSender()
	release := make(chan struct{})
	h.runBlocked(t, s, release, true)

	got := make(chan func(), 1)
	go func() {
		rel, err := h.w.HoldGate(context.Background(), "installing 0.3.0")
		if err != nil {
			t.Error(err)
		}
		got <- rel
	}()
	// While the job runs the updater waits.
	short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := h.w.HoldGate(short, "a second try"); !errors.Is(err, ErrGateWait) {
		t.Fatalf("HoldGate during a job = %v, want ErrGateWait", err)
	}
	select {
	case <-got:
		t.Fatal("HoldGate took the gate while a job held it")
	default:
	}
	close(release)
	if _, ok := s.next(t).(CompleteJSON); !ok {
		t.Fatal("want the job's completeJson")
	}
	var rel func()
	select {
	case rel = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("HoldGate never took the gate after the job ended")
	}
	if h.w.Holder() != "installing 0.3.0" {
		t.Errorf("Holder() = %q", h.w.Holder())
	}
	if snap := h.w.Snapshot(); snap.State != StateIdle || snap.IdleReason != "installing 0.3.0; no jobs until it is done" {
		t.Errorf("while updating the snapshot says %s: %q", snap.State, snap.IdleReason)
	}
	h.w.HandleOffer(s, llmClaim("j2", 1, "hi"))
	wantReject(t, s.next(t), "j2", ReasonUpdating, RejectBusy)
	_, err := h.w.RunLocal(context.Background(), 0, engine.Job{Task: engine.Task{Kind: engine.KindLLM, LLM: &engine.LLMParams{}}}, nil)
	var busy *BusyError
	if !errors.As(err, &busy) || busy.Job != "installing 0.3.0" {
		t.Fatalf("local job while updating: %v", err)
	}
	rel()
	rel() // twice is harmless
	if h.w.Holder() != "" {
		t.Errorf("Holder() after release = %q", h.w.Holder())
	}
	h.w.HandleOffer(s, llmClaim("j3", 1, "hi"))
	if a, ok := s.next(t).(Accept); !ok || a.JobID != "j3" {
		t.Fatalf("after release: %#v", a)
	}
	s.next(t)
}

func TestCapabilitiesAutoUpdateFollowsTheSetting(t *testing.T) {
	h := newHarness(t)
	if !h.w.Capabilities().AutoUpdate {
		t.Error("updates are on by default: autoUpdate must be true")
	}
	h.mu.Lock()
	h.set.AutoUpdate = false
	h.mu.Unlock()
	if h.w.Capabilities().AutoUpdate {
		t.Error("updates turned off: autoUpdate must be false")
	}
}
