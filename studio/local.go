package studio

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/logging"
)

// BusyError says a local request did not get the one-job gate within its
// wait: a studio job (or another local request) holds it. RetryAfter is a
// fair guess of when to try again.
type BusyError struct {
	Job        string // what holds the gate: "job ID", or a pause-now stopping the engines
	RetryAfter time.Duration
}

func (e *BusyError) Error() string {
	return "the worker is busy (" + e.Job + "); try again later"
}

// ErrShuttingDown refuses a local request while the worker stops.
var ErrShuttingDown = errors.New(reasonShuttingDown)

// ErrPausedNow ends a local job that the donor's "Pause now" stopped
// (Worker.PauseNow): neither the request nor the engine was at fault. A
// paused worker still takes local requests once the engines have stopped.
var ErrPausedNow = errors.New(msgPausedNow)

// errShutdownMidJob ends a local job that the worker's shutdown stopped;
// errors.Is finds ErrShuttingDown in it.
type errShutdownMidJob struct{}

func (errShutdownMidJob) Error() string        { return msgShutdownFail }
func (errShutdownMidJob) Is(target error) bool { return target == ErrShuttingDown }

// localSeq numbers local jobs.
var localSeq atomic.Uint64

// busyRetryAfter is the Retry-After of a refused local request: about one
// short job; the studio's jobs take seconds to minutes.
const busyRetryAfter = 10 * time.Second

// RunLocal runs a job asked for on this computer (the local API) through
// the same one-job gate as studio jobs: it never pre-empts one. It waits
// up to wait for the gate (0: not at all), then fails with a *BusyError;
// ctx bounds the wait and the run. A paused worker runs local jobs (pause
// stops claiming studio jobs) and lets their model go afterwards. The job
// is shown as current while it runs and then in the history, marked
// Local, and it counts toward none of the studio's Counters; the studio
// never hears of it (it turns its offers down as busy meanwhile). progress
// gets the engine's reports (with streamed reply text) besides the
// worker's own bookkeeping; it must not block.
func (w *Worker) RunLocal(ctx context.Context, wait time.Duration, job engine.Job, progress engine.ProgressFunc) (engine.Result, error) {
	if job.ID == "" {
		job.ID = fmt.Sprintf("local-%d-%d", time.Now().Unix(), localSeq.Add(1))
	}
	jr, err := w.takeLocalGate(ctx, wait, job)
	if err != nil {
		return engine.Result{}, err
	}
	defer close(jr.done)
	stop := context.AfterFunc(ctx, jr.cancel)
	defer stop()
	w.log.Info("local job "+job.ID+" started", "op", "local", "job", job.ID, "model", job.Model)
	w.publish()
	own := w.progressFunc(jr)
	res, err := w.safeRun(jr.ctx, job, func(p engine.Progress) {
		own(p)
		if progress != nil {
			progress(p)
		}
	})
	switch {
	case err != nil && jr.shutdown.Load():
		err = errShutdownMidJob{}
	case err != nil && jr.stopped.Load():
		err = ErrPausedNow
	}
	w.finishLocal(jr, res, err)
	return res, err
}

// takeLocalGate waits for the gate: it tries again on every snapshot (the
// worker publishes one whenever a job gives the gate back).
func (w *Worker) takeLocalGate(ctx context.Context, wait time.Duration, job engine.Job) (*jobRun, error) {
	snaps, unsubscribe := w.Subscribe()
	defer unsubscribe()
	var expired <-chan time.Time
	if wait > 0 {
		timer := w.clock.NewTimer(wait)
		defer timer.Stop()
		expired = timer.C()
	}
	for {
		w.mu.Lock()
		if w.stopping {
			w.mu.Unlock()
			return nil, ErrShuttingDown
		}
		if w.cur == nil && w.halting == 0 && w.holder == "" {
			jctx, cancel := context.WithCancel(w.life)
			jr := &jobRun{
				claim:  JobOfferClaim{JobID: job.ID, Model: job.Model, Task: &job.Task},
				local:  true,
				ctx:    jctx,
				cancel: cancel,
				done:   make(chan struct{}),
				info: JobInfo{ID: job.ID, Kind: job.Task.Kind, Model: job.Model, Started: w.clock.Now(),
					Outcome: OutcomeRunning, Local: true, Prompt: shortPrompt(job.Task.Prompt())},
			}
			jr.info.Accepted = jr.info.Started // nobody else to say yes to
			if im := job.Task.Image; im != nil {
				jr.info.Width, jr.info.Height = im.Width, im.Height
			}
			w.cur = jr
			w.mu.Unlock()
			return jr, nil
		}
		holder := "stopping the engines (pause now)"
		switch {
		case w.cur != nil:
			holder = "job " + w.cur.claim.JobID
		case w.holder != "":
			holder = w.holder
		}
		w.mu.Unlock()
		if wait <= 0 {
			return nil, &BusyError{Job: holder, RetryAfter: busyRetryAfter}
		}
		select {
		case <-snaps:
		case <-expired:
			return nil, &BusyError{Job: holder, RetryAfter: busyRetryAfter}
		case <-ctx.Done():
			return nil, &BusyError{Job: holder, RetryAfter: busyRetryAfter}
		}
	}
}

// finishLocal gives the gate back and records the job in the history,
// marked local and outside the studio's counters.
func (w *Worker) finishLocal(jr *jobRun, res engine.Result, err error) {
	w.releaseGate(jr)
	w.mu.Lock()
	info := jr.info
	info.Finished = w.clock.Now()
	info.Stats = res.Stats
	info.Ext = res.Ext
	info.Outcome = OutcomeDone
	if err != nil {
		info.Outcome = OutcomeFailed
		info.Error = logging.RedactText(err.Error())
	} else if len(res.Bytes) > 0 {
		info.Thumbnail = thumbnail(res.Bytes, res.Ext)
	}
	w.recent = append([]JobInfo{info}, w.recent...)
	if len(w.recent) > RecentJobs {
		w.recent = w.recent[:RecentJobs]
	}
	if w.sending == jr {
		w.sending = nil
	}
	paused := w.paused
	w.mu.Unlock()
	jr.cancel()
	if err != nil {
		w.log.Warn("local job "+jr.claim.JobID+" failed: "+info.Error, "op", "local", "job", jr.claim.JobID)
	} else {
		w.log.Info("local job "+jr.claim.JobID+" done", "op", "local", "job", jr.claim.JobID)
	}
	if paused {
		w.releaseIfIdle()
	}
	w.refreshRunnerFacts()
	w.publish()
}
