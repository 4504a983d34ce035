package ui

import (
	"bytes"
	"context"
	"image"
	"image/color"
	"image/png"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/test"

	"github.com/minisgg/studio-worker/assets"
	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/engine/gguf"
	"github.com/minisgg/studio-worker/logging"
	"github.com/minisgg/studio-worker/settings"
	"github.com/minisgg/studio-worker/studio"
)

const gib = 1 << 30

func idleSnap() studio.Snapshot {
	return studio.Snapshot{
		State:        studio.StateIdle,
		Session:      studio.SessionConnected,
		Registration: studio.Registration{State: "approved", WorkerID: "wk_42"},
		IdleReason:   "no jobs for your models yet",
		Kinds:        []engine.TaskKind{engine.KindLLM},
		VRAM:         studio.VRAM{Known: true, TotalBytes: 8 * gib, FreeBytes: 7 * gib, BudgetGB: 6},
		StudioURL:    "http://127.0.0.1:8080/",
		Version:      "9.8.7",
	}
}

func workingSnap(started time.Time) studio.Snapshot {
	s := idleSnap()
	s.State = studio.StateWorking
	s.IdleReason = ""
	s.Current = &studio.JobInfo{
		ID: "job-1", Kind: engine.KindLLM, Model: "tiny-llama",
		Phase: engine.PhaseDownload, Done: 25 << 20, Total: 100 << 20,
		Started: started, Outcome: "running",
	}
	s.VRAM.InUseBytes = gib + gib/2
	return s
}

func TestStatusPageRendersSnapshot(t *testing.T) {
	h := newHarness(t, idleSnap())
	st := h.main.Status
	if got := st.headline.Text; got != "Idle" {
		t.Errorf("headline %q, want Idle", got)
	}
	if got, want := st.reason.Text, "Nothing offered since "+st.since.Format("15:04")+": no jobs for your models yet."; got != want {
		t.Errorf("idle reason %q, want %q", got, want)
	}
	if st.jobCard.Visible() {
		t.Error("no job is running, but the job card shows")
	}
	if !strings.Contains(st.connection.Text, "Connected to http://127.0.0.1:8080/ as worker wk_42") {
		t.Errorf("connection line %q", st.connection.Text)
	}
	if got := st.vram.Text; !strings.Contains(got, "budget 6 GB") || !strings.Contains(got, "8 GB total") {
		t.Errorf("vram line %q", got)
	}

	start := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	st.now = func() time.Time { return start.Add(75 * time.Second) }
	h.main.Render(workingSnap(start))
	if !st.jobCard.Visible() || st.jobTitle.Text != "Text job, model tiny-llama" {
		t.Errorf("job card visible=%v title %q", st.jobCard.Visible(), st.jobTitle.Text)
	}
	if st.bar.Max != float64(100<<20) || st.bar.Value != float64(25<<20) || !st.bar.Visible() {
		t.Errorf("progress %v/%v visible=%v", st.bar.Value, st.bar.Max, st.bar.Visible())
	}
	if got := st.phase.Text; got != "Downloading the model: 25.0 MB of 100.0 MB (25%)" {
		t.Errorf("phase line %q", got)
	}
	// A stalled download says so beside the figures (issue 10 item 4).
	stalled := workingSnap(start)
	stalled.Current.Note = "no data from the model server for 20 s"
	h.main.Render(stalled)
	if got := st.phase.Text; got != "Downloading the model: 25.0 MB of 100.0 MB (25%) — no data from the model server for 20 s" {
		t.Errorf("stalled phase line %q", got)
	}
	h.main.Render(workingSnap(start))
	if got := st.elapsed.Text; got != "Elapsed 1 min 15 s" {
		t.Errorf("elapsed %q", got)
	}
	if got := st.vram.Text; !strings.HasPrefix(got, "1.5 GB in use by Studio Worker") {
		t.Errorf("vram line %q", got)
	}

	// Generation with an unknown total switches to the endless bar.
	s := workingSnap(start)
	s.Current.Phase, s.Current.Done, s.Current.Total = engine.PhaseGenerate, 17, 0
	h.main.Render(s)
	if st.bar.Visible() || !st.spinner.Visible() {
		t.Error("unknown total should show the endless bar only")
	}
	if got := st.phase.Text; got != "Generating: 17 tokens so far" {
		t.Errorf("phase line %q", got)
	}
	h.main.Render(idleSnap())
	if st.spinner.Running() {
		t.Error("the endless bar keeps animating after the job ended")
	}
}

func TestStatusUnknownVRAMAndRetrying(t *testing.T) {
	s := idleSnap()
	s.VRAM = studio.VRAM{BudgetGB: 12}
	s.State = studio.StateConnecting
	s.Session = studio.SessionRetrying
	s.IdleReason = "studio unreachable, retrying in 8 s"
	h := newHarness(t, s)
	st := h.main.Status
	if !strings.Contains(st.vram.Text, "total unknown") {
		t.Errorf("vram line %q should say the total is unknown", st.vram.Text)
	}
	if st.reason.Text != "Studio unreachable, retrying in 8 s." {
		t.Errorf("reason %q", st.reason.Text)
	}
}

func TestStartPauseCallsWorker(t *testing.T) {
	h := newHarness(t, idleSnap())
	btn := h.main.Status.startStop
	if btn.Text != "Pause now" {
		t.Fatalf("running worker: button %q, want Pause now", btn.Text)
	}
	test.Tap(btn)
	paused := idleSnap()
	paused.Paused, paused.State, paused.IdleReason = true, studio.StatePaused, "paused"
	h.main.Render(paused)
	if btn.Text != "Resume" {
		t.Fatalf("paused worker: button %q, want Resume", btn.Text)
	}
	test.Tap(btn)
	if got := h.backend.Calls(); !slices.Equal(got, []string{"PauseNow", "Resume"}) {
		t.Errorf("calls %v, want [PauseNow Resume]", got)
	}
}

func TestFinishCurrentJobThenPause(t *testing.T) {
	h := newHarness(t, workingSnap(time.Now()))
	test.Tap(h.button("Finish current job, then pause"))
	if got := h.backend.Calls(); !slices.Equal(got, []string{"PauseAfterCurrent"}) {
		t.Fatalf("calls %v", got)
	}
	s := workingSnap(time.Now())
	s.PauseAfterJob = true
	h.main.Render(s)
	if findButton(h.w.Canvas(), "Finish current job, then pause") != nil {
		t.Error("the button stays after it was armed")
	}
	if !h.main.Status.afterNote.Visible() || h.main.Status.headline.Text != "Working, then pausing" {
		t.Errorf("armed state not shown: %q", h.main.Status.headline.Text)
	}
}

func TestFollowDrawsPublishedSnapshots(t *testing.T) {
	h := newHarness(t, idleSnap())
	drawn := make(chan studio.Snapshot, 8)
	h.main.rendered = func(s studio.Snapshot) { drawn <- s }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h.main.Follow(ctx)
	<-drawn // the snapshot waiting at subscribe time
	paused := idleSnap()
	paused.Paused, paused.State = true, studio.StatePaused
	h.backend.publish(paused)
	for s := range drawn {
		if s.Paused {
			break
		}
	}
	if got := h.main.Status.startStop.Text; got != "Resume" {
		t.Errorf("after a published pause the button says %q", got)
	}
}

func TestLoginPendingThenApproved(t *testing.T) {
	s := idleSnap()
	s.State = studio.StateRegistering
	s.Session = studio.SessionOffline
	s.Registration = studio.Registration{State: "none"}
	h := newHarness(t, s)
	login := h.main.Status.login
	if login.Step() != StepSending {
		t.Fatalf("step %q, want sending", login.Step())
	}
	s.State = studio.StateWaitingApproval
	s.Registration = studio.Registration{State: "pending", RequestID: "req-7f3a"}
	h.main.Render(s)
	if login.Step() != StepPending || !login.card.Visible() {
		t.Fatalf("step %q, want pending", login.Step())
	}
	if login.requestID.Text != "req-7f3a" {
		t.Errorf("request id %q", login.requestID.Text)
	}
	test.Tap(h.button("Copy"))
	if got := fyne.CurrentApp().Clipboard().Content(); got != "req-7f3a" {
		t.Errorf("clipboard %q, want the request id", got)
	}
	h.main.Render(idleSnap())
	if login.Step() != StepApproved || !strings.Contains(login.message.Text, "worker wk_42") {
		t.Fatalf("step %q message %q, want approved with the worker id", login.Step(), login.message.Text)
	}
	test.Tap(h.button("OK"))
	h.main.Render(idleSnap())
	if login.card.Visible() {
		t.Error("the approval card stays after OK")
	}
}

func TestLoginPendingThenRejected(t *testing.T) {
	s := idleSnap()
	s.State = studio.StateWaitingApproval
	s.Session = studio.SessionOffline
	s.Registration = studio.Registration{State: "pending", RequestID: "req-1"}
	h := newHarness(t, s)
	s.State = studio.StateRejected
	s.Registration = studio.Registration{State: "rejected", RequestID: "req-1", Reason: "unknown machine"}
	h.main.Render(s)
	login := h.main.Status.login
	if login.Step() != StepRejected || !strings.Contains(login.message.Text, "unknown machine") {
		t.Fatalf("step %q message %q", login.Step(), login.message.Text)
	}
	if h.main.Status.icon.Resource != TrayResource(assets.TrayError) {
		t.Error("a rejected worker should show the error icon")
	}
	test.Tap(h.button("Try again"))
	if got := h.backend.Calls(); !slices.Equal(got, []string{"StartOver"}) {
		t.Errorf("calls %v, want StartOver", got)
	}
}

func TestLogoutAsksFirst(t *testing.T) {
	h := newHarness(t, idleSnap())
	h.main.Show(PageSettings)
	if !strings.Contains(h.main.Settings.workerID.Text, "worker wk_42") {
		t.Errorf("account line %q", h.main.Settings.workerID.Text)
	}
	test.Tap(h.button("Log out / reset…"))
	test.Tap(h.button("No"))
	if len(h.backend.Calls()) != 0 {
		t.Fatalf("declined logout still called %v", h.backend.Calls())
	}
	test.Tap(h.button("Log out / reset…"))
	test.Tap(h.button("Yes"))
	if got := h.backend.Calls(); !slices.Equal(got, []string{"StartOver"}) {
		t.Errorf("calls %v", got)
	}
}

func thumbPNG(t *testing.T) []byte {
	img := image.NewNRGBA(image.Rect(0, 0, 8, 8))
	for i := range img.Pix {
		img.Pix[i] = 200
	}
	img.Set(1, 1, color.Black)
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestJobsPageListsRecentJobs(t *testing.T) {
	h := newHarness(t, idleSnap())
	if h.main.Jobs.Rows() != 0 || !h.main.Jobs.empty.Visible() {
		t.Fatal("fresh worker should show the empty note")
	}
	t0 := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	s := idleSnap()
	s.Recent = []studio.JobInfo{
		{ID: "j3", Kind: engine.KindImage, Model: "sd-tiny", Started: t0, Finished: t0.Add(9 * time.Second),
			Outcome: "done", Stats: engine.Stats{Images: 3}, Thumbnail: thumbPNG(t)},
		{ID: "j2", Kind: engine.KindLLM, Model: "tiny", Started: t0, Finished: t0.Add(2 * time.Second),
			Outcome: "failed", Error: "the model file failed its checksum"},
		{ID: "j1", Kind: engine.KindLLM, Model: "tiny", Started: t0, Finished: t0.Add(4 * time.Second),
			Outcome: "done", Stats: engine.Stats{CompletionTokens: 128, TokensPerSecond: 32}},
	}
	s.Counters = studio.Counters{Done: 2, Failed: 1}
	h.main.Show(PageJobs)
	h.main.Render(s)
	if h.main.Jobs.Rows() != 3 || h.main.Jobs.empty.Visible() {
		t.Fatalf("rows %d", h.main.Jobs.Rows())
	}
	markup := test.RenderObjectToMarkup(h.main.Jobs.Content())
	for _, want := range []string{"3.0 s per image", "32.0 tokens/s (128 tokens)", "the model file failed its checksum", "Failed", "j3-thumb.png", "2 done · 1 failed"} {
		if !strings.Contains(markup, want) {
			t.Errorf("jobs page lacks %q", want)
		}
	}
}

func TestLogsPageFiltersSearchesAndCopies(t *testing.T) {
	h := newHarness(t, idleSnap())
	at := time.Date(2025, 1, 1, 12, 0, 0, 0, time.Local)
	h.ring.Write(logging.Entry{Time: at, Level: slog.LevelDebug, Message: "heartbeat sent", Op: "session"})
	h.ring.Write(logging.Entry{Time: at, Level: slog.LevelInfo, Message: "accepted job j1", Op: "offer", Job: "j1"})
	h.ring.Write(logging.Entry{Time: at, Level: slog.LevelWarn, Message: "upload retry", Op: "result", Job: "j1"})
	h.ring.Write(logging.Entry{Time: at, Level: slog.LevelError, Message: "engine crashed", Op: "job", Job: "j2"})
	lp := h.main.Logs
	lp.Reload()
	if got := len(lp.Shown()); got != 3 {
		t.Fatalf("info and above: %d lines, want 3: %q", got, lp.Shown())
	}
	if got := lp.Shown()[0]; got != "12:00:00 INFO  [offer] accepted job j1 job=j1" {
		t.Errorf("line format %q", got)
	}
	lp.level.SetSelected("Errors only")
	if got := lp.Shown(); len(got) != 1 || !strings.Contains(got[0], "engine crashed") {
		t.Errorf("errors only: %q", got)
	}
	lp.level.SetSelected("Everything (debug)")
	test.Type(lp.search, "J1")
	if got := lp.Shown(); len(got) != 2 {
		t.Errorf("search j1: %q", got)
	}
	test.Tap(lp.copyBtn)
	if got := fyne.CurrentApp().Clipboard().Content(); got != strings.Join(lp.Shown(), "\n") {
		t.Errorf("clipboard %q", got)
	}
}

func TestModelsPageDeletesAfterConfirm(t *testing.T) {
	h := newHarness(t, idleSnap())
	h.models.models = []engine.StoredModel{
		{ID: "tiny-llama", Dir: filepath.Join(h.models.root, "tiny-llama"), Bytes: 3 << 20, Engine: "llama-cpp"},
		{ID: "busy", Dir: filepath.Join(h.models.root, "busy"), Bytes: 1 << 20, InUse: true},
	}
	h.resident = filepath.Join(h.models.root, "tiny-llama", "tiny.gguf")
	h.main.Show(PageModels)
	mp := h.main.Models
	if len(mp.Models()) != 2 {
		t.Fatalf("listed %d models", len(mp.Models()))
	}
	if got := mp.usage.Text; got != "4.0 MB used by models · 100.00 GB free on this disk" {
		t.Errorf("usage %q", got)
	}
	markup := test.RenderObjectToMarkup(mp.Content())
	if !strings.Contains(markup, "in use by a job") {
		t.Error("the busy model is not marked in use")
	}
	if !strings.Contains(markup, "3.0 MB · llama-cpp · loaded in memory") || strings.Count(markup, "loaded in memory") != 1 {
		t.Error("the resident model (and it alone) should be marked loaded")
	}
	// A file held from another folder (the one before a change) marks none.
	h.resident = filepath.Join(t.TempDir(), "tiny-llama", "tiny.gguf")
	mp.Reload()
	if strings.Contains(test.RenderObjectToMarkup(mp.Content()), "loaded in memory") {
		t.Error("a model in another folder is marked loaded")
	}
	h.resident = filepath.Join(h.models.root, "tiny-llama", "tiny.gguf")
	mp.Reload()
	dels := 0
	walkVisible(mp.Content(), func(o fyne.CanvasObject) bool {
		if b, ok := o.(interface{ Disabled() bool }); ok && strings.Contains(test.RenderObjectToMarkup(o), "Delete") && b.Disabled() {
			dels++
		}
		return true
	})
	if dels == 0 {
		t.Error("the in-use model's Delete button should be disabled")
	}
	test.Tap(h.button("Delete"))
	test.Tap(h.button("No"))
	if len(h.models.deleted) != 0 {
		t.Fatal("deleted without confirmation")
	}
	test.Tap(h.button("Delete"))
	test.Tap(h.button("Yes"))
	if !slices.Equal(h.models.deleted, []string{"tiny-llama"}) || len(mp.Models()) != 1 {
		t.Errorf("deleted %v, now listing %d", h.models.deleted, len(mp.Models()))
	}
}

// The Models page follows the snapshots the window already gets: pausing
// releases the resident model (no VRAM figure changes on a CPU-only
// computer) and a starting job puts its model in use, and the open page
// shows both without a tab switch; progress alone does not re-read the
// folder.
func TestModelsPageFollowsSnapshots(t *testing.T) {
	h := newHarness(t, idleSnap())
	dir := filepath.Join(h.models.root, "tiny-llama")
	h.models.models = []engine.StoredModel{{ID: "tiny-llama", Dir: dir, Bytes: 3 << 20, Engine: "llama-cpp"}}
	h.resident = filepath.Join(dir, "tiny.gguf")
	drawn := make(chan studio.Snapshot, 8)
	h.main.rendered = func(s studio.Snapshot) { drawn <- s }
	h.main.Show(PageModels)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h.main.Follow(ctx)
	<-drawn
	mp := h.main.Models
	markup := func() string { return test.RenderObjectToMarkup(mp.Content()) }
	if !strings.Contains(markup(), "loaded in memory") {
		t.Fatal("the resident model is not marked loaded")
	}
	// Pause: the worker releases the model, then publishes.
	h.resident = ""
	paused := idleSnap()
	paused.Paused, paused.State = true, studio.StatePaused
	h.backend.publish(paused)
	<-drawn
	if strings.Contains(markup(), "loaded in memory") {
		t.Error("after the pause released the model the page still marks it loaded")
	}
	// Resume and a job starts with that model.
	h.models.models[0].InUse = true
	started := time.Now()
	h.backend.publish(workingSnap(started))
	<-drawn
	if !strings.Contains(markup(), "in use by a job") {
		t.Error("the model of the job that started is not marked in use")
	}
	lists := h.models.lists
	more := workingSnap(started)
	more.Current.Done = 50 << 20
	h.backend.publish(more)
	<-drawn
	if h.models.lists != lists {
		t.Errorf("progress alone read the folder again (%d reads, want %d)", h.models.lists, lists)
	}
}

func TestModelsPageShowsDeleteError(t *testing.T) {
	h := newHarness(t, idleSnap())
	h.models.models = []engine.StoredModel{{ID: "m", Bytes: 1}}
	h.models.delErr = errDenied
	h.main.Show(PageModels)
	test.Tap(h.button("Delete"))
	test.Tap(h.button("Yes"))
	if !strings.Contains(test.RenderToMarkup(h.w.Canvas()), "Permission denied") {
		t.Error("the delete error is not shown")
	}
}

func TestBudgetSliderFollowsDetectedVRAM(t *testing.T) {
	h := newHarness(t, idleSnap()) // 8 GB detected, budget 6
	sp := h.main.Settings
	if sp.BudgetMax() != 8 || sp.budget.Value != 6 {
		t.Fatalf("slider %v of %v, want 6 of 8", sp.budget.Value, sp.BudgetMax())
	}
	// A smaller card: the slider shrinks and says the saved budget is too big.
	s := idleSnap()
	s.VRAM.TotalBytes = 4*gib + gib/3
	h.main.Render(s)
	if sp.BudgetMax() != 4 || sp.budget.Value != 4 {
		t.Errorf("slider %v of %v, want 4 of 4", sp.budget.Value, sp.BudgetMax())
	}
	if sp.FieldError(settings.FieldVRAMBudgetGB) == "" {
		t.Error("lowering the budget to fit should be explained")
	}
	// Unknown memory: explained, wide range, the budget kept.
	s.VRAM = studio.VRAM{}
	h.main.Render(s)
	sp.Load()
	if sp.BudgetMax() != unknownBudgetMaxGB || sp.budget.Value != 6 {
		t.Errorf("unknown: slider %v of %v", sp.budget.Value, sp.BudgetMax())
	}
	if !strings.Contains(sp.budgetNote.Text, "could not be detected") {
		t.Errorf("note %q", sp.budgetNote.Text)
	}
}

func TestInvalidSettingsAreRefusedInPlace(t *testing.T) {
	h := newHarness(t, idleSnap())
	sp := h.main.Settings
	file := filepath.Join(t.TempDir(), "a-file")
	mustWrite(t, file)
	cases := []struct {
		name, field string
		edit        func()
		want        string
	}{
		{"not http", settings.FieldStudioURL, func() { sp.url.SetText("ftp://studio.example") }, "https://"},
		{"empty url", settings.FieldStudioURL, func() { sp.url.SetText("  ") }, "empty"},
		{"threads word", settings.FieldThreads, func() { sp.threads.SetText("lots") }, "whole number"},
		{"threads negative", settings.FieldThreads, func() { sp.threads.SetText("-2") }, "negative"},
		{"models dir is a file", settings.FieldModelsDir, func() { sp.dir.SetText(file) }, "not a folder"},
		{"models dir relative", settings.FieldModelsDir, func() { sp.dir.SetText("models") }, "full path"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sp.Load()
			c.edit()
			test.Tap(sp.save)
			if len(h.settings.saved) != 0 {
				t.Fatalf("invalid %s was saved", c.field)
			}
			if got := sp.FieldError(c.field); !strings.Contains(got, c.want) {
				t.Errorf("error next to %s = %q, want it to mention %q", c.field, got, c.want)
			}
			if !strings.HasPrefix(sp.result.Text, "Not saved") {
				t.Errorf("result %q", sp.result.Text)
			}
		})
	}
	// Editing the field clears its error.
	sp.Load()
	sp.url.SetText("ftp://x")
	test.Tap(sp.save)
	if sp.FieldError(settings.FieldStudioURL) == "" {
		t.Fatal("no error to clear")
	}
	test.Type(sp.url, "y")
	if got := sp.FieldError(settings.FieldStudioURL); got != "" {
		t.Errorf("error stays after editing: %q", got)
	}
	// The entry's own validator flags a bad URL while typing.
	sp.Load()
	sp.url.SetText("nonsense")
	if sp.url.Validate() == nil {
		t.Error("the studio URL entry accepts nonsense")
	}
}

func TestValidSettingsAreSavedAndApplied(t *testing.T) {
	h := newHarness(t, idleSnap())
	sp := h.main.Settings
	dir := filepath.Join(t.TempDir(), "new-models")
	sp.url.SetText("https://studio.example/")
	sp.budget.SetValue(7.5)
	sp.dir.SetText(dir)
	sp.threads.SetText("1")
	test.Tap(sp.login)
	h.settings.note = "New jobs use the new models folder; models downloaded to the old one stay there."
	test.Tap(sp.save)
	if len(h.settings.saved) != 1 {
		t.Fatalf("saved %d times; result %q; url err %q", len(h.settings.saved), sp.result.Text, sp.FieldError(settings.FieldStudioURL))
	}
	got := h.settings.saved[0]
	if got.StudioURL != "https://studio.example/" || got.VRAMBudgetGB != 7.5 || got.ModelsDir != dir || got.Threads != 1 || !got.StartAtLogin || got.StartMinimised {
		t.Errorf("saved %+v", got)
	}
	if sp.result.Text != "Saved. "+h.settings.note {
		t.Errorf("the controller's note is not shown: %q", sp.result.Text)
	}
}

func TestTrayLook(t *testing.T) {
	cases := []struct {
		snap    studio.Snapshot
		state   assets.TrayState
		tip     string
		pauseAs string
	}{
		{idleSnap(), assets.TrayIdle, "Studio Worker: idle (no jobs for your models yet)", "Pause now"},
		{workingSnap(time.Now()), assets.TrayWorking, "Studio Worker: working (text job, model tiny-llama)", "Pause now"},
		{studio.Snapshot{State: studio.StatePaused, Paused: true, IdleReason: "paused"}, assets.TrayPaused, "Studio Worker: paused", "Resume"},
		{studio.Snapshot{State: studio.StateStopped, IdleReason: "the studio revoked this worker"}, assets.TrayError, "Studio Worker: stopped (the studio revoked this worker)", "Pause now"},
		{studio.Snapshot{State: studio.StateConnecting, IdleReason: "studio unreachable, retrying in 8 s"}, assets.TrayDisconnected, "Studio Worker: connecting (studio unreachable, retrying in 8 s)", "Pause now"},
		{studio.Snapshot{State: studio.StateWaitingApproval, IdleReason: "waiting for approval"}, assets.TrayDisconnected, "Studio Worker: waiting for approval", "Pause now"},
	}
	for _, c := range cases {
		state, tip := TrayLook(c.snap)
		if state != c.state || tip != c.tip {
			t.Errorf("%s: got %s %q, want %s %q", c.snap.State, state, tip, c.state, c.tip)
		}
		if got := PauseLabel(c.snap); got != c.pauseAs {
			t.Errorf("%s: pause label %q", c.snap.State, got)
		}
	}
}

func TestNoticesCanBeDismissed(t *testing.T) {
	h := newHarness(t, idleSnap())
	h.main.AddNotice("No system tray was found, so closing this window quits Studio Worker.")
	if h.main.Notices() != 1 {
		t.Fatal("notice not shown")
	}
	var closeBtn fyne.Tappable
	walkVisible(h.main.notices, func(o fyne.CanvasObject) bool {
		if b, ok := o.(interface {
			fyne.Tappable
			fyne.Widget
		}); ok && strings.Contains(test.RenderObjectToMarkup(o), "cancel") {
			closeBtn = b
			return false
		}
		return true
	})
	if closeBtn == nil {
		t.Fatal("no close button on the notice")
	}
	test.Tap(closeBtn)
	if h.main.Notices() != 0 {
		t.Error("notice stays after closing it")
	}
}

func TestStoppedWorkerSaysWhyAndWhatToDo(t *testing.T) {
	s := idleSnap()
	s.State, s.Session, s.StopReason = studio.StateStopped, studio.SessionStopped, "this worker was revoked"
	h := newHarness(t, s)
	login := h.main.Status.login
	if login.Step() != StepStopped || !login.retry.Visible() || login.retry.Text != "Log out and register again" {
		t.Fatalf("studio stop: step %q, retry %q visible=%v", login.Step(), login.retry.Text, login.retry.Visible())
	}
	test.Tap(login.retry)
	if got := h.backend.Calls(); !slices.Equal(got, []string{"StartOver"}) {
		t.Errorf("calls %v", got)
	}
	// Stopped by an unusable setting: no logout offered, Settings named.
	s.Session, s.StopReason = studio.SessionOffline, `studio URL "ftp://x" must start with https://`
	h.main.Render(s)
	if login.retry.Visible() || !strings.Contains(login.message.Text, "Settings page") {
		t.Errorf("setting stop: retry visible=%v message %q", login.retry.Visible(), login.message.Text)
	}
	if h.main.Status.icon.Resource != TrayResource(assets.TrayError) {
		t.Error("a stopped worker should show the error icon")
	}
}

func TestAboutShowsTheVersion(t *testing.T) {
	h := newHarness(t, idleSnap())
	h.main.Settings.Render(idleSnap())
	if got := h.main.Settings.about.Text; !strings.Contains(got, "Studio Worker 9.8.7") {
		t.Fatalf("About says %q, want the worker's version", got)
	}
}

func TestHeldLines(t *testing.T) {
	got := heldLines([]engine.Held{
		{Engine: engine.EngineLlamaCpp, Model: "/m/tiny/tiny.gguf", Bytes: 300 << 20, VRAMBytes: 0, PID: 42},
		{Engine: engine.EngineSDCpp, Bytes: 90 << 20, PID: 43},
	})
	want := "\nThe text engine (llama.cpp) holds 300.0 MB with tiny.gguf · process 42.\nThe image engine (stable-diffusion.cpp) holds 90.0 MB, no model loaded · process 43."
	if got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	if heldLines(nil) != "" {
		t.Error("nothing held must add nothing")
	}
}

// The donor's own .gguf files that fail the GGUF check are named on the
// Models page with why they are not offered, read from a real models
// folder (engine.Store); with none, the line is hidden.
func TestModelsPageSaysWhyLooseFilesAreLeftOut(t *testing.T) {
	h := newHarness(t, idleSnap())
	dir := t.TempDir()
	good, err := gguf.Ensure(gguf.Tiny())
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "mine.gguf"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	h.main.deps.Models = engine.NewStore(dir, engine.StoreOptions{})
	mp := h.main.Models
	h.main.Show(PageModels)
	mp.Reload()
	if mp.leftOut.Visible() {
		t.Fatalf("a whole file is listed as left out: %q", mp.leftOut.Text)
	}
	if err := os.WriteFile(filepath.Join(dir, "cut.gguf"), b[:len(b)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	mp.Reload()
	got := mp.leftOut.Text
	if !mp.leftOut.Visible() || !strings.Contains(got, "Not offered to the studio") ||
		!strings.Contains(got, "cut.gguf: the GGUF file is malformed") || strings.Contains(got, "mine.gguf") {
		t.Errorf("left-out line %q", got)
	}
}
