package studio

import (
	"context"
	"errors"
)

// ReasonUpdating is the reject reason of an offer that comes while the
// updater holds the one-job gate (§6.1, §6.2: offers during an install are
// turned down as busy).
const ReasonUpdating = "worker is installing an update"

// ErrGateWait says HoldGate gave up waiting: its context ended while a
// job (or another holder) kept the gate.
var ErrGateWait = errors.New("a job is still running; the update waits for it to end")

// HoldGate takes the one-job gate for work that must not overlap a job
// (the updater installing a new version, §6.1): it waits for the running
// job, a pause-now stopping the engines, or another holder to let go,
// then holds the gate until release is called, and meanwhile studio offers
// are rejected busy with ReasonUpdating and local jobs wait or get a
// *BusyError. what says what holds it, in words ("installing 0.3.0"),
// for the log and local callers. A worker shutting down returns
// ErrShuttingDown; a ctx that ends first returns ErrGateWait. release is
// safe to call more than once.
func (w *Worker) HoldGate(ctx context.Context, what string) (release func(), err error) {
	snaps, unsubscribe := w.Subscribe()
	defer unsubscribe()
	for {
		w.mu.Lock()
		if w.stopping {
			w.mu.Unlock()
			return nil, ErrShuttingDown
		}
		if w.cur == nil && w.halting == 0 && w.holder == "" {
			w.holder = what
			w.mu.Unlock()
			w.log.Info("holding the job gate: "+what, "op", "update")
			w.publish()
			done := false
			return func() {
				w.mu.Lock()
				if done {
					w.mu.Unlock()
					return
				}
				done = true
				w.holder = ""
				w.mu.Unlock()
				w.publish()
			}, nil
		}
		w.mu.Unlock()
		select {
		case <-snaps:
		case <-ctx.Done():
			return nil, ErrGateWait
		}
	}
}

// Holder says what holds the gate through HoldGate ("" when nothing).
func (w *Worker) Holder() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.holder
}
