package studio

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/settings"
)

// journalHarness is a worker with a journal in dir.
func journalHarness(t *testing.T, dir string) (*harness, *Journal) {
	t.Helper()
	j, err := OpenJournal(dir)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{runner: newFakeRunner(), clock: NewFakeClock(workerT0)}
	h.set = settings.Default()
	h.set.VRAMBudgetGB = 8
	h.w = NewWorker(WorkerConfig{Settings: h.settings, Runner: h.runner, Creds: settings.NewFileCredentialStore(t.TempDir()),
		Clock: h.clock, MachineName: "m", Username: "u", Journal: j})
	t.Cleanup(func() { h.w.lifeCancel(); h.w.jobs.Wait() })
	return h, j
}

// TestJournalReportsAJobTheLastRunLeft: a job accepted by a run that then
// died is failed as retryable on the next run's first welcome, shows in
// the history, and leaves the journal when the studio acknowledges it.
func TestJournalReportsAJobTheLastRunLeft(t *testing.T) {
	dir := t.TempDir()
	h1, _ := journalHarness(t, dir)
	s := newFakeSender()
	h1.runBlocked(t, s, make(chan struct{}), true) // accepted, running: then "killed"
	if b, err := os.ReadFile(filepath.Join(dir, JournalFile)); err != nil || !json.Valid(b) {
		t.Fatalf("the journal was not written before the job ran: %v", err)
	}

	h2, j2 := journalHarness(t, dir) // the next start
	s2 := newFakeSender()
	h2.w.onWelcome(s2)
	f, ok := s2.next(t).(Fail)
	if !ok || f.JobID != "j1" || f.Error != "the worker stopped while running this job" || !f.Retryable {
		t.Fatalf("want the journalled job failed as retryable, got %#v", f)
	}
	snap := h2.w.Snapshot()
	if len(snap.Recent) != 1 || snap.Recent[0].ID != "j1" || snap.Recent[0].Outcome != OutcomeFailed || snap.Recent[0].Error != msgStoppedWhileRunning {
		t.Errorf("history %+v", snap.Recent)
	}
	if !j2.Has("j1") {
		t.Fatal("the entry must stay until the studio acknowledges the fail")
	}
	h2.w.onAck(&FailAck{JobID: "j1"})
	if j2.Has("j1") {
		t.Error("the acknowledged job is still journalled")
	}
	h2.w.onWelcome(s2) // nothing left to say
	s2.none(t)
}

// TestJournalKeepsAResultTheStudioCouldNotTake: a JSON result finished
// while the studio is unreachable is kept and sent on the next welcome.
func TestJournalKeepsAResultTheStudioCouldNotTake(t *testing.T) {
	h, j := journalHarness(t, t.TempDir())
	s := newFakeSender()
	release := make(chan struct{})
	h.runBlocked(t, s, release, true)
	s.mu.Lock()
	s.failOn = func(f any) error {
		if _, ok := f.(CompleteJSON); ok {
			return errors.New("the studio is unreachable")
		}
		return nil
	}
	s.mu.Unlock()
	snaps, stop := h.w.Subscribe()
	defer stop()
	close(release)
	snap := waitSnap(t, snaps, func(s Snapshot) bool { return len(s.Recent) == 1 })
	if snap.Recent[0].Outcome != OutcomeLost || snap.Recent[0].Error != msgLost+"; the result is kept and sent when the studio is reachable again" {
		t.Fatalf("history %+v", snap.Recent[0])
	}
	es := j.Entries()
	if len(es) != 1 || !es[0].Kept || string(es[0].JSON) != `{"ok":true}` {
		t.Fatalf("journal %+v", es)
	}

	s2 := newFakeSender() // the session is back
	h.w.onWelcome(s2)
	c, ok := s2.next(t).(CompleteJSON)
	if !ok || c.JobID != "j1" || string(c.Result) != `{"ok":true}` || c.Prompt != "hi" {
		t.Fatalf("want the kept result, got %#v", c)
	}
	h.w.onAck(&CompleteAck{JobID: "j1"})
	if j.Has("j1") {
		t.Error("delivered and acknowledged, yet still journalled")
	}
}

// TestJournalForgetsWhatWasReportedOnce: an entry reported after one
// restart and never acknowledged is dropped at the next, not sent forever.
func TestJournalForgetsWhatWasReportedOnce(t *testing.T) {
	dir := t.TempDir()
	j, _ := OpenJournal(dir)
	j.Begin(JournalEntry{JobID: "old", Kind: engine.KindLLM, Reported: true})
	h, j2 := journalHarness(t, dir)
	s := newFakeSender()
	h.w.onWelcome(s)
	s.none(t)
	if j2.Has("old") {
		t.Error("still journalled")
	}
}

func TestJournalSetsADamagedFileAside(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, JournalFile), []byte("{not json"), 0o600)
	j, err := OpenJournal(dir)
	if err == nil || j == nil || len(j.Entries()) != 0 {
		t.Fatalf("want an empty journal and an error, got %v, %v", j, err)
	}
	if _, err := os.Stat(filepath.Join(dir, JournalFile+".corrupt")); err != nil {
		t.Errorf("not set aside: %v", err)
	}
}
