package stack

import (
	"errors"
	"io/fs"
	"os"

	"github.com/minisgg/studio-worker/app/autostart"
	"github.com/minisgg/studio-worker/settings"
)

// LoginStart is the system's start-at-login entry as the stack uses it.
// The real one is package autostart at Options.AutostartConfig; tests pass
// a double.
type LoginStart interface {
	// Enabled reports whether an entry that starts this program exists.
	Enabled() (bool, error)
	// Apply writes (or refreshes) the entry, or removes it.
	Apply(enabled bool) error
}

type osLoginStart struct{ cfg autostart.Config }

func (o osLoginStart) Enabled() (bool, error) { return autostart.Enabled(o.cfg) }
func (o osLoginStart) Apply(on bool) error    { return autostart.Apply(o.cfg, on) }

func (st *Stack) loginStart() LoginStart {
	if st.opts.LoginStart != nil {
		return st.opts.LoginStart
	}
	return osLoginStart{st.opts.AutostartConfig}
}

// settingsFileMissing is read before the first Load, which writes the
// file (to keep the install id), so "first run" is known only here.
func settingsFileMissing(store *settings.Store) bool {
	_, err := os.Stat(store.Path())
	return errors.Is(err, fs.ErrNotExist)
}

// adoptLoginStart is the first-run rule for start at login: with no
// settings file yet, the setting follows whether an entry that starts this
// program already exists. The Windows installer's "start at login" option
// writes the same Run value the app does; without this rule a fresh
// settings file (off by default) would make the app delete what the donor
// had just chosen in the installer. The adopted value is saved, since the
// first Load has already written the file with the default.
func (st *Stack) adoptLoginStart(store *settings.Store, cur *settings.Settings) {
	on, err := st.loginStart().Enabled()
	if err != nil {
		st.Log.Warn(err.Error(), "op", "settings")
		return
	}
	if !on || cur.StartAtLogin {
		return
	}
	cur.StartAtLogin = true
	if err := store.Save(*cur); err != nil {
		st.Log.Warn("could not save the start-at-login setting: "+err.Error(), "op", "settings")
	}
	st.Log.Info("start at login is on: an entry for this program was already there (set by the installer)", "op", "settings")
}
