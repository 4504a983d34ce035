package update

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
	"unicode"

	"github.com/minisgg/studio-worker/release"
	"github.com/minisgg/studio-worker/settings"
	"github.com/minisgg/studio-worker/studio"
)

// State is where the updater stands.
type State string

const (
	StateIdle        State = "idle"        // nothing under way; Line says the last result
	StateChecking    State = "checking"    // reading the feed
	StateDownloading State = "downloading" // Done/Total bytes
	StateWaiting     State = "waiting"     // downloaded; waiting for the running job to end
	StateInstalling  State = "installing"  // holding the job gate
	StateRestarting  State = "restarting"  // installed; the app restarts into it
	StateReady       State = "ready"       // downloaded; the donor installs it (Line says how)
	StateFailed      State = "failed"      // Line says why; the running version stays
)

// Status is what the Settings page shows.
type Status struct {
	State State
	// Line says it in a donor's words ("Studio Worker 0.2.0 is the newest
	// version.", "… 0.3.0 is downloaded and verified: install it with …").
	Line string
	// Done and Total are the download's bytes (Total 0: unknown).
	Done, Total int64
	// Checked is when the last check ended (zero: never).
	Checked time.Time
}

// ServiceConfig wires a Service.
type ServiceConfig struct {
	// Settings are the live settings (auto_update, the interval, the feed).
	Settings func() settings.Settings
	// Updater makes the updater for a check from the live settings.
	Updater func(settings.Settings) *Updater
	// Gate takes the one-job gate for the install (studio.Worker.HoldGate).
	Gate func(ctx context.Context, what string) (release func(), err error)
	// Restart is asked to shut the app down and then call r.Do; the gate
	// stays held meanwhile. Nil: the update is installed and the donor is
	// told to restart.
	Restart func(r *Restart)
	// Args are the arguments the app restarts with.
	Args []string
	// Manual checks only when asked (CheckNow), never at start or on a
	// schedule (the dev studio's runs).
	Manual bool
	Clock  studio.Clock
	Log    *slog.Logger
}

// Service runs the checks: one at start and one every interval while
// auto_update is on, and one whenever the donor presses Check now. Only
// one runs at a time.
type Service struct {
	cfg  ServiceConfig
	mu   sync.Mutex
	st   Status
	subs map[int]func(Status)
	next int
	busy bool
	kick chan struct{}
}

// NewService makes a Service; Run starts its schedule.
func NewService(cfg ServiceConfig) *Service {
	if cfg.Clock == nil {
		cfg.Clock = studio.RealClock
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Service{cfg: cfg, st: Status{State: StateIdle}, subs: map[int]func(Status){}, kick: make(chan struct{}, 1)}
}

// Status is the updater's state now.
func (s *Service) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st
}

// OnStatus calls f (on the updater's goroutine) with every new status
// until the returned stop is called. f must not block.
func (s *Service) OnStatus(f func(Status)) (stop func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := s.next
	s.next++
	s.subs[id] = f
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.subs, id)
	}
}

func (s *Service) set(st Status) {
	s.mu.Lock()
	if st.Checked.IsZero() {
		st.Checked = s.st.Checked
	}
	s.st = st
	subs := make([]func(Status), 0, len(s.subs))
	for _, f := range s.subs {
		subs = append(subs, f)
	}
	s.mu.Unlock()
	for _, f := range subs {
		f(st)
	}
}

// Run checks at start and then every interval while auto_update is on,
// until ctx ends. CheckNow wakes it too.
func (s *Service) Run(ctx context.Context) {
	auto := func() bool { return !s.cfg.Manual && s.cfg.Settings().AutoUpdate }
	if auto() {
		s.runOnce(ctx, "")
	}
	for {
		timer := s.cfg.Clock.NewTimer(s.cfg.Settings().UpdateInterval())
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C():
			if auto() {
				s.runOnce(ctx, "")
			}
		case <-s.kick:
			timer.Stop()
			s.runOnce(ctx, "")
		}
	}
}

// CheckNow runs a check (and an install of what it finds) now, whatever
// auto_update says: the donor asked. It returns at once; Status and
// OnStatus follow it. A check already under way is not started twice.
func (s *Service) CheckNow() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// runOnce checks, downloads, waits for the job gate and installs; to
// names a version (the donor's choice) or is "".
func (s *Service) runOnce(ctx context.Context, to string) {
	s.mu.Lock()
	if s.busy {
		s.mu.Unlock()
		return
	}
	s.busy = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.busy = false
		s.mu.Unlock()
	}()
	u := s.cfg.Updater(s.cfg.Settings())
	s.set(Status{State: StateChecking, Line: "Checking for a new version…"})
	offer, err := u.Check(ctx, to)
	now := s.cfg.Clock.Now()
	if err != nil {
		s.fail(err, now)
		return
	}
	line := offer.Line()
	s.cfg.Log.Info(line, "op", "update")
	if offer.Release == nil || offer.Install.Kind == KindSource {
		s.set(Status{State: StateIdle, Line: line, Checked: now})
		return
	}
	v := offer.Release.Version
	s.set(Status{State: StateDownloading, Line: "Downloading Studio Worker " + v + "…", Total: offer.Release.Size, Checked: now})
	archive, err := u.Download(ctx, offer, func(done, total int64) {
		s.set(Status{State: StateDownloading, Line: "Downloading Studio Worker " + v + "…", Done: done, Total: total})
	})
	if err != nil {
		s.fail(err, time.Time{})
		return
	}
	if offer.Install.Kind != KindTarball && offer.Install.Kind != KindWindows {
		// Nothing of this install is replaced here: say how.
		a, err := u.Apply(ctx, offer, archive, s.cfg.Args)
		if err != nil {
			s.fail(err, time.Time{})
			return
		}
		s.cfg.Log.Info(a.Line, "op", "update")
		s.set(Status{State: StateReady, Line: a.Line})
		return
	}
	s.set(Status{State: StateWaiting, Line: "Studio Worker " + v + " is downloaded and verified; it is installed when the running job ends."})
	release, err := s.cfg.Gate(ctx, "installing Studio Worker "+v)
	if err != nil {
		s.fail(fmt.Errorf("Studio Worker %s was not installed: %w", v, err), time.Time{})
		return
	}
	s.set(Status{State: StateInstalling, Line: "Installing Studio Worker " + v + "…"})
	a, err := u.Apply(ctx, offer, archive, s.cfg.Args)
	if err != nil {
		release()
		s.fail(err, time.Time{})
		return
	}
	s.cfg.Log.Info(a.Line, "op", "update")
	if s.cfg.Restart == nil || a.Restart == nil {
		release()
		s.set(Status{State: StateReady, Line: "Studio Worker " + v + " is ready: restart to use it."})
		return
	}
	// The gate stays held: no job starts while the app closes.
	s.set(Status{State: StateRestarting, Line: a.Line})
	s.cfg.Restart(a.Restart)
}

func (s *Service) fail(err error, checked time.Time) {
	line := FailureLine(err)
	if !errors.Is(err, context.Canceled) {
		// The donor's line at warning level; Go's error chain, where
		// the line left it out, at debug level for whoever digs.
		s.cfg.Log.Warn(line, "op", "update")
		if _, ok := release.Explain(err); ok {
			s.cfg.Log.Debug(err.Error(), "op", "update")
		}
	}
	s.set(Status{State: StateFailed, Line: line, Checked: checked})
}

// FailureLine is a failed check or download in a donor's words for the
// Settings page: a server that cannot be reached is named with what went
// wrong ("Could not check for a new version: the name studio.minis.gg is
// not known (is this computer online?). Nothing was installed."), without
// Go's error chain, which the log keeps; any other error is its own text,
// which already says what is wrong and that nothing was installed.
func FailureLine(err error) string {
	if why, ok := release.Explain(err); ok {
		var fe *FeedError
		if errors.As(err, &fe) {
			return "Could not check for a new version: " + why + ". Nothing was installed."
		}
		return "The new version could not be downloaded: " + why + ". Nothing was installed; the next check tries again."
	}
	line := err.Error()
	if r := []rune(line); len(r) > 0 && unicode.IsLower(r[0]) {
		r[0] = unicode.ToUpper(r[0])
		line = string(r)
	}
	return line
}
