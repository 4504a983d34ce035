// Package ui draws the Studio Worker window: the Status, Jobs, Logs, Models
// and Settings pages and the login flow. It is a view over the worker: it
// renders snapshots and calls the worker's methods, and decides no policy.
//
// The package must not import fyne.io/fyne/v2/app (the cgo driver) so that
// its tests run with Fyne's test driver and no display. Everything here is
// touched on the Fyne UI goroutine only; goroutines that feed it go
// through fyne.Do.
package ui

import (
	"log/slog"
	"time"

	"fyne.io/fyne/v2"

	"github.com/minisgg/studio-worker/app/history"
	"github.com/minisgg/studio-worker/app/update"
	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/logging"
	"github.com/minisgg/studio-worker/settings"
	"github.com/minisgg/studio-worker/studio"
)

// Backend is what the window needs from the worker; *studio.Worker
// provides all but StartOver, which the app adds because only it can start
// the worker's Run loop again.
type Backend interface {
	Snapshot() studio.Snapshot
	// Subscribe delivers the latest snapshot on every change (coalesced);
	// cancel ends the subscription.
	Subscribe() (<-chan studio.Snapshot, func())
	Pause()
	// PauseNow pauses and stops the running job at once (it is failed as
	// retryable and offered to another computer) and lets the engines go.
	PauseNow()
	// PauseFor is PauseNow that resumes by itself after d.
	PauseFor(d time.Duration)
	Resume()
	PauseAfterCurrent()
	// Logout forgets the credentials; the worker then registers afresh.
	Logout() error
	// ApplySettings makes the worker re-read the saved settings.
	ApplySettings()
	// StartOver forgets the credentials and runs registration again, also
	// after the studio turned the worker down or stopped it for good.
	StartOver() error
}

// ModelStore is the model folder as the Models page sees it; *engine.Store
// provides it.
type ModelStore interface {
	Root() string
	List() ([]engine.StoredModel, error)
	Delete(modelID string) error
	DiskUsage() (uint64, error)
	FreeSpace() (uint64, error)
	// BudgetUse is what the models folder's disk budget counts now.
	BudgetUse() (engine.BudgetUse, error)
	// LooseLeftOut lists the .gguf files placed in the folder that fail
	// the GGUF check, so are not offered to the studio, and why.
	LooseLeftOut() []engine.LeftOutModel
}

// SettingsController reads and saves the donor's settings. Save persists
// them and applies them (worker, start at login); its error is shown to
// the donor as it is.
type SettingsController interface {
	Current() settings.Settings
	// Save returns a note for the donor on how the change applies (a new
	// models folder is used from the next job; what waits for a restart);
	// "" when everything simply applied.
	Save(settings.Settings) (note string, err error)
}

// LogSource is the in-memory log ring; *logging.Ring provides it.
type LogSource interface {
	Entries() []logging.Entry
	Subscribe() (<-chan struct{}, func())
}

// HistorySource is the job history as the Status and Jobs pages read it;
// *history.Recorder provides it. Its reads may touch the disk, so the
// window calls them through Deps.async.
type HistorySource interface {
	Summary(now time.Time) (history.Summary, error)
	Jobs(history.Filter) ([]history.Job, error)
	JobLog(id string) ([]history.LogLine, error)
	// Subscribe signals after the history changed (coalesced).
	Subscribe() (<-chan struct{}, func())
}

// NoticeMemory remembers the notices the donor closed, across restarts;
// *history.Recorder provides it.
type NoticeMemory interface {
	IsDismissed(notice string) bool
	Dismiss(notice string)
}

// Deps wires the window.
type Deps struct {
	Backend  Backend
	Models   ModelStore
	Settings SettingsController
	Logs     LogSource
	// History is the job history; nil when none could be kept, and the
	// Jobs page then lists the worker's recent jobs since start.
	History HistorySource
	// Dismissed, when set, keeps a closed notice from showing again.
	Dismissed NoticeMemory
	// ResidentModel is the path of the model file an engine holds in
	// memory ("" = none or unknown); optional. It must not wait for a
	// running job.
	ResidentModel func() string
	// Notify sends a desktop notification; nil means the app's
	// SendNotification (tests pass a recorder).
	Notify func(*fyne.Notification)
	// Log receives the window's own messages (a failed save, a delete).
	Log *slog.Logger
	// Async runs slow work (disk listing) off the UI goroutine; nil means
	// a new goroutine. Tests pass a synchronous runner.
	Async func(func())
	// Updates is the updater behind the Settings page's Check now; nil
	// disables the button.
	Updates UpdateSource
}

// UpdateSource is the updater as the window sees it (*update.Service).
type UpdateSource interface {
	Status() update.Status
	CheckNow()
	// OnStatus calls f with each new status (on another goroutine) until
	// stop is called.
	OnStatus(f func(update.Status)) (stop func())
}

func (d *Deps) async(f func()) {
	if d.Async != nil {
		d.Async(f)
		return
	}
	go f()
}

func (d *Deps) log() *slog.Logger {
	if d.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return d.Log
}
