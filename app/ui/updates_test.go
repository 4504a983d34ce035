package ui

import (
	"context"
	"strings"
	"sync"
	"testing"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/test"

	"github.com/minisgg/studio-worker/app/update"
	"github.com/minisgg/studio-worker/logging"
	"github.com/minisgg/studio-worker/settings"
	"github.com/minisgg/studio-worker/studio"
)

// fakeUpdates stands in for *update.Service: it counts Check now presses
// and pushes the statuses a test gives it.
type fakeUpdates struct {
	mu     sync.Mutex
	st     update.Status
	checks int
	subs   []func(update.Status)
}

func (f *fakeUpdates) Status() update.Status { f.mu.Lock(); defer f.mu.Unlock(); return f.st }
func (f *fakeUpdates) CheckNow()             { f.mu.Lock(); f.checks++; f.mu.Unlock() }
func (f *fakeUpdates) OnStatus(fn func(update.Status)) func() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.subs = append(f.subs, fn)
	return func() {}
}
func (f *fakeUpdates) push(st update.Status) {
	f.mu.Lock()
	f.st = st
	subs := append([]func(update.Status){}, f.subs...)
	f.mu.Unlock()
	for _, fn := range subs {
		fn(st)
	}
}

// The Updates block: the switch and the interval are saved with the other
// settings, a bad interval is refused next to its field, Check now asks
// the updater, and the updater's lines (download progress included) show.
func TestSettingsUpdatesBlock(t *testing.T) {
	t.Setenv("LANG", "en_US.UTF-8")
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	test.NewTempApp(t)
	dir := t.TempDir()
	fs := &fakeSettings{cur: settings.Settings{StudioURL: "http://127.0.0.1:8080/", VRAMBudgetGB: 6, ModelsDir: dir, Threads: 1, AutoUpdate: true}}
	upd := &fakeUpdates{st: update.Status{State: update.StateIdle, Line: "Studio Worker 0.2.0 is the newest version."}}
	w := test.NewTempWindow(t, nil)
	w.Resize(fyne.NewSize(900, 700))
	m := NewMain(Deps{Backend: &fakeBackend{snap: idleSnap()}, Models: &fakeModels{root: dir}, Settings: fs,
		Logs: logging.NewRing(10), Async: func(f func()) { f() }, Updates: upd}, w)
	w.SetContent(m.Content())
	drawn := make(chan struct{}, 8)
	m.rendered = func(studio.Snapshot) { drawn <- struct{}{} }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m.Follow(ctx)
	<-drawn // the snapshot goroutine is idle from here on
	sp := m.Settings
	mustShow(t, func() bool { return sp.UpdateLine() == "Studio Worker 0.2.0 is the newest version." })
	if !sp.autoUpdate.Checked || sp.updateHours.Text != "0" {
		t.Fatalf("form: auto %v, hours %q", sp.autoUpdate.Checked, sp.updateHours.Text)
	}

	sp.updateHours.SetText("a day")
	test.Tap(sp.save)
	if len(fs.saved) != 0 || !strings.Contains(sp.FieldError(settings.FieldUpdateHours), "whole number of hours") {
		t.Fatalf("a bad interval: saved %d, error %q", len(fs.saved), sp.FieldError(settings.FieldUpdateHours))
	}
	sp.updateHours.SetText("12")
	test.Tap(sp.autoUpdate) // off
	test.Tap(sp.save)
	if len(fs.saved) != 1 || fs.saved[0].AutoUpdate || fs.saved[0].UpdateCheckHours != 12 {
		t.Fatalf("saved %+v (result %q)", fs.saved, sp.result.Text)
	}

	test.Tap(sp.checkNow)
	upd.mu.Lock()
	checks := upd.checks
	upd.mu.Unlock()
	if checks != 1 {
		t.Fatalf("Check now asked the updater %d times", checks)
	}
	upd.push(update.Status{State: update.StateDownloading, Line: "Downloading Studio Worker 0.3.0…", Done: 25 << 20, Total: 100 << 20})
	mustShow(t, func() bool { return strings.Contains(sp.UpdateLine(), "25% of") && sp.checkNow.Disabled() })
	upd.push(update.Status{State: update.StateFailed, Line: "the download of Studio Worker 0.3.0 was refused: the download's sha256 does not match the feed; nothing was installed"})
	mustShow(t, func() bool { return strings.HasPrefix(sp.UpdateLine(), "the download of") && !sp.checkNow.Disabled() })
}

// mustShow checks cond: the test driver runs fyne.Do on the calling
// goroutine, so a pushed status is already drawn.
func mustShow(t *testing.T, cond func() bool) {
	t.Helper()
	if !cond() {
		t.Fatal("the Settings page does not show the expected update status")
	}
}
