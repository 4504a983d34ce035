package studio

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/logging"
)

// Offers the worker answers without running anything: a job it already
// ran, and an offer it cannot use.
const (
	// FinishedJobMemory is how long the worker remembers a finished job, so
	// that a second offer for it is not run again.
	FinishedJobMemory = time.Hour
	// keptResultBytes bounds the results kept for delivering again; past
	// it the oldest results are dropped (their jobs are still remembered).
	keptResultBytes = 64 << 20
)

// finishedJob is what the worker keeps of a job that needs no second run:
// one whose result was made (delivered or not), or one that failed for a
// reason of its own (not retryable). A retryable failure is not kept: the
// studio offering that job again is its retry.
type finishedJob struct {
	at      time.Time
	res     engine.Result // JSON or Bytes; zero when dropped or when it failed
	failMsg string        // set for a not-retryable failure
}

func (f finishedJob) hasResult() bool { return len(f.res.JSON) > 0 || len(f.res.Bytes) > 0 }

func (f finishedJob) size() int { return len(f.res.JSON) + len(f.res.Bytes) }

// rememberLocked records how jr ended, for rejectRepeatLocked. Called
// with w.mu held.
func (w *Worker) rememberLocked(jr *jobRun, outcome, errText string, res engine.Result) {
	now := w.clock.Now()
	w.pruneFinishedLocked(now)
	id := jr.claim.JobID
	switch {
	case len(res.JSON) > 0 || len(res.Bytes) > 0:
		// Done, or made but lost on the way: either way it never needs
		// to run again, and a lost one can still be delivered.
		w.finished[id] = finishedJob{at: now, res: res}
	case outcome != OutcomeDone && jr.final:
		w.finished[id] = finishedJob{at: now, failMsg: errText}
	default:
		delete(w.finished, id)
	}
	w.capKeptResultsLocked()
}

func (w *Worker) pruneFinishedLocked(now time.Time) {
	if w.finished == nil {
		w.finished = map[string]finishedJob{}
	}
	for id, f := range w.finished {
		if now.Sub(f.at) >= FinishedJobMemory {
			delete(w.finished, id)
		}
	}
}

// capKeptResultsLocked drops the oldest kept results until they fit
// keptResultBytes.
func (w *Worker) capKeptResultsLocked() {
	total := 0
	var ids []string
	for id, f := range w.finished {
		if f.hasResult() {
			total += f.size()
			ids = append(ids, id)
		}
	}
	if total <= keptResultBytes {
		return
	}
	slices.SortFunc(ids, func(a, b string) int { return w.finished[a].at.Compare(w.finished[b].at) })
	for _, id := range ids {
		if total <= keptResultBytes {
			break
		}
		f := w.finished[id]
		total -= f.size()
		f.res = engine.Result{}
		w.finished[id] = f
	}
}

// repeatOffer is the answer to an offer for a job this worker already
// finished within FinishedJobMemory.
type repeatOffer int

const (
	repeatNone      repeatOffer = iota // not a repeat: run it
	repeatRedeliver                    // deliver the kept result again
	repeatFailAgain                    // send the same not-retryable fail
	repeatReject                       // finished, but its result is gone
)

// repeatLocked classifies an offer for claim's job id. Called with w.mu
// held.
func (w *Worker) repeatLocked(jobID string) (repeatOffer, finishedJob) {
	w.pruneFinishedLocked(w.clock.Now())
	f, ok := w.finished[jobID]
	switch {
	case !ok:
		return repeatNone, f
	case f.hasResult():
		return repeatRedeliver, f
	case f.failMsg != "":
		return repeatFailAgain, f
	}
	return repeatReject, f
}

// answerRepeat answers an offer for a finished job; it reports false when
// the offer is not a repeat. Called with w.mu held; it unlocks it when it
// answers.
func (w *Worker) answerRepeatLocked(s Sender, claim JobOfferClaim, newRun func() *jobRun) bool {
	kind, f := w.repeatLocked(claim.JobID)
	id := claim.JobID
	switch kind {
	case repeatNone:
		return false
	case repeatFailAgain:
		w.mu.Unlock()
		w.log.Info(fmt.Sprintf("job %s already failed on this worker at %s; sending the same failure again",
			id, f.at.Format(time.TimeOnly)), "op", "offer", "job", id, "model", claim.Model)
		go w.sendFailFrame(s, Fail{JobID: id, Error: f.failMsg, Retryable: false})
	case repeatReject:
		reason := fmt.Sprintf("job %s already ran on this worker at %s and its result is no longer kept",
			id, f.at.Format(time.TimeOnly))
		w.noteRejectLocked(reason, false)
		w.mu.Unlock()
		w.publish()
		go w.sendReject(s, claim, reason, "")
	case repeatRedeliver:
		jr := newRun()
		w.mu.Unlock()
		w.log.Info(fmt.Sprintf("job %s already finished on this worker at %s; delivering its result again instead of running it twice",
			id, f.at.Format(time.TimeOnly)), "op", "offer", "job", id, "model", claim.Model)
		go w.redeliver(jr, f.res)
	}
	return true
}

// redeliver accepts a job that already finished here and sends its kept
// result again, without running it.
func (w *Worker) redeliver(jr *jobRun, res engine.Result) {
	defer w.jobs.Done()
	defer close(jr.done)
	sctx, cancel := context.WithTimeout(context.Background(), frameSendTimeout)
	err := jr.sender.Send(sctx, Accept{JobID: jr.claim.JobID})
	cancel()
	w.mu.Lock()
	if err != nil {
		if w.cur == jr {
			w.cur = nil
		}
		w.mu.Unlock()
		jr.cancel()
		w.log.Warn("could not accept job "+jr.claim.JobID+": "+err.Error(), "op", "offer", "job", jr.claim.JobID)
		w.publish()
		return
	}
	jr.accepted = true
	w.counters.Accepted++
	w.mu.Unlock()
	w.publish()
	if len(res.JSON) > 0 {
		w.deliverJSON(jr, res)
	} else {
		w.deliverBinary(jr, res)
	}
}

// HandleUnusableOffer is the session's OnUnusableOffer: the offer names a
// job but carries a field this worker cannot use, so that job alone is
// failed as not retryable, naming the field; the session stays up.
func (w *Worker) HandleUnusableOffer(s Sender, u *UnusableOffer) {
	msg := logging.RedactText("this worker cannot use the offer's " + u.Problem())
	w.log.Warn(fmt.Sprintf("job %s failed (retryable=false): %s", u.JobID, msg), "op", "offer", "job", u.JobID, "model", u.Model)
	now := w.clock.Now()
	w.mu.Lock()
	w.counters.Offered++
	w.counters.Failed++
	w.recent = append([]JobInfo{{
		ID: u.JobID, Model: u.Model, Started: now, Finished: now, Outcome: OutcomeFailed, Error: msg,
	}}, w.recent...)
	if len(w.recent) > RecentJobs {
		w.recent = w.recent[:RecentJobs]
	}
	w.mu.Unlock()
	w.publish()
	go w.sendFailFrame(s, Fail{JobID: u.JobID, Error: msg, Retryable: false})
}

func (w *Worker) sendFailFrame(s Sender, f Fail) {
	f.Error = logging.RedactText(f.Error)
	ctx, cancel := context.WithTimeout(context.Background(), frameSendTimeout)
	defer cancel()
	if err := s.Send(ctx, f); err != nil {
		w.log.Warn("could not send the failure of job "+f.JobID+": "+err.Error(), "op", "offer", "job", f.JobID)
	}
}
