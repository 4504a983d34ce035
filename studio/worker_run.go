package studio

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/minisgg/studio-worker/settings"
)

// runControl is Run's bookkeeping, guarded by Worker.mu.
type runControl struct {
	running     bool
	registering bool
	done        chan struct{}
	cancelRun   context.CancelFunc // ends Run (Shutdown)
	// cancelPhase ends the registration or session now running, so Run
	// loops: back to registration after Logout, or to a new session after
	// the studio URL changed.
	cancelPhase context.CancelFunc
	logout      bool
	restart     bool
	studioURL   string // the URL the running phase uses
}

// ErrAlreadyRunning is returned by a second concurrent Run.
var ErrAlreadyRunning = errors.New("the worker is already running")

// ErrShutDown is returned by a Run that starts after Shutdown: a worker
// that was shut down stays down (its job context is gone), so a caller
// that wants to work again builds a new one.
var ErrShutDown = errors.New("the worker was shut down and cannot run again")

// shutdownCancelWait is how long Shutdown waits for a cancelled engine to
// return before it fails the job itself.
const shutdownCancelWait = time.Second

// Run registers (or reuses stored credentials), then holds the session,
// reconnecting as the protocol says. It returns nil when ctx ends or after
// Shutdown; ErrShutDown at once when it starts after Shutdown; an error
// when the studio rejected the registration or stopped the session for good
// (401, 4001/4003/4004, an error frame). After such an error, Logout and a
// new Run start over.
func (w *Worker) Run(ctx context.Context) error {
	w.mu.Lock()
	if w.stopping {
		w.mu.Unlock()
		return ErrShutDown
	}
	if w.runCtl.running {
		w.mu.Unlock()
		return ErrAlreadyRunning
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	w.runCtl = runControl{running: true, done: done, cancelRun: cancel}
	w.runErr = ""
	w.mu.Unlock()
	defer func() {
		cancel()
		w.mu.Lock()
		w.runCtl.running = false
		w.runCtl.registering = false
		w.runCtl.cancelRun = nil
		w.runCtl.cancelPhase = nil
		w.mu.Unlock()
		close(done)
		w.publish()
	}()

	for {
		if runCtx.Err() != nil {
			return nil
		}
		phaseCtx, s := w.beginPhase(runCtx)
		creds, err := w.register(phaseCtx, s)
		if err == nil {
			err = w.runSession(phaseCtx, s, creds)
		}
		w.endPhase()
		if runCtx.Err() != nil {
			return nil
		}
		if w.takeLoop() {
			continue
		}
		if err == nil {
			// A session only returns nil when its context ended; if that
			// was not ours, start it again rather than exit quietly.
			continue
		}
		w.mu.Lock()
		w.runErr = err.Error()
		w.mu.Unlock()
		w.log.Error("worker stopped: "+err.Error(), "op", "run")
		return err
	}
}

func (w *Worker) beginPhase(ctx context.Context) (context.Context, settings.Settings) {
	s := w.cfg.Settings()
	phaseCtx, cancel := context.WithCancel(ctx)
	w.mu.Lock()
	w.runCtl.cancelPhase = cancel
	w.runCtl.studioURL = s.StudioURL
	w.mu.Unlock()
	return phaseCtx, s
}

func (w *Worker) endPhase() {
	w.mu.Lock()
	if w.runCtl.cancelPhase != nil {
		w.runCtl.cancelPhase()
		w.runCtl.cancelPhase = nil
	}
	w.mu.Unlock()
}

// takeLoop reports (and clears) a request to go round again: a logout or a
// changed studio URL.
func (w *Worker) takeLoop() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	again := w.runCtl.logout || w.runCtl.restart
	w.runCtl.logout, w.runCtl.restart = false, false
	return again
}

func (w *Worker) register(ctx context.Context, s settings.Settings) (settings.Credentials, error) {
	w.mu.Lock()
	w.runCtl.registering = true
	w.mu.Unlock()
	w.publish()
	r := NewRegistrar(RegistrarConfig{
		BaseURL:      s.StudioURL,
		Store:        w.cfg.Creds,
		InstallID:    s.InstallID,
		Capabilities: w.Capabilities,
		UserAgent:    UserAgent(),
		HTTP:         w.http,
		Clock:        w.clock,
		Log:          w.log,
		OnChange:     w.onRegistration,
		PollInterval: w.cfg.RegisterPollInterval,
	})
	creds, err := r.Run(ctx)
	w.mu.Lock()
	w.runCtl.registering = false
	if err == nil {
		w.creds = creds
		w.reg = Registration{State: "approved", WorkerID: creds.WorkerID}
	}
	w.mu.Unlock()
	w.publish()
	return creds, err
}

func (w *Worker) runSession(ctx context.Context, s settings.Settings, creds settings.Credentials) error {
	base, err := APIBase(s.StudioURL)
	if err != nil {
		return err
	}
	w.mu.Lock()
	w.apiBase = base
	w.mu.Unlock()
	sess := NewSession(SessionConfig{
		BaseURL:         s.StudioURL,
		Credentials:     w.sessionCreds,
		Capabilities:    w.Capabilities,
		CurrentJobID:    w.currentJobID,
		OnOffer:         w.HandleOffer,
		OnUnusableOffer: w.HandleUnusableOffer,
		OnFrame:         w.onAck,
		OnWelcome:       w.onWelcome,
		OnStatus:        w.onSessionStatus,
		Logs:            w.cfg.Logs,
		Log:             w.log,
		Clock:           w.clock,
		HTTP:            w.http,
	})
	return sess.Run(ctx)
}

func (w *Worker) sessionCreds() (workerID, token string, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.creds.WorkerID, w.creds.AuthToken, w.creds.WorkerID != "" && w.creds.AuthToken != ""
}

func (w *Worker) onRegistration(r Registration) {
	w.mu.Lock()
	w.reg = r
	w.mu.Unlock()
	w.publish()
}

func (w *Worker) onSessionStatus(st SessionStatus) {
	w.mu.Lock()
	w.sess = st
	if st.State != SessionConnected {
		w.live = nil // kept results wait for the next welcome
	}
	w.mu.Unlock()
	w.publish()
}

// Logout forgets the credentials and goes back to registration (a new
// register-request on the next Run loop). A running job carries on; its
// result can no longer be delivered and is recorded as lost.
func (w *Worker) Logout() error {
	err := w.cfg.Creds.Clear()
	w.mu.Lock()
	w.creds = settings.Credentials{}
	w.reg = Registration{State: "none"}
	w.sess = SessionStatus{State: SessionOffline}
	w.runErr = ""
	cancel := w.runCtl.cancelPhase
	if w.runCtl.running {
		w.runCtl.logout = true
	}
	w.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	if err != nil {
		w.log.Error("could not forget the stored credentials: "+err.Error(), "op", "logout")
		w.publish()
		return fmt.Errorf("could not forget the stored credentials: %w", err)
	}
	w.log.Info("logged out: credentials forgotten", "op", "logout")
	w.publish()
	return nil
}

// ApplySettings re-reads the settings after the donor saved them. Budget,
// start-up flags and the like go out with the next heartbeat without a
// reconnect; a new studio URL restarts the session.
func (w *Worker) ApplySettings() {
	s := w.cfg.Settings()
	w.mu.Lock()
	w.idleHint = "" // a larger budget may fit the offer that was turned down
	var cancel context.CancelFunc
	if w.runCtl.running && w.runCtl.studioURL != "" && w.runCtl.studioURL != s.StudioURL {
		w.runCtl.restart = true
		cancel = w.runCtl.cancelPhase
	}
	w.mu.Unlock()
	if cancel != nil {
		w.log.Info("studio URL changed; reconnecting to "+s.StudioURL, "op", "settings")
		cancel()
	}
	// The controls apply at once: a control turned off lets go now.
	w.gate.SetConfig(s.Controls())
	w.refreshRunnerFacts()
	w.checkControls()
	w.publish()
}

// Shutdown stops taking offers, gives an in-flight job ShutdownGrace to
// finish, then cancels it and fails it as retryable, and finally ends Run.
// It returns ctx's error if ctx ends first.
func (w *Worker) Shutdown(ctx context.Context) error {
	w.mu.Lock()
	w.stopping = true
	// A job that already gave the gate back may still be uploading; it
	// gets the same grace as the one running.
	var inFlight []*jobRun
	for _, jr := range []*jobRun{w.cur, w.sending} {
		if jr != nil {
			inFlight = append(inFlight, jr)
		}
	}
	w.mu.Unlock()
	w.publish()
	var drained sync.WaitGroup
	for _, jr := range inFlight {
		drained.Go(func() { w.drainJob(ctx, jr) })
	}
	drained.Wait()
	w.mu.Lock()
	cancel, done := w.runCtl.cancelRun, w.runCtl.done
	w.mu.Unlock()
	var err error
	if cancel != nil {
		cancel()
		select {
		case <-done:
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	w.lifeCancel()
	return err
}

func (w *Worker) drainJob(ctx context.Context, jr *jobRun) {
	grace := w.clock.NewTimer(w.cfg.ShutdownGrace)
	defer grace.Stop()
	select {
	case <-jr.done:
		return
	case <-grace.C():
	case <-ctx.Done():
	}
	w.log.Warn(fmt.Sprintf("job %s did not finish within %s of shutdown; cancelling it", jr.claim.JobID, w.cfg.ShutdownGrace),
		"op", "shutdown", "job", jr.claim.JobID)
	jr.shutdown.Store(true)
	jr.cancel()
	wait := w.clock.NewTimer(shutdownCancelWait)
	defer wait.Stop()
	select {
	case <-jr.done:
		return
	case <-wait.C():
	case <-ctx.Done():
	}
	// The engine ignores its cancellation: fail the job now so the studio
	// can requeue it, and drop whatever the engine returns later.
	w.mu.Lock()
	accepted := jr.accepted
	w.mu.Unlock()
	if accepted {
		w.deliverFail(jr, msgShutdownFail, true)
	}
}
