package ui

import (
	"context"
	"strings"
	"sync/atomic"
	"time"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/container"
	"fyne.io/fyne/v2/theme"
	"fyne.io/fyne/v2/widget"

	"github.com/minisgg/studio-worker/app/update"
	"github.com/minisgg/studio-worker/studio"
)

// Page names, in tab order.
const (
	PageStatus   = "Status"
	PageJobs     = "Jobs"
	PageLogs     = "Logs"
	PageModels   = "Models"
	PageSettings = "Settings"
)

// Main is the window's content: one tab per page.
type Main struct {
	deps *Deps

	Status   *StatusPage
	Jobs     *JobsPage
	Logs     *LogsPage
	Models   *ModelsPage
	Settings *SettingsPage

	notifier *Notifier
	// histDay is the local date the totals were last read on; a snapshot
	// on a later date reads them again, so "today" rolls over at midnight.
	histDay string
	now     func() time.Time

	win   fyne.Window
	title string // shown now (WindowTitle)

	tabs    *container.AppTabs
	notices *fyne.Container
	root    fyne.CanvasObject

	// hidden is set (SetHidden, on the UI goroutine) while the window is
	// closed to the tray; Follow's goroutines read it. Nothing is drawn
	// then: a hidden window that redrew on every heartbeat and log line
	// spent CPU on pixels nobody saw (issue 11: light when hidden).
	hidden atomic.Bool

	// rendered, when set, is called after each snapshot was drawn (tests).
	rendered func(studio.Snapshot)
}

// NewMain builds the pages for window w and draws the backend's current
// snapshot. Call it on the UI goroutine.
func NewMain(d Deps, w fyne.Window) *Main {
	m := &Main{deps: &d, now: time.Now, win: w}
	m.Status = newStatusPage(m.deps, w)
	m.Jobs = newJobsPage(m.deps, m.ReloadHistory)
	m.Logs = newLogsPage(d.Logs)
	m.Models = newModelsPage(m.deps, w)
	m.Settings = newSettingsPage(m.deps, w)
	m.notifier = NewNotifier(d.Notify, d.Settings.Current)
	m.tabs = container.NewAppTabs(
		container.NewTabItemWithIcon(PageStatus, theme.HomeIcon(), m.Status.Content()),
		container.NewTabItemWithIcon(PageJobs, theme.ListIcon(), m.Jobs.Content()),
		container.NewTabItemWithIcon(PageLogs, theme.DocumentIcon(), m.Logs.Content()),
		container.NewTabItemWithIcon(PageModels, theme.StorageIcon(), m.Models.Content()),
		container.NewTabItemWithIcon(PageSettings, theme.SettingsIcon(), m.Settings.Content()),
	)
	m.tabs.OnSelected = func(t *container.TabItem) {
		if t.Text == PageModels {
			m.Models.Reload()
		}
	}
	m.notices = container.NewVBox()
	m.root = container.NewBorder(m.notices, nil, nil, nil, m.tabs)
	m.Render(d.Backend.Snapshot())
	m.ReloadHistory()
	return m
}

// ReloadHistory reads the totals and the Jobs page's list from the job
// history off the UI goroutine and draws them on it.
func (m *Main) ReloadHistory() {
	h := m.deps.History
	if h == nil {
		return
	}
	filter := m.Jobs.filter()
	now := m.now()
	m.histDay = now.Format(time.DateOnly)
	m.deps.async(func() {
		sum, sumErr := h.Summary(now)
		jobs, jobsErr := h.Jobs(filter)
		fyne.Do(func() {
			m.Status.Contribution.Render(sum, sumErr)
			m.Jobs.showHistory(jobs, jobsErr)
		})
	})
}

// Content is the window's root object.
func (m *Main) Content() fyne.CanvasObject { return m.root }

// AddNotice shows a message above the pages until the donor dismisses it:
// problems found at start, or that closing the window quits.
func (m *Main) AddNotice(text string) {
	mem := m.deps.Dismissed
	if mem != nil && mem.IsDismissed(text) {
		m.deps.log().Info("not shown again, as the donor closed it before: "+text, "op", "notice")
		return
	}
	msg := widget.NewLabel(titleCase(text))
	msg.Wrapping = fyne.TextWrapWord
	msg.Importance = widget.WarningImportance
	var row *fyne.Container
	closeBtn := widget.NewButtonWithIcon("", theme.CancelIcon(), func() {
		m.notices.Remove(row)
		if mem != nil {
			m.deps.async(func() { mem.Dismiss(text) })
		}
	})
	closeBtn.Importance = widget.LowImportance
	row = container.NewBorder(nil, nil, widget.NewIcon(theme.WarningIcon()), closeBtn, msg)
	m.notices.Add(row)
}

// Notices is how many notices are shown.
func (m *Main) Notices() int { return len(m.notices.Objects) }

// Show selects a page by name, in any letter case.
func (m *Main) Show(page string) {
	for _, t := range m.tabs.Items {
		if strings.EqualFold(t.Text, page) {
			m.tabs.Select(t)
		}
	}
}

// SetHidden says whether the window is closed to the tray. While it is,
// snapshots only feed the notifications and the Status page's "since"
// clock, and log lines and history changes draw nothing; showing it again
// draws the worker's current snapshot, the log and the history at once, so
// the window never opens on stale state. UI goroutine only.
func (m *Main) SetHidden(hidden bool) {
	if m.hidden.Swap(hidden) == hidden {
		return
	}
	if hidden {
		// The job's spinner is an animation: it would keep Fyne
		// redrawing the hidden canvas. Render starts it again.
		m.Status.spinner.Stop()
		return
	}
	m.Render(m.deps.Backend.Snapshot())
	m.Logs.Reload()
	m.ReloadHistory()
}

// Hidden says whether the window is closed to the tray (SetHidden).
func (m *Main) Hidden() bool { return m.hidden.Load() }

// Render draws one snapshot on every page; while the window is hidden it
// only notifies and keeps the Status page's clock. UI goroutine only.
func (m *Main) Render(s studio.Snapshot) {
	m.notifier.Observe(s)
	if m.hidden.Load() {
		m.Status.observe(s, m.Status.now())
		if m.rendered != nil {
			m.rendered(s)
		}
		return
	}
	if t := WindowTitle(s); m.win != nil && t != m.title {
		m.title = t
		m.win.SetTitle(t)
	}
	m.Status.Render(s)
	m.Jobs.Render(s)
	m.Models.Render(s)
	m.Settings.Render(s)
	if m.deps.History != nil && m.histDay != "" && m.now().Format(time.DateOnly) != m.histDay {
		m.ReloadHistory()
	}
	if m.rendered != nil {
		m.rendered(s)
	}
}

// Follow keeps the window up to date until ctx ends: every worker snapshot
// and every new log line is drawn as it comes. Nothing is polled; a clock
// ticks once a second only while a job runs, for its elapsed time.
//
// Drawing waits for the UI goroutine (fyne.DoAndWait), and the sources
// coalesce what arrives meanwhile, so a job that reports progress on every
// token cannot queue up more redraws than the window can make; while a job
// runs, the window redraws at most drawEvery.
func (m *Main) Follow(ctx context.Context) {
	if u := m.deps.Updates; u != nil {
		// The updater's lines (checking, downloading, installed, why
		// not) on the Settings page.
		stop := u.OnStatus(func(st update.Status) { fyne.Do(func() { m.Settings.UpdateStatus(st) }) })
		context.AfterFunc(ctx, stop)
		st := u.Status()
		fyne.Do(func() { m.Settings.UpdateStatus(st) })
	}
	snaps, cancelSnaps := m.deps.Backend.Subscribe()
	go func() {
		defer cancelSnaps()
		var tick *time.Ticker
		var tickC <-chan time.Time
		defer func() {
			if tick != nil {
				tick.Stop()
			}
		}()
		for {
			select {
			case <-ctx.Done():
				return
			case s, ok := <-snaps:
				if !ok {
					return
				}
				fyne.DoAndWait(func() { m.Render(s) })
				switch {
				case s.Current != nil && tick == nil:
					tick = time.NewTicker(time.Second)
					tickC = tick.C
				case s.Current == nil && tick != nil:
					tick.Stop()
					tick, tickC = nil, nil
				}
				if s.Current != nil && !pause(ctx, drawEvery) {
					return
				}
			case <-tickC:
				if !m.hidden.Load() {
					fyne.DoAndWait(m.Status.tick)
				}
			}
		}
	}()
	if h := m.deps.History; h != nil {
		changed, cancelHist := h.Subscribe()
		go func() {
			defer cancelHist()
			for {
				select {
				case <-ctx.Done():
					return
				case <-changed:
					if !m.hidden.Load() { // SetHidden(false) reloads it
						m.ReloadHistory()
					}
				}
			}
		}()
	}
	if m.deps.Logs == nil {
		return
	}
	changed, cancelLogs := m.deps.Logs.Subscribe()
	go func() {
		defer cancelLogs()
		for {
			select {
			case <-ctx.Done():
				return
			case <-changed:
				if m.hidden.Load() {
					continue // SetHidden(false) reloads it
				}
				fyne.DoAndWait(m.Logs.Reload)
				if !pause(ctx, drawEvery) {
					return
				}
			}
		}
	}()
}

// drawEvery bounds how often busy sources redraw the window.
const drawEvery = 100 * time.Millisecond

// pause waits d, or returns false when ctx ends first.
func pause(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// setRows fills a list and shows its placeholder when the list is empty.
func setRows(rows *fyne.Container, empty fyne.CanvasObject, objs []fyne.CanvasObject) {
	rows.Objects = objs
	rows.Refresh()
	if len(objs) == 0 {
		empty.Show()
	} else {
		empty.Hide()
	}
}
