package studio

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/minisgg/studio-worker/engine"
)

func localChat(id string) engine.Job {
	return engine.Job{ID: id, Model: "tiny.gguf",
		Task:   engine.Task{Kind: engine.KindLLM, LLM: &engine.LLMParams{Messages: []engine.ChatMessage{{Role: "user", Content: "hi"}}}},
		Source: engine.ModelSource{Engine: engine.EngineLlamaCpp}}
}

// A local request never pre-empts a studio job: with no wait it is turned
// away busy; with one it runs once the studio job gave the gate back. A
// studio offer that comes while a local job holds the gate is turned down
// as busy. Local jobs show in the history, marked, and count toward none
// of the studio's counters.
func TestLocalJobsShareTheGateAndNeverPreempt(t *testing.T) {
	h := newHarness(t)
	s := newFakeSender()
	release := make(chan struct{})
	h.runBlocked(t, s, release, true)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := h.w.RunLocal(ctx, 0, localChat("local-a"), nil)
	var busy *BusyError
	if !errors.As(err, &busy) || busy.Job != "job j1" || busy.RetryAfter <= 0 {
		t.Fatalf("no wait while busy: %v", err)
	}

	// This one waits; the studio job is not touched.
	localRelease := make(chan struct{})
	got := make(chan error, 1)
	go func() {
		_, err := h.w.RunLocal(ctx, time.Hour, localChat("local-b"), nil)
		got <- err
	}()
	select {
	case j := <-h.runner.started:
		t.Fatalf("job %s started while the studio job held the gate", j.ID)
	case err := <-got:
		t.Fatalf("the waiting local job ended early: %v", err)
	default:
	}
	h.runner.mu.Lock()
	h.runner.runFn = func(ctx context.Context, job engine.Job, p engine.ProgressFunc) (engine.Result, error) {
		<-localRelease
		return engine.Result{JSON: json.RawMessage(`{"ok":true}`)}, nil
	}
	h.runner.mu.Unlock()
	close(release)
	if c, ok := s.next(t).(CompleteJSON); !ok || c.JobID != "j1" {
		t.Fatalf("the studio job's result: %#v", c)
	}
	if j := <-h.runner.started; j.ID != "local-b" {
		t.Fatalf("started %s", j.ID)
	}
	// The local job holds the gate: a studio offer is turned down busy.
	h.w.HandleOffer(s, llmClaim("j2", 1, "hi"))
	if r, ok := s.next(t).(Reject); !ok || r.JobID != "j2" || r.Code != RejectBusy {
		t.Fatalf("offer during a local job: %#v", r)
	}
	if cur := h.w.Snapshot().Current; cur == nil || cur.ID != "local-b" || !cur.Local {
		t.Fatalf("current %+v", cur)
	}
	if id := h.w.currentJobID(); id != "" {
		t.Errorf("the heartbeat names local job %q", id)
	}
	close(localRelease)
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	// The studio job gave the gate back before its result went out, so the
	// local job can end before j1's finish is recorded: wait for both, in
	// either order.
	snaps, unsub := h.w.Subscribe()
	defer unsub()
	snap := waitSnap(t, snaps, func(s Snapshot) bool { return len(s.Recent) == 2 })
	local := map[string]bool{}
	for _, r := range snap.Recent {
		local[r.ID] = r.Local
	}
	if l, ok := local["local-b"]; !ok || !l {
		t.Fatalf("recent %+v: local-b missing or not marked local", snap.Recent)
	}
	if l, ok := local["j1"]; !ok || l {
		t.Fatalf("recent %+v: j1 missing or marked local", snap.Recent)
	}
	if c := snap.Counters; c.Done != 1 || c.Failed != 0 || c.Accepted != 1 || c.Offered != 2 || c.Rejected != 1 {
		t.Errorf("counters %+v: only the studio's jobs count", c)
	}
}
