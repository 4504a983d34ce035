package history

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/minisgg/studio-worker/logging"
	"github.com/minisgg/studio-worker/studio"
)

// SnapshotSource is what the recorder follows; *studio.Worker provides it.
type SnapshotSource interface {
	Subscribe() (<-chan studio.Snapshot, func())
}

// RecorderConfig configures NewRecorder.
type RecorderConfig struct {
	DB *DB
	// Logs returns the in-memory log lines (logging.Ring.Entries); a
	// finished job keeps the ones tagged with its id. Nil: no log lines.
	Logs func() []logging.Entry
	// KeepDays is how many days of finished jobs to keep (read at each
	// prune); nil or <= 0 means DefaultKeepDays.
	KeepDays func() int
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
	Log *slog.Logger
}

// Recorder writes finished jobs to the database on its own goroutine, so
// neither the worker nor the window waits for the disk, and tells its
// subscribers when the history changed. Reads go straight to the DB.
type Recorder struct {
	cfg  RecorderConfig
	in   chan Job
	seen map[string]time.Time // job id -> Finished already written

	mu        sync.Mutex
	subs      map[int]chan struct{}
	next      int
	lastPrune time.Time
	failing   bool // the last write failed (logged once until one works)
}

// NewRecorder returns a recorder over cfg.DB; Run starts it.
func NewRecorder(cfg RecorderConfig) *Recorder {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Recorder{cfg: cfg, in: make(chan Job, 64), seen: map[string]time.Time{}, subs: map[int]chan struct{}{}}
}

// Run records every job that finishes in src's snapshots, and every job
// handed to RecordLocal, until ctx ends. It prunes old jobs at start and
// then at most once an hour.
func (r *Recorder) Run(ctx context.Context, src SnapshotSource) {
	r.prune()
	var snaps <-chan studio.Snapshot
	if src != nil {
		ch, cancel := src.Subscribe()
		defer cancel()
		snaps = ch
	}
	for {
		select {
		case <-ctx.Done():
			r.drain()
			return
		case s, ok := <-snaps:
			if !ok {
				snaps = nil
				continue
			}
			r.fromSnapshot(s)
		case j := <-r.in:
			r.write(j)
		}
	}
}

// drain writes what RecordLocal queued before the end.
func (r *Recorder) drain() {
	for {
		select {
		case j := <-r.in:
			r.write(j)
		default:
			return
		}
	}
}

// Final records the jobs finished in s that Run had not seen; call it
// once Run has returned (at shutdown), never beside it.
func (r *Recorder) Final(s studio.Snapshot) {
	r.fromSnapshot(s)
	r.drain()
}

// RecordLocal queues a job this computer ran for its own local API that
// did not reach the worker's snapshots (those marked JobInfo.Local are
// recorded from them): it is listed with the history, marked local, and
// never counted in the studio totals. Finished must be set. It does not wait for the disk; when the
// queue is full the job is dropped with a log line.
func (r *Recorder) RecordLocal(j Job) {
	j.Local = true
	select {
	case r.in <- j:
	default:
		r.cfg.Log.Warn("the job history is busy; local job "+j.ID+" was not recorded", "op", "history")
	}
}

// fromSnapshot writes the finished jobs in s.Recent not written yet.
// Recent holds the last studio.RecentJobs jobs, so coalesced snapshots
// lose none unless that many finish between two reads.
func (r *Recorder) fromSnapshot(s studio.Snapshot) {
	for i := len(s.Recent) - 1; i >= 0; i-- { // oldest first
		info := s.Recent[i]
		if info.Outcome == studio.OutcomeRunning || info.ID == "" {
			continue
		}
		if at, ok := r.seen[info.ID]; ok && at.Equal(info.Finished) {
			continue
		}
		r.seen[info.ID] = info.Finished
		r.write(FromJobInfo(info, r.logsOf(info.ID)))
	}
	if len(r.seen) > 4*studio.RecentJobs {
		keep := make(map[string]time.Time, len(s.Recent))
		for _, info := range s.Recent {
			if at, ok := r.seen[info.ID]; ok {
				keep[info.ID] = at
			}
		}
		r.seen = keep
	}
}

// maxJobLogLines bounds the log lines kept per job.
const maxJobLogLines = 200

func (r *Recorder) logsOf(id string) []LogLine {
	if r.cfg.Logs == nil {
		return nil
	}
	var out []LogLine
	for _, e := range r.cfg.Logs() {
		if e.Job != id {
			continue
		}
		out = append(out, LogLine{Time: e.Time, Level: e.Level.String(), Message: e.Text()})
	}
	if len(out) > maxJobLogLines {
		out = out[len(out)-maxJobLogLines:]
	}
	return out
}

// FromJobInfo is the history's record of a finished job.
func FromJobInfo(info studio.JobInfo, logs []LogLine) Job {
	started := info.Generating
	return Job{
		ID: info.ID, Kind: string(info.Kind), Model: info.Model,
		Offered: info.Started, Accepted: info.Accepted, Started: started, Finished: info.Finished,
		Outcome: info.Outcome, Reason: info.Error, Prompt: info.Prompt,
		PromptTokens: info.Stats.PromptTokens, CompletionTokens: info.Stats.CompletionTokens,
		TokensPerSecond: info.Stats.TokensPerSecond, Images: info.Stats.Images,
		Width: info.Width, Height: info.Height, Thumbnail: info.Thumbnail, Log: logs,
		Local: info.Local, // run for the local API (studio.Worker.RunLocal)
	}
}

func (r *Recorder) write(j Job) {
	if j.Finished.IsZero() {
		j.Finished = r.cfg.Now()
	}
	if j.Offered.IsZero() {
		j.Offered = j.Finished
	}
	err := r.cfg.DB.Record(j)
	r.mu.Lock()
	wasFailing := r.failing
	r.failing = err != nil
	r.mu.Unlock()
	switch {
	case err != nil && !wasFailing:
		r.cfg.Log.Warn(fmt.Sprintf("job %s could not be added to the job history: %v (the worker carries on)", j.ID, err), "op", "history", "job", j.ID)
		return
	case err != nil:
		return
	case wasFailing:
		r.cfg.Log.Info("the job history takes jobs again", "op", "history")
	}
	r.prune()
	r.notify()
}

func (r *Recorder) prune() {
	now := r.cfg.Now()
	r.mu.Lock()
	due := r.lastPrune.IsZero() || now.Sub(r.lastPrune) >= time.Hour
	if due {
		r.lastPrune = now
	}
	r.mu.Unlock()
	if !due {
		return
	}
	days := DefaultKeepDays
	if r.cfg.KeepDays != nil && r.cfg.KeepDays() > 0 {
		days = r.cfg.KeepDays()
	}
	n, err := r.cfg.DB.Prune(now.AddDate(0, 0, -days))
	switch {
	case err != nil:
		r.cfg.Log.Warn("old jobs could not be pruned from the job history: "+err.Error(), "op", "history")
	case n > 0:
		r.cfg.Log.Info(fmt.Sprintf("pruned %d jobs older than %d days from the job history", n, days), "op", "history")
		r.notify()
	}
}

// Subscribe returns a channel that receives a value after the history
// changed (coalesced: one pending value stands for any number of
// changes). cancel ends the subscription; the channel is not closed.
func (r *Recorder) Subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	r.mu.Lock()
	id := r.next
	r.next++
	r.subs[id] = ch
	r.mu.Unlock()
	return ch, func() {
		r.mu.Lock()
		delete(r.subs, id)
		r.mu.Unlock()
	}
}

func (r *Recorder) notify() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ch := range r.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Summary is the DB's Summary.
func (r *Recorder) Summary(now time.Time) (Summary, error) { return r.cfg.DB.Summary(now) }

// Jobs is the DB's Jobs.
func (r *Recorder) Jobs(f Filter) ([]Job, error) { return r.cfg.DB.Jobs(f) }

// JobLog is the DB's JobLog.
func (r *Recorder) JobLog(id string) ([]LogLine, error) { return r.cfg.DB.JobLog(id) }

// Dismiss is the DB's Dismiss; a failure is logged.
func (r *Recorder) Dismiss(notice string) {
	if err := r.cfg.DB.Dismiss(notice); err != nil {
		r.cfg.Log.Warn("a closed notice could not be remembered: "+err.Error(), "op", "history")
	}
}

// IsDismissed is the DB's IsDismissed.
func (r *Recorder) IsDismissed(notice string) bool { return r.cfg.DB.IsDismissed(notice) }
