package stack

import (
	"context"
	"os"
	"path/filepath"
	"sync"

	"github.com/adrg/xdg"

	"github.com/minisgg/studio-worker/app/update"
	"github.com/minisgg/studio-worker/settings"
)

// updates is the stack's part of the updater (issue #14, app/update).
type updates struct {
	mu      sync.Mutex
	restart func(*update.Restart)
}

// newUpdates makes the updater service over the worker's one-job gate:
// the install waits for the running job and holds the gate until the app
// restarts into the new version.
func (st *Stack) newUpdates() *update.Service {
	exe, err := os.Executable()
	install := update.Install{Kind: update.KindSource, Why: "the program's path is unknown"}
	if err == nil {
		install = update.Detect(exe, update.SystemProbe())
	}
	work := filepath.Join(xdg.CacheHome, settings.AppDirName, "updates")
	return update.NewService(update.ServiceConfig{
		Settings: st.Settings.Current,
		Updater: func(s settings.Settings) *update.Updater {
			return update.New(update.Config{FeedURL: s.UpdateFeedURL, Install: install, WorkDir: work, Log: st.Log})
		},
		Gate: st.Worker.HoldGate,
		Restart: func(r *update.Restart) {
			st.upd.mu.Lock()
			f := st.upd.restart
			st.upd.mu.Unlock()
			if f != nil {
				f(r)
			}
		},
		Args:   os.Args[1:],
		Manual: st.Dev != nil,
		Clock:  st.opts.Clock,
		Log:    st.Log,
	})
}

// StartUpdates runs the updater until ctx ends: a check at start and every
// update_check_hours while auto_update is on (only Check now against the
// dev studio). When an update is installed, restart is called: it shuts
// the app down and then calls Restart.Do.
func (st *Stack) StartUpdates(ctx context.Context, restart func(*update.Restart)) {
	st.upd.mu.Lock()
	st.upd.restart = restart
	st.upd.mu.Unlock()
	if from := update.TakeUpdatedFrom(); from != "" {
		update.ConfirmStarted()
		st.Log.Info("Studio Worker was updated from "+from, "op", "update")
	}
	go st.Updates.Run(ctx)
}
