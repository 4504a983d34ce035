// Package app is the desktop shell: the Fyne app with its window and tray
// icon over the worker that package stack builds. It is the only package
// that imports Fyne's cgo driver; the pages live in app/ui.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"

	"fyne.io/fyne/v2"
	fyneapp "fyne.io/fyne/v2/app"
	"fyne.io/fyne/v2/driver/desktop"
	"fyne.io/systray"

	"github.com/minisgg/studio-worker/app/instance"
	"github.com/minisgg/studio-worker/app/stack"
	"github.com/minisgg/studio-worker/app/ui"
	"github.com/minisgg/studio-worker/app/update"
	"github.com/minisgg/studio-worker/assets"
	"github.com/minisgg/studio-worker/settings"
)

// AppID is the Fyne application id (FyneApp.toml says the same).
const AppID = "gg.minis.studioworker"

// Options configure Run.
type Options struct {
	Stack stack.Options
	// Minimised starts with the window hidden in the tray (where there is
	// a tray), whatever the setting says.
	Minimised bool
	// Page opens the window at this page (Status, Jobs, Logs, Models,
	// Settings); when the app already runs, that one shows the page.
	Page string
	// LockDir holds the single-instance lock; empty means the settings
	// folder, so a desktop app and a dev run share one lock per user.
	LockDir string
	Stderr  io.Writer
}

// shutdownTimeout bounds Quit: the worker's grace for a running job plus
// room to report it to the studio.
const shutdownTimeout = 15 * time.Second

// Run starts the desktop app and returns the process exit code.
func Run(opts Options) int {
	stderr := opts.Stderr
	if stderr == nil {
		stderr = os.Stderr
	}
	opts.Stack.Stderr = stderr
	// The login entry belongs to an installed app. A run against the dev
	// studio (`make run`) has its own settings, off by default, and must not
	// remove or re-point the entry an installed copy made.
	opts.Stack.Autostart = !opts.Stack.DevStudio

	lockDir := opts.LockDir
	if lockDir == "" {
		d, err := settings.DefaultDir()
		if err == nil {
			lockDir = d
		}
	}
	showReq := make(chan string, 1)
	var inst *instance.Instance
	if lockDir != "" {
		var err error
		inst, err = instance.Acquire(lockDir, opts.Page, func(page string) {
			select {
			case showReq <- page:
			default:
			}
		})
		if errors.Is(err, instance.ErrRunning) {
			fmt.Fprintln(stderr, "studio-worker: "+err.Error()+".")
			return 0
		}
		if err != nil {
			fmt.Fprintln(stderr, "studio-worker: "+err.Error()+"; carrying on without the single-instance check")
		}
	}
	defer func() {
		if inst != nil {
			inst.Release()
		}
	}()

	st, err := stack.New(opts.Stack)
	if err != nil {
		fmt.Fprintln(stderr, "studio-worker: "+err.Error())
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	a := fyneapp.NewWithID(AppID)
	icon := fyne.NewStaticResource("icon.png", assets.Icon)
	a.SetIcon(icon)
	w := a.NewWindow("Studio Worker")
	w.SetIcon(icon)
	// The folder dialog draws inside the window, so keep room for it.
	w.Resize(fyne.NewSize(920, 680))

	backend := st.Backend()
	deps := ui.Deps{
		Backend:       backend,
		Models:        st.Models(),
		Settings:      st.Settings,
		Logs:          st.Logger.Ring(),
		ResidentModel: st.ResidentModel,
		Log:           st.Log,
	}
	if st.History != nil {
		deps.History = st.History
		deps.Dismissed = st.History
	}
	deps.Updates = st.Updates
	m := ui.NewMain(deps, w)
	w.SetContent(m.Content())
	for _, n := range st.Notices {
		m.AddNotice(n)
	}
	st.OnNotice(func(n string) { fyne.Do(func() { m.AddNotice(n) }) })

	h := newHider(ctx, w, m)
	h.freeMemory = releaseMemory(st.Log)
	quit := func() {
		h.stop()
		w.Hide()
		a.Quit()
	}
	show := h.show

	// The tray icon follows the tray host. With a session bus the tray item
	// is always exported (fyne's systray registers it with a watcher
	// whenever one appears: a panel that starts after the app, as when
	// autostart wins the race at login); closing the window hides it while
	// a watcher shows the icon, and quits while none does. Without a bus no
	// tray can ever appear, and none is started (that would start a bus).
	desk, isDesktop := a.(desktop.App)
	// toTray makes the window's close button hide it to the tray and a
	// click on the icon open it, through h (Fyne's own SetSystemTrayWindow
	// would hide and show it without telling the pages).
	toTray := func() {
		desk.SetSystemTrayWindow(w)
		w.SetCloseIntercept(h.hide)
		systray.SetOnTapped(func() {
			h.wake()
			fyne.Do(h.show)
		})
	}
	bus, hasTray, why := false, false, "this desktop driver has no tray"
	if isDesktop {
		bus, hasTray, why = watchTrayHost(ctx, func(present bool) {
			h.wake()
			fyne.Do(func() {
				if present {
					st.Log.Info("a system tray appeared: the icon goes there, and closing the window now hides it there", "op", "tray")
					toTray()
					go func() {
						if err := ensureTrayItemRegistered(ctx); err != nil {
							st.Log.Warn("the system tray did not take the icon: "+err.Error(), "op", "tray")
						}
					}()
					return
				}
				st.Log.Warn("the system tray went away: closing the window now quits Studio Worker", "op", "tray")
				w.SetCloseIntercept(quit)
				show() // a window hidden in a tray that is gone could not be reached
			})
		})
	}
	if bus {
		ui.NewTray(desk, backend, show, quit, systray.SetTooltip).Follow(ctx)
	}
	if hasTray {
		toTray() // closing the window hides it; a click on the icon shows it
	} else {
		msg := "No system tray was found on this desktop (" + why + "), so closing this window quits Studio Worker"
		if bus {
			msg += " until a tray appears"
		}
		st.Log.Warn(msg+".", "op", "tray")
		m.AddNotice(msg + ".")
		w.SetCloseIntercept(quit)
	}
	w.SetMaster()

	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case page := <-showReq:
				st.Log.Info("another launch asked for the window", "op", "instance")
				h.wake()
				fyne.Do(func() {
					if page != "" {
						m.Show(page)
					}
					show()
				})
			}
		}
	}()
	if opts.Page != "" {
		m.Show(opts.Page)
	}
	m.Follow(ctx)
	st.Start(ctx)
	// An installed update restarts the app into the new version: quit
	// (the updater keeps the job gate), then exec it below.
	var restart atomic.Pointer[update.Restart]
	st.StartUpdates(ctx, func(r *update.Restart) {
		restart.Store(r)
		fyne.Do(quit)
	})

	if (opts.Minimised || st.Settings.Current().StartMinimised) && hasTray {
		st.Log.Info("started minimised to the tray", "op", "startup")
		h.setHidden()
		a.Run()
	} else {
		w.ShowAndRun()
	}

	cancel()
	st.Log.Info("quitting: stopping the worker", "op", "shutdown")
	code := 0
	if err := st.Shutdown(shutdownTimeout); err != nil {
		code = 1
	}
	if r := restart.Load(); r != nil {
		if inst != nil {
			inst.Release() // the new version takes the lock
			inst = nil
		}
		if err := r.Do(); err != nil {
			fmt.Fprintln(stderr, "studio-worker: "+err.Error())
			return 1
		}
	}
	return code
}
