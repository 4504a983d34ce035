package ui

import (
	"errors"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/test"
	"fyne.io/fyne/v2/widget"

	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/logging"
	"github.com/minisgg/studio-worker/settings"
	"github.com/minisgg/studio-worker/studio"
)

// fakeBackend is a worker double: it records calls and publishes what the
// test sets.
type fakeBackend struct {
	mu        sync.Mutex
	snap      studio.Snapshot
	subs      []chan studio.Snapshot
	calls     []string
	startOver error
}

func (b *fakeBackend) Snapshot() studio.Snapshot {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.snap
}

func (b *fakeBackend) Subscribe() (<-chan studio.Snapshot, func()) {
	ch := make(chan studio.Snapshot, 1)
	b.mu.Lock()
	ch <- b.snap
	b.subs = append(b.subs, ch)
	b.mu.Unlock()
	return ch, func() {}
}

// publish replaces the snapshot and hands it to subscribers, dropping a
// stale one the way the worker does.
func (b *fakeBackend) publish(s studio.Snapshot) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.snap = s
	for _, ch := range b.subs {
		select {
		case <-ch:
		default:
		}
		ch <- s
	}
}

func (b *fakeBackend) record(c string) {
	b.mu.Lock()
	b.calls = append(b.calls, c)
	b.mu.Unlock()
}

func (b *fakeBackend) Calls() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.calls)
}

func (b *fakeBackend) Pause()    { b.record("Pause") }
func (b *fakeBackend) PauseNow() { b.record("PauseNow") }
func (b *fakeBackend) PauseFor(d time.Duration) {
	b.record("PauseFor " + d.String())
}
func (b *fakeBackend) Resume()            { b.record("Resume") }
func (b *fakeBackend) PauseAfterCurrent() { b.record("PauseAfterCurrent") }
func (b *fakeBackend) Logout() error      { b.record("Logout"); return nil }
func (b *fakeBackend) ApplySettings()     { b.record("ApplySettings") }
func (b *fakeBackend) StartOver() error   { b.record("StartOver"); return b.startOver }

type fakeModels struct {
	root    string
	models  []engine.StoredModel
	deleted []string
	delErr  error
	lists   int    // how often the folder was read
	budget  uint64 // the disk budget in bytes
}

func (m *fakeModels) Root() string { return m.root }
func (m *fakeModels) List() ([]engine.StoredModel, error) {
	m.lists++
	return slices.Clone(m.models), nil
}
func (m *fakeModels) Delete(id string) error {
	if m.delErr != nil {
		return m.delErr
	}
	m.deleted = append(m.deleted, id)
	m.models = slices.DeleteFunc(m.models, func(s engine.StoredModel) bool { return s.ID == id })
	return nil
}
func (m *fakeModels) DiskUsage() (uint64, error) {
	var n uint64
	for _, s := range m.models {
		n += s.Bytes
	}
	return n, nil
}
func (m *fakeModels) FreeSpace() (uint64, error)          { return 100 << 30, nil }
func (m *fakeModels) LooseLeftOut() []engine.LeftOutModel { return nil }
func (m *fakeModels) BudgetUse() (engine.BudgetUse, error) {
	u := engine.BudgetUse{BudgetBytes: m.budget}
	for _, s := range m.models {
		if s.Downloaded {
			u.UsedBytes += s.Bytes
			u.Models++
		}
	}
	return u, nil
}

type fakeSettings struct {
	cur   settings.Settings
	saved []settings.Settings
	note  string
	err   error
}

func (s *fakeSettings) Current() settings.Settings { return s.cur }
func (s *fakeSettings) Save(v settings.Settings) (string, error) {
	if s.err != nil {
		return "", s.err
	}
	s.saved = append(s.saved, v)
	s.cur = v
	return s.note, nil
}

type harness struct {
	t        *testing.T
	w        fyne.Window
	main     *Main
	backend  *fakeBackend
	models   *fakeModels
	settings *fakeSettings
	ring     *logging.Ring
	resident string
}

func newHarness(t *testing.T, snap studio.Snapshot) *harness {
	t.Helper()
	return newHarnessWith(t, snap, nil)
}

// newHarnessWith is newHarness with a job history.
func newHarnessWith(t *testing.T, snap studio.Snapshot, hist HistorySource) *harness {
	t.Helper()
	t.Setenv("LANG", "en_US.UTF-8")
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	test.NewTempApp(t)
	dir := t.TempDir()
	h := &harness{
		t:       t,
		backend: &fakeBackend{snap: snap},
		models:  &fakeModels{root: dir},
		settings: &fakeSettings{cur: settings.Settings{
			StudioURL: "http://127.0.0.1:8080/", VRAMBudgetGB: 6, ModelsDir: dir, Threads: 1,
		}},
		ring: logging.NewRing(100),
	}
	h.w = test.NewTempWindow(t, nil)
	h.w.Resize(fyne.NewSize(900, 700))
	h.main = NewMain(Deps{
		Backend:       h.backend,
		Models:        h.models,
		Settings:      h.settings,
		Logs:          h.ring,
		ResidentModel: func() string { return h.resident },
		Async:         func(f func()) { f() },
		History:       hist,
	}, h.w)
	h.w.SetContent(h.main.Content())
	return h
}

// button finds a visible button by its label anywhere on the window,
// dialogs included.
func (h *harness) button(label string) *widget.Button {
	h.t.Helper()
	if b := findButton(h.w.Canvas(), label); b != nil {
		return b
	}
	h.t.Fatalf("no visible button %q", label)
	return nil
}

func findButton(c fyne.Canvas, label string) *widget.Button {
	roots := []fyne.CanvasObject{c.Content()}
	roots = append(roots, c.Overlays().List()...)
	for i := len(roots) - 1; i >= 0; i-- {
		var found *widget.Button
		walkVisible(roots[i], func(o fyne.CanvasObject) bool {
			if b, ok := o.(*widget.Button); ok && b.Text == label {
				found = b
				return false
			}
			return true
		})
		if found != nil {
			return found
		}
	}
	return nil
}

// walkVisible visits o and everything inside it that is shown; visit
// returns false to stop.
func walkVisible(o fyne.CanvasObject, visit func(fyne.CanvasObject) bool) bool {
	if o == nil || !o.Visible() {
		return true
	}
	if !visit(o) {
		return false
	}
	var kids []fyne.CanvasObject
	switch v := o.(type) {
	case *fyne.Container:
		kids = v.Objects
	case fyne.Widget:
		kids = test.WidgetRenderer(v).Objects()
	}
	for _, k := range kids {
		if !walkVisible(k, visit) {
			return false
		}
	}
	return true
}

var errDenied = errors.New("permission denied")

func mustWrite(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
}
