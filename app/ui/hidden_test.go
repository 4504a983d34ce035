package ui

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"fyne.io/fyne/v2"

	"github.com/minisgg/studio-worker/app/history"
	"github.com/minisgg/studio-worker/logging"
	"github.com/minisgg/studio-worker/settings"
	"github.com/minisgg/studio-worker/studio"
)

// Closed to the tray, the window draws nothing (issue 11: light when
// hidden), yet notifications still go out and the Status page's "since"
// follows what happened meanwhile; opened again it shows the worker's
// current state, log and history at once.
func TestHiddenWindowDrawsNothingAndOpensOnCurrentState(t *testing.T) {
	hist := &fakeHistory{}
	h := newHarnessWith(t, idleSnap(), hist)
	st := h.main.Status
	var sent []string
	h.main.notifier = NewNotifier(func(n *fyne.Notification) { sent = append(sent, n.Title) },
		func() settings.Settings { return settings.Settings{NotifyJobFailed: true} })
	h.main.Render(idleSnap()) // the notifier's first look
	at := time.Date(2026, 12, 1, 14, 0, 0, 0, time.Local)
	st.now = func() time.Time { return at }
	start := at.Add(-time.Minute)
	h.main.Render(workingSnap(start))
	if !st.spinner.Running() && !st.bar.Visible() {
		t.Fatal("the running job shows neither bar nor spinner")
	}
	reads := hist.summaries

	h.main.SetHidden(true)
	if !h.main.Hidden() {
		t.Fatal("Hidden() is false after SetHidden(true)")
	}
	if st.spinner.Running() {
		t.Error("the job's spinner still animates in a hidden window")
	}
	// While hidden: the worker pauses at 14:05 and a job fails; nothing is
	// drawn, the failure is notified.
	at = at.Add(5 * time.Minute)
	paused := idleSnap()
	paused.State, paused.Paused, paused.IdleReason = studio.StatePaused, true, ""
	paused.Recent = []studio.JobInfo{{ID: "f1", Kind: "llm", Model: "tiny", Outcome: studio.OutcomeFailed, Error: "bad file"}}
	h.main.Render(paused)
	h.ring.Write(logging.Entry{Time: at, Level: slog.LevelInfo, Message: "written while hidden"})
	if got := st.headline.Text; got != "Working" {
		t.Errorf("a hidden window redrew its headline: %q", got)
	}
	if len(sent) != 1 {
		t.Errorf("notifications while hidden: %q, want the failed job's", sent)
	}

	// Opened at 14:09 after one more change the window never drew: it
	// shows the backend's snapshot now, paused since 14:05.
	at = at.Add(4 * time.Minute)
	h.backend.snap = paused
	h.main.SetHidden(false)
	if got := st.headline.Text; got != Headline(paused) {
		t.Errorf("headline on open %q, want %q", got, Headline(paused))
	}
	if want := "Paused by you since " + at.Add(-4*time.Minute).Format("15:04"); !strings.HasPrefix(st.reason.Text, want) {
		t.Errorf("reason on open %q, want it to start %q", st.reason.Text, want)
	}
	if st.jobCard.Visible() {
		t.Error("the finished job's card still shows on open")
	}
	if hist.summaries == reads {
		t.Error("the history was not read again on open")
	}
	if shown := strings.Join(h.main.Logs.Shown(), "\n"); !strings.Contains(shown, "written while hidden") {
		t.Errorf("the log on open lacks the line written while hidden: %q", shown)
	}
}

// fakeHistory is an empty job history that counts its reads.
type fakeHistory struct{ summaries int }

func (f *fakeHistory) Summary(time.Time) (history.Summary, error) {
	f.summaries++
	return history.Summary{}, nil
}
func (f *fakeHistory) Jobs(history.Filter) ([]history.Job, error) { return nil, nil }
func (f *fakeHistory) JobLog(string) ([]history.LogLine, error)   { return nil, nil }
func (f *fakeHistory) Subscribe() (<-chan struct{}, func())       { return make(chan struct{}), func() {} }
