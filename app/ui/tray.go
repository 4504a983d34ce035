package ui

import (
	"context"
	"time"

	"fyne.io/fyne/v2"

	"github.com/minisgg/studio-worker/assets"
	"github.com/minisgg/studio-worker/studio"
)

// TrayHost is the part of Fyne's desktop.App the tray needs.
type TrayHost interface {
	SetSystemTrayMenu(*fyne.Menu)
	SetSystemTrayIcon(fyne.Resource)
}

// Tray menu labels.
const (
	TrayOpen         = "Open Studio Worker"
	TrayFinishJob    = ActionFinishJob
	TrayQuit         = "Quit"
	trayPauseDefault = ActionPauseNow
)

// Tray is the tray icon and its menu, drawn from worker snapshots like the
// window: one icon and tooltip per state, and a Pause / Resume item whose
// label names what a click does.
type Tray struct {
	host    TrayHost
	backend Backend
	tooltip func(string)

	menu   *fyne.Menu
	open   *fyne.MenuItem
	pause  *fyne.MenuItem
	finish *fyne.MenuItem
	snooze *fyne.MenuItem
	quit   *fyne.MenuItem
	// held is a disabled line at the top of the menu while one of the
	// donor's controls holds the worker ("On hold: GPU busy (blender)").
	held *fyne.MenuItem

	look     assets.TrayState
	tip      string
	now      func() time.Time // the hold line's clock; tests set it
	rendered func()           // tests
}

// NewTray installs the menu and icon. open shows the window, quit ends the
// app; setTooltip sets the tray's hover text where the platform has one
// (nil: none). Call it on the UI goroutine.
func NewTray(host TrayHost, b Backend, open, quit func(), setTooltip func(string)) *Tray {
	t := &Tray{host: host, backend: b, tooltip: setTooltip, now: time.Now}
	t.open = fyne.NewMenuItem(TrayOpen, open)
	t.pause = fyne.NewMenuItem(trayPauseDefault, t.togglePause)
	t.finish = fyne.NewMenuItem(TrayFinishJob, func() { t.backend.PauseAfterCurrent() })
	t.snooze = fyne.NewMenuItem(ActionSnooze, func() { t.backend.PauseFor(SnoozeFor) })
	t.quit = fyne.NewMenuItem(TrayQuit, quit)
	t.quit.IsQuit = true
	t.held = fyne.NewMenuItem("", nil)
	t.held.Disabled = true
	t.menu = fyne.NewMenu("Studio Worker")
	t.setItems()
	t.Render(b.Snapshot())
	host.SetSystemTrayMenu(t.menu)
	return t
}

// Menu is the tray's menu (tests).
func (t *Tray) Menu() *fyne.Menu { return t.menu }

// Look is the icon state and tooltip shown now.
func (t *Tray) Look() (assets.TrayState, string) { return t.look, t.tip }

func (t *Tray) togglePause() {
	if t.backend.Snapshot().Paused {
		t.backend.Resume()
	} else {
		t.backend.PauseNow()
	}
}

// Render updates icon, tooltip and menu for s, touching only what changed
// (a menu refresh rebuilds the platform menu).
func (t *Tray) Render(s studio.Snapshot) {
	look, tip := TrayLook(s)
	if look != t.look {
		t.look = look
		t.host.SetSystemTrayIcon(trayResource(look))
	}
	if tip != t.tip {
		t.tip = tip
		if t.tooltip != nil {
			t.tooltip(tip)
		}
	}
	label := PauseLabel(s)
	finishOff := s.Paused || s.PauseAfterJob
	held := trayHoldLabel(s.Controls, t.now())
	if label != t.pause.Label || finishOff != t.finish.Disabled || held != t.held.Label {
		t.pause.Label = label
		t.finish.Disabled = finishOff
		t.held.Label = held
		t.setItems()
		t.menu.Refresh()
	}
	if t.rendered != nil {
		t.rendered()
	}
}

// Follow redraws the tray on every snapshot until ctx ends.
func (t *Tray) Follow(ctx context.Context) {
	snaps, cancel := t.backend.Subscribe()
	go func() {
		defer cancel()
		for {
			select {
			case <-ctx.Done():
				return
			case s, ok := <-snaps:
				if !ok {
					return
				}
				fyne.DoAndWait(func() { t.Render(s) })
			}
		}
	}()
}

// setItems lays the menu out, with the hold line on top while there is one.
func (t *Tray) setItems() {
	items := []*fyne.MenuItem{t.open, fyne.NewMenuItemSeparator(), t.pause, t.finish, t.snooze, fyne.NewMenuItemSeparator(), t.quit}
	if t.held.Label != "" {
		items = append([]*fyne.MenuItem{t.held, fyne.NewMenuItemSeparator()}, items...)
	}
	t.menu.Items = items
}
