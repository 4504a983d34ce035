package ui

import (
	"strings"
	"testing"
	"time"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/test"
	"fyne.io/fyne/v2/widget"

	"github.com/minisgg/studio-worker/app/history"
	"github.com/minisgg/studio-worker/settings"
	"github.com/minisgg/studio-worker/studio"
)

// realHistory is a job history in a temporary folder, the one the app uses.
func realHistory(t *testing.T) (*history.DB, *history.Recorder) {
	t.Helper()
	db, err := history.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, history.NewRecorder(history.RecorderConfig{DB: db})
}

func TestStatusPageShowsTotalsAndChartFromTheHistory(t *testing.T) {
	db, rec := realHistory(t)
	now := time.Now()
	day := func(n int) time.Time { return now.AddDate(0, 0, -n) }
	for _, j := range []history.Job{
		{ID: "a", Kind: "llm", Offered: now.Add(-90 * time.Second), Finished: now, Outcome: history.OutcomeDone, PromptTokens: 1000, CompletionTokens: 234},
		{ID: "b", Kind: "image", Offered: day(1).Add(-30 * time.Second), Finished: day(1), Outcome: history.OutcomeDone, Images: 4},
		{ID: "c", Kind: "llm", Offered: day(1).Add(-time.Second), Finished: day(1), Outcome: history.OutcomeFailed, Reason: "boom"},
		{ID: "d", Kind: "llm", Offered: day(20).Add(-time.Minute), Finished: day(20), Outcome: history.OutcomeDone, CompletionTokens: 10},
		{ID: "local", Kind: "llm", Local: true, Offered: now.Add(-time.Second), Finished: now, Outcome: history.OutcomeDone, CompletionTokens: 99999},
	} {
		if err := db.Record(j); err != nil {
			t.Fatal(err)
		}
	}
	h := newHarnessWith(t, idleSnap(), rec)
	c := h.main.Status.Contribution
	if !c.Content().Visible() {
		t.Fatal("the totals are hidden with a history")
	}
	want := [4][3]string{
		{"1", "2 (+1 failed)", "3 (+1 failed)"},
		{"1,234", "1,234", "1,244"},
		{"0", "4", "4"},
		{"1 min 30 s", "2 min 01 s", "3 min 01 s"},
	}
	for r := range want {
		for col := range want[r] {
			if got := c.Cell(r, col); got != want[r][col] {
				t.Errorf("cell %d,%d = %q, want %q", r, col, got, want[r][col])
			}
		}
	}
	v := c.Chart().Values()
	if len(v) != history.ChartDays || v[len(v)-1] != 1 || v[len(v)-2] != 2 || v[len(v)-21] != 1 {
		t.Errorf("chart = %v", v)
	}
	// A job recorded while the window is open shows up when the history
	// says it changed.
	changed, cancel := rec.Subscribe()
	defer cancel()
	rec.RecordLocal(history.Job{ID: "l2", Finished: now}) // not counted
	_ = changed
	if err := db.Record(history.Job{ID: "e", Kind: "llm", Offered: now, Finished: now, Outcome: history.OutcomeDone}); err != nil {
		t.Fatal(err)
	}
	h.main.ReloadHistory()
	if got := c.Cell(0, 0); got != "2" {
		t.Errorf("today's jobs after a new one = %q", got)
	}
	markup := test.RenderObjectToMarkup(h.main.Status.Content())
	if !strings.Contains(markup, "What this computer has given") || !strings.Contains(markup, "Jobs per day, last 30 days") {
		t.Error("the Status page lacks the totals card")
	}
}

func TestStatusPageHidesTotalsWithoutAHistory(t *testing.T) {
	h := newHarness(t, idleSnap())
	if h.main.Status.Contribution.Content().Visible() {
		t.Fatal("totals shown with no history to count from")
	}
}

func TestJobsPageIsTheHistory(t *testing.T) {
	db, rec := realHistory(t)
	now := time.Now()
	yesterday := now.AddDate(0, 0, -1)
	old := time.Date(2026, 3, 2, 10, 0, 0, 0, time.Local)
	for _, j := range []history.Job{
		{ID: "old", Kind: "llm", Model: "tiny", Offered: old.Add(-time.Second), Finished: old, Outcome: history.OutcomeDone},
		{ID: "y1", Kind: "llm", Model: "tiny", Offered: yesterday.Add(-3 * time.Second), Accepted: yesterday.Add(-2 * time.Second),
			Started: yesterday.Add(-time.Second), Finished: yesterday, Outcome: history.OutcomeFailed, Reason: "the model file failed its checksum",
			Prompt: "write a haiku", Log: []history.LogLine{{Time: yesterday, Level: "WARN", Message: "checksum mismatch"}}},
		{ID: "t1", Kind: "image", Model: "sd-tiny", Offered: now.Add(-9 * time.Second), Finished: now, Outcome: history.OutcomeDone,
			Images: 3, Width: 64, Height: 64, Thumbnail: thumbPNG(t)},
	} {
		if err := db.Record(j); err != nil {
			t.Fatal(err)
		}
	}
	h := newHarnessWith(t, idleSnap(), rec)
	h.main.Show(PageJobs)
	p := h.main.Jobs
	got := strings.Join(p.Listed(), " | ")
	if want := "# Today | t1 | # Yesterday | y1 | # Monday 2 March 2026 | old"; got != want {
		t.Fatalf("listed %q, want %q", got, want)
	}
	markup := test.RenderObjectToMarkup(p.Content())
	for _, want := range []string{"t1-thumb.png", "3.0 s per image", "the model file failed its checksum"} {
		if !strings.Contains(markup, want) {
			t.Errorf("jobs page lacks %q", want)
		}
	}

	// The detail pane: prompt, timings, the reason, the log, Copy.
	var row *jobRow
	for _, o := range p.rows.Objects {
		if r, ok := o.(*jobRow); ok && r.job.ID == "y1" {
			row = r
		}
	}
	test.Tap(row)
	detail := p.DetailText()
	for _, want := range []string{"Failed", "Prompt: write a haiku", "Offered ", "Accepted ", "Generating from ", "Why it failed: the model file failed its checksum", "WARN  checksum mismatch"} {
		if !strings.Contains(detail, want) {
			t.Errorf("detail lacks %q:\n%s", want, detail)
		}
	}
	p.CopyLog()
	if clip := fyne.CurrentApp().Clipboard().Content(); !strings.Contains(clip, "checksum mismatch") {
		t.Errorf("clipboard = %q", clip)
	}

	// The outcome filter.
	p.Filter.SetSelected(FilterFailed)
	if got := strings.Join(p.Listed(), " | "); got != "# Yesterday | y1" {
		t.Errorf("failed only: %q", got)
	}
	p.Filter.SetSelected(FilterDone)
	if got := strings.Join(p.Listed(), " | "); got != "# Today | t1 | # Monday 2 March 2026 | old" {
		t.Errorf("done only: %q", got)
	}
	if p.DetailText() != "" {
		t.Error("the detail pane still shows a job the filter hides")
	}
}

func TestJobsPageWithoutAHistoryListsRecentJobs(t *testing.T) {
	h := newHarness(t, idleSnap())
	s := idleSnap()
	now := time.Now()
	s.Recent = []studio.JobInfo{{ID: "j1", Kind: "llm", Started: now.Add(-time.Second), Finished: now, Outcome: "done"}}
	h.main.Render(s)
	if got := strings.Join(h.main.Jobs.Listed(), " | "); got != "# Today | j1" {
		t.Fatalf("listed %q", got)
	}
	h.main.Jobs.Select("j1")
	if d := h.main.Jobs.DetailText(); !strings.Contains(d, "not available") {
		t.Errorf("detail = %q", d)
	}
}

func TestETAFromTheJobsOwnPace(t *testing.T) {
	for _, c := range []struct {
		done, total, done0 int64
		spent              time.Duration
		want               time.Duration
		ok                 bool
	}{
		{done: 60, total: 160, done0: 10, spent: 5 * time.Second, want: 10 * time.Second, ok: true},
		{done: 10, total: 160, done0: 10, spent: 5 * time.Second},        // no progress yet
		{done: 60, total: 0, done0: 10, spent: 5 * time.Second},          // unknown total
		{done: 60, total: 160, done0: 10, spent: 500 * time.Millisecond}, // too soon to tell
		{done: 160, total: 160, done0: 10, spent: 5 * time.Second},       // finished
	} {
		got, ok := eta(c.done, c.total, c.done0, c.spent)
		if ok != c.ok || got != c.want {
			t.Errorf("eta(%+v) = %s %t", c, got, ok)
		}
	}

	// On the page: the first sight of a phase sets the pace's start.
	h := newHarness(t, idleSnap())
	now := time.Now()
	h.main.Status.now = func() time.Time { return now }
	s := workingSnap(now.Add(-20 * time.Second))
	s.Current.Phase, s.Current.Done, s.Current.Total = "generate", 10, 160
	h.main.Render(s)
	now = now.Add(5 * time.Second)
	s2 := workingSnap(now)
	*s2.Current = *s.Current
	s2.Current.Done = 60
	h.main.Render(s2)
	if got := h.main.Status.elapsed.Text; got != "Elapsed 25 s · about 10 s left in this step" {
		t.Errorf("elapsed line %q", got)
	}
}

func TestEveryStateThatIsNotWorkingSaysWhy(t *testing.T) {
	now := time.Date(2026, 12, 1, 14, 30, 0, 0, time.Local)
	since := time.Date(2026, 12, 1, 14, 2, 0, 0, time.Local)
	idle := idleSnap()
	budget := idleSnap()
	budget.IdleReason = "last offer needed 40 GB, your budget is 12 GB"
	noEngine := idleSnap()
	noEngine.Kinds = nil
	noEngine.IdleReason = "no engine is ready, so the studio has nothing to offer"
	paused := idleSnap()
	paused.State, paused.Paused = studio.StatePaused, true
	stopping := workingSnap(now)
	stopping.Paused = true
	cases := []struct {
		name     string
		s        studio.Snapshot
		headline string
		want     string
	}{
		{"registering offline", studio.Snapshot{State: studio.StateRegistering, Registration: studio.Registration{State: "none",
			Problem: "the studio could not be reached: dial tcp: connection refused", NextTry: now.Add(25 * time.Second)}},
			"Registering", "Cannot reach the studio to register: the studio could not be reached: dial tcp: connection refused. Next try in 25 s."},
		{"waiting for approval", studio.Snapshot{State: studio.StateWaitingApproval, Registration: studio.Registration{State: "pending"}},
			"Waiting for approval", "Waiting since 14:02 for the studio's operator to approve this computer."},
		{"rejected", studio.Snapshot{State: studio.StateRejected, Registration: studio.Registration{State: "rejected", Reason: "unknown donor"}},
			"Not approved", "The studio turned this computer down: unknown donor. Press Try again below to send a new request."},
		{"unreachable", studio.Snapshot{State: studio.StateConnecting, Session: studio.SessionRetrying, IdleReason: "studio unreachable, retrying in 8 s"},
			"Connecting", "Studio unreachable, retrying in 8 s."},
		{"paused", paused, "Paused", "Paused by you since 14:02. No new jobs are taken until you press Resume."},
		{"pause now mid-job", stopping, "Pausing", "Stopping the current job because you pressed Pause now; it goes back to the studio for another computer. No new jobs are taken until you press Resume."},
		{"nothing offered", idle, "Idle", "Nothing offered since 14:02: no jobs for your models yet."},
		{"over budget", budget, "Idle", "Nothing offered since 14:02: last offer needed 40 GB, your budget is 12 GB. Raise the graphics memory budget on the Settings page if this computer has the memory."},
		{"no engine", noEngine, "Idle", "No engine is ready, so the studio has nothing to offer this computer. The notice above says what is missing; the Logs page has the details."},
	}
	for _, c := range cases {
		if got := Headline(c.s); got != c.headline {
			t.Errorf("%s: headline %q, want %q", c.name, got, c.headline)
		}
		if got := reasonLine(c.s, since, now); got != c.want {
			t.Errorf("%s:\n got %q\nwant %q", c.name, got, c.want)
		}
	}
	// Pause now mid-job: the tray no longer says working.
	if look, tip := TrayLook(stopping); look != "paused" || !strings.HasPrefix(tip, "Studio Worker: pausing") {
		t.Errorf("tray while stopping: %s %q", look, tip)
	}
}

func TestRegistrationTroubleReachesTheLoginPanel(t *testing.T) {
	s := studio.Snapshot{State: studio.StateRegistering, StudioURL: "http://127.0.0.1:1/",
		Registration: studio.Registration{State: "none", Problem: "the studio could not be reached: connection refused", NextTry: time.Date(2026, 12, 1, 14, 5, 30, 0, time.Local)}}
	h := newHarness(t, s)
	msg := h.main.Status.login.message.Text
	if !strings.Contains(msg, "connection refused") || !strings.Contains(msg, "Next try at 14:05:30") || strings.Contains(msg, "Sending a request") {
		t.Errorf("login message %q", msg)
	}
}

func TestPauseNowInTheWindowAndTheTray(t *testing.T) {
	h := newHarness(t, workingSnap(time.Now()))
	test.Tap(h.button(ActionPauseNow))
	test.Tap(h.button(ActionFinishJob))
	if got := h.backend.Calls(); strings.Join(got, ",") != "PauseNow,PauseAfterCurrent" {
		t.Fatalf("calls %v", got)
	}
}

func TestNotificationsOnlyWhenSwitchedOn(t *testing.T) {
	var sent []string
	cfg := settings.Settings{}
	n := NewNotifier(func(x *fyne.Notification) { sent = append(sent, x.Title+": "+x.Content) }, func() settings.Settings { return cfg })
	now := time.Date(2026, 12, 1, 14, 0, 0, 0, time.Local)
	n.now = func() time.Time { return now }

	old := studio.JobInfo{ID: "old", Outcome: studio.OutcomeFailed, Error: "before start"}
	s := idleSnap()
	s.Recent = []studio.JobInfo{old}
	n.Observe(s) // jobs finished before the first look never notify
	failed := studio.JobInfo{ID: "f1", Kind: "llm", Model: "tiny", Outcome: studio.OutcomeFailed, Error: "the model file failed its checksum"}
	crashed := studio.JobInfo{ID: "c1", Kind: "llm", Model: "tiny", Outcome: studio.OutcomeFailed, EngineCrashed: true, Error: "the text engine crashed while generating with model tiny (signal: killed)"}
	rejected := studio.Snapshot{State: studio.StateRejected, Registration: studio.Registration{State: "rejected", Reason: "unknown donor"}}
	down := studio.Snapshot{State: studio.StateConnecting, Session: studio.SessionRetrying}
	run := func() {
		s := idleSnap()
		s.Recent = []studio.JobInfo{failed, old}
		n.Observe(s)
		s.Recent = []studio.JobInfo{crashed, failed, old}
		n.Observe(s)
		n.Observe(rejected)
		n.Observe(rejected) // once per event
		n.Observe(down)
		now = now.Add(UnreachableNotifyAfter + time.Second)
		n.Observe(down)
		now = now.Add(time.Minute)
		n.Observe(down)
		n.Observe(idleSnap())
	}
	run()
	if len(sent) != 0 {
		t.Fatalf("notifications sent with every switch off: %q", sent)
	}

	cfg = settings.Settings{NotifyJobFailed: true, NotifyStudioRefused: true, NotifyEngineCrashed: true, NotifyUnreachable: true}
	failed.ID, crashed.ID = "f2", "c2"
	run()
	want := []string{
		"A job failed: Text job, model tiny: the model file failed its checksum.",
		"An engine crashed: The text engine crashed while generating with model tiny (signal: killed). The job goes back to the studio; Studio Worker carries on.",
		"The studio turned this computer down: The studio said: unknown donor. Open Studio Worker to ask again.",
		"Cannot reach the studio: Studio Worker has not reached the studio since 14:11. It keeps trying; check this computer's network connection.",
	}
	if strings.Join(sent, "\n") != strings.Join(want, "\n") {
		t.Fatalf("sent:\n%s\nwant:\n%s", strings.Join(sent, "\n"), strings.Join(want, "\n"))
	}
}

func TestNotificationSwitchesAreSaved(t *testing.T) {
	h := newHarness(t, idleSnap())
	h.main.Show(PageSettings)
	p := h.main.Settings
	for _, c := range p.notify {
		if c.Checked {
			t.Fatalf("%q is on by default", c.Text)
		}
	}
	test.Tap(p.notify[0])
	test.Tap(p.notify[3])
	test.Tap(h.button("Save"))
	got := h.settings.cur
	if !got.NotifyJobFailed || got.NotifyStudioRefused || got.NotifyEngineCrashed || !got.NotifyUnreachable {
		t.Fatalf("saved %+v", got)
	}
}

func TestEveryInvalidSettingIsMarkedAtOnce(t *testing.T) {
	h := newHarness(t, idleSnap())
	h.main.Show(PageSettings)
	sp := h.main.Settings
	sp.url.SetText("not an address")
	sp.threads.SetText("abc")
	sp.dir.SetText("relative/models")
	sp.days.SetText("-5")
	test.Tap(sp.save)
	if len(h.settings.saved) != 0 {
		t.Fatal("saved with three invalid fields")
	}
	for field, want := range map[string]string{
		settings.FieldStudioURL: "https://", settings.FieldThreads: "whole number", settings.FieldModelsDir: "full path",
		settings.FieldHistoryDays: "between 0",
	} {
		if got := sp.FieldError(field); !strings.Contains(got, want) {
			t.Errorf("%s: %q, want it to mention %q", field, got, want)
		}
	}
	if sp.result.Text != "Not saved: fix the 4 fields marked above." {
		t.Errorf("result %q", sp.result.Text)
	}
	// Editing a field clears "Not saved".
	test.Type(sp.threads, "1")
	if sp.result.Text != "" {
		t.Errorf("result after an edit %q", sp.result.Text)
	}
	// Too many threads is flagged while typing, as Save would refuse it.
	sp.threads.SetText("9999")
	if err := sp.threads.Validate(); err == nil || !strings.Contains(err.Error(), "number of CPU cores") {
		t.Errorf("threads 9999: %v", err)
	}
}

func TestPauseForAnHour(t *testing.T) {
	h := newHarness(t, idleSnap())
	test.Tap(h.button(ActionSnooze))
	if got := h.backend.Calls(); strings.Join(got, ",") != "PauseFor 1h0m0s" {
		t.Fatalf("calls %v", got)
	}
	s := idleSnap()
	s.State, s.Paused = studio.StatePaused, true
	s.ResumeAt = time.Date(2026, 12, 1, 15, 2, 0, 0, time.Local)
	now := time.Date(2026, 12, 1, 14, 2, 0, 0, time.Local)
	if got := reasonLine(s, now, now); got != "Paused by you since 14:02 for an hour: jobs are taken again at 15:02, or when you press Resume." {
		t.Errorf("reason %q", got)
	}
	h.main.Render(s)
	if findButton(h.w.Canvas(), ActionSnooze) != nil {
		t.Error("Pause for 1 hour offered while paused")
	}
	tr := NewTray(&fakeTrayHost{}, h.backend, func() {}, func() {}, nil)
	tr.snooze.Action()
	if got := h.backend.Calls(); len(got) != 2 || got[1] != "PauseFor 1h0m0s" {
		t.Errorf("tray calls %v", got)
	}
}

func TestAClosedNoticeIsNotShownAgain(t *testing.T) {
	_, rec := realHistory(t)
	h := newHarness(t, idleSnap())
	h.main.deps.Dismissed = rec
	h.main.AddNotice("Text jobs work, but image jobs are off.")
	h.main.AddNotice("Another notice.")
	if h.main.Notices() != 2 {
		t.Fatalf("%d notices", h.main.Notices())
	}
	var closeBtn *widget.Button
	walkVisible(h.main.notices.Objects[0], func(o fyne.CanvasObject) bool {
		if b, ok := o.(*widget.Button); ok {
			closeBtn = b
			return false
		}
		return true
	})
	test.Tap(closeBtn)
	// The next start: the closed one stays away, the other comes back.
	h2 := newHarness(t, idleSnap())
	h2.main.deps.Dismissed = rec
	h2.main.AddNotice("Text jobs work, but image jobs are off.")
	h2.main.AddNotice("Another notice.")
	if h2.main.Notices() != 1 {
		t.Fatalf("%d notices after a restart, want 1", h2.main.Notices())
	}
}

func TestHistoryDaysIsSaved(t *testing.T) {
	h := newHarness(t, idleSnap())
	sp := h.main.Settings
	sp.days.SetText("30")
	sp.Save()
	if h.settings.cur.HistoryDays != 30 || !strings.HasPrefix(sp.result.Text, "Saved") {
		t.Fatalf("saved %d, result %q", h.settings.cur.HistoryDays, sp.result.Text)
	}
	sp.days.SetText("99999")
	sp.Save()
	if h.settings.cur.HistoryDays != 30 || !strings.Contains(sp.FieldError(settings.FieldHistoryDays), "3650") {
		t.Fatalf("99999 days: saved %d, error %q", h.settings.cur.HistoryDays, sp.FieldError(settings.FieldHistoryDays))
	}
}

func TestTodayRollsOverAtMidnight(t *testing.T) {
	db, rec := realHistory(t)
	now := time.Now()
	if err := db.Record(history.Job{ID: "a", Kind: "llm", Offered: now.Add(-time.Second), Finished: now, Outcome: history.OutcomeDone}); err != nil {
		t.Fatal(err)
	}
	h := newHarnessWith(t, idleSnap(), rec)
	c := h.main.Status.Contribution
	if c.Cell(0, 0) != "1" {
		t.Fatalf("today %q", c.Cell(0, 0))
	}
	h.main.now = func() time.Time { return now.AddDate(0, 0, 1) }
	h.main.Render(idleSnap()) // the next snapshot after midnight
	if c.Cell(0, 0) != "0" || c.Cell(0, 2) != "1" {
		t.Errorf("after midnight: today %q, all time %q", c.Cell(0, 0), c.Cell(0, 2))
	}
}
