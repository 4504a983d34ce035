package studio

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/minisgg/studio-worker/controls"
	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/logging"
	"github.com/minisgg/studio-worker/settings"
)

// JobRunner is what the worker needs from the engine side: what it serves,
// an admission check, and running a job (model download included). It is
// defined here, on the consumer side; engine.Runner implements it, and test
// doubles live only in _test.go files.
type JobRunner interface {
	// Kinds lists the task kinds that can really be run now.
	Kinds() []engine.TaskKind
	// SupportedModels lists model ids or "<engine>:*" sentinels per kind.
	SupportedModels() map[engine.TaskKind][]string
	// Admit checks engine, budget and free memory; the error text is the
	// reason the donor and the studio see.
	Admit(claim engine.Admission) error
	// Run downloads the job's files through the model store and runs it on
	// the engine named by its model source.
	Run(ctx context.Context, job engine.Job, progress engine.ProgressFunc) (engine.Result, error)
	// VRAM reports what is known about GPU memory.
	VRAM() engine.VRAMInfo
}

// residentReporter is optionally implemented by a runner that can say how
// much VRAM its resident model holds, for the Status page.
type residentReporter interface {
	ResidentVRAMBytes() uint64
}

// heldReporter is optionally implemented by a runner that can say what
// each engine holds in memory (engine.Runner), for the Status page.
type heldReporter interface {
	Held() []engine.Held
}

// releaser is optionally implemented by a runner that keeps models
// resident: a paused worker gives their memory back to the donor.
type releaser interface {
	ReleaseAll() error
}

// engineStopper is optionally implemented by a runner whose engines run in
// processes it can end at once (engine.Runner with engine/host clients):
// stopping them returns every byte they held, system and GPU memory.
type engineStopper interface {
	StopEngines() error
}

// WorkerConfig wires a Worker. Settings, Runner and Creds are required.
type WorkerConfig struct {
	// Settings returns the live settings; they are re-read on every
	// heartbeat and offer, so a saved budget applies without a restart.
	Settings func() settings.Settings
	Runner   JobRunner
	Creds    settings.CredentialStore
	Version  string // defaults to Version
	Log      *slog.Logger
	// HTTP is used for registration and result uploads (a per-request
	// timeout is applied on top).
	HTTP *http.Client
	// Logs is the queue the session ships as logBatch frames (optional).
	Logs  *LogQueue
	Clock Clock
	// ShutdownGrace is how long Shutdown lets an in-flight job run before
	// cancelling it (default 5 s, §3.7).
	ShutdownGrace time.Duration
	// RegisterPollInterval overrides the protocol's 30 s registration poll
	// (the dev studio's tests and demo approve in milliseconds).
	RegisterPollInterval time.Duration
	// Journal records every accepted job until the studio acknowledges its
	// final frame (nil: none kept). See Journal.
	Journal *Journal
	// MachineName and Username override the OS values (tests).
	MachineName, Username string
	// Probes read the machine for the donor's controls (only when idle,
	// GPU busy, programs, ceilings) and set how often; with Probes set the
	// worker also looks at the work hours on that beat, so a schedule's
	// change shows without an offer. nil: no polling; the decision still
	// holds the donor's pause and the work hours on every offer and
	// heartbeat. See controls.go.
	Probes *Probes
	// Location is the time zone the work hours are read in (nil: the
	// computer's, time.Local).
	Location *time.Location
}

// Default timings of the worker loop.
const (
	DefaultShutdownGrace = 5 * time.Second
	// frameSendTimeout bounds one accept/reject/result frame on a socket
	// whose peer stopped reading.
	frameSendTimeout = 15 * time.Second
	// RecentJobs is how many finished jobs the snapshot keeps.
	RecentJobs = 50
)

// Donor-facing reasons used in more than one place.
const (
	reasonShuttingDown = "worker is shutting down"
	msgShutdownFail    = "the worker was shut down before the job finished"
	msgLost            = "the studio connection dropped before the result could be sent"
	msgPausedNow       = "paused by the donor"
	// msgStoppedWhileRunning fails a job the journal holds from an earlier
	// run of the worker that ended without delivering it.
	msgStoppedWhileRunning = "the worker stopped while running this job"
)

// Job outcomes in JobInfo.Outcome.
const (
	OutcomeRunning = "running"
	OutcomeDone    = "done"
	OutcomeFailed  = "failed"
	OutcomeLost    = "lost"
)

// Worker turns offers into engine runs and results, and publishes snapshots
// of what it is doing for the UI.
type Worker struct {
	cfg    WorkerConfig
	log    *slog.Logger
	runner JobRunner
	clock  Clock
	http   *http.Client
	host   string
	user   string

	// life outlives sessions: an accepted job keeps running when its
	// session drops (§3.7); only Shutdown cancels it.
	life       context.Context
	lifeCancel context.CancelFunc
	jobs       sync.WaitGroup

	// gate is the one decision "may I take work now, and if not, why"
	// (package controls); w.paused is the donor's own pause, fed into it.
	gate *controls.Gate
	// holds are the controls holding the worker at the last look
	// (checkControls), to tell when one begins or ends. Guarded by mu.
	holds []controls.Control

	mu          sync.Mutex
	paused      bool
	pausedSince time.Time
	pauseAfter  bool
	// resumeAt is when a PauseFor snooze ends (zero: none); snoozeGen
	// tells a snooze's timer whether it is still the one in force.
	resumeAt  time.Time
	snoozeGen int
	stopping  bool
	cur       *jobRun // holds the one-job gate
	// sending gave the gate back and is sending its final frame or
	// upload; it stays on show as the current job until that is done.
	sending    *jobRun
	recent     []JobInfo
	counters   Counters
	lastReject string
	idleHint   string // set by a non-transient reject, cleared by the next accept
	sess       SessionStatus
	reg        Registration
	runErr     string // why Run returned, when it returned for good
	creds      settings.Credentials
	apiBase    string // of the session now running
	kinds      []engine.TaskKind
	vram       engine.VRAMInfo
	resident   uint64
	held       []engine.Held
	// pending are journalled jobs whose final frame goes out on the next
	// welcome: left by an earlier run, or finished while the studio was
	// unreachable.
	pending  []JournalEntry
	live     Sender // the session welcomed last, while it is connected
	subs     map[int]chan Snapshot
	nextSub  int
	finished map[string]finishedJob // by job id, for offers of a job already run (worker_guard.go)

	runCtl runControl
	// halting counts PauseNow's engine stops under way; a local job waits
	// for them (RunLocal), or the stop would end it.
	halting int
	// holder holds the one-job gate without a job (HoldGate: the updater
	// installing a version); "" when nothing does.
	holder string
}

// jobRun is the one job the gate admits at a time.
type jobRun struct {
	claim    JobOfferClaim
	sender   Sender
	apiBase  string
	info     JobInfo
	accepted bool
	ctx      context.Context
	cancel   context.CancelFunc
	done     chan struct{}
	// settled is taken by whoever sends the job's final frame or upload
	// first: the job goroutine, or Shutdown when the engine ignores its
	// cancellation. The loser stays silent.
	settled  atomic.Bool
	shutdown atomic.Bool // cancelled by Shutdown, not by an engine error
	stopped  atomic.Bool // cancelled by PauseNow
	// heldStop is why a control other than the donor's pause stopped the
	// job ("when my computer needs it: stop it now"); nil when none did.
	heldStop atomic.Pointer[string]
	final    bool // failed for a reason of its own (not retryable); set by the settler
	local    bool // asked for on this computer (RunLocal), not by the studio
}

// NewWorker builds a worker; Run starts it.
func NewWorker(cfg WorkerConfig) *Worker {
	if cfg.Version == "" {
		cfg.Version = Version
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = RealClock
	}
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = DefaultShutdownGrace
	}
	if cfg.HTTP == nil {
		cfg.HTTP = &http.Client{}
	}
	w := &Worker{
		cfg:    cfg,
		log:    cfg.Log,
		runner: cfg.Runner,
		clock:  cfg.Clock,
		http:   cfg.HTTP,
		host:   cfg.MachineName,
		user:   cfg.Username,
		subs:   map[int]chan Snapshot{},
		reg:    Registration{State: "none"},
		sess:   SessionStatus{State: SessionOffline},
	}
	if w.host == "" {
		w.host = hostName()
	}
	if w.user == "" {
		w.user = userName()
	}
	w.life, w.lifeCancel = context.WithCancel(context.Background())
	w.gate = controls.NewGate(cfg.Settings().Controls(), cfg.Location, w.ownPID, w.controlLog)
	w.loadJournal()
	w.refreshRunnerFacts()
	if cfg.Probes != nil {
		go w.watchControls(w.life)
	}
	return w
}

// loadJournal takes over the jobs an earlier run left in the journal: each
// is reported on the first welcome. One that was reported already and never
// acknowledged is dropped, so that the studio is not asked forever.
func (w *Worker) loadJournal() {
	if w.cfg.Journal == nil {
		return
	}
	for _, e := range w.cfg.Journal.Entries() {
		if e.Reported {
			w.log.Warn("forgetting job "+e.JobID+" from the journal: it was reported after an earlier restart and never acknowledged", "op", "journal", "job", e.JobID)
			_ = w.cfg.Journal.Remove(e.JobID)
			continue
		}
		w.log.Info("job "+e.JobID+" was left unfinished by the last run; it is reported to the studio on connecting", "op", "journal", "job", e.JobID, "model", e.Model)
		w.pending = append(w.pending, e)
	}
}

// journal runs f on the journal when there is one, logging a failure: the
// journal helps after a crash, but a full disk must not fail the job.
func (w *Worker) journal(what, jobID string, f func(*Journal) error) {
	if w.cfg.Journal == nil {
		return
	}
	if err := f(w.cfg.Journal); err != nil {
		w.log.Warn("job journal: "+what+": "+err.Error(), "op", "journal", "job", jobID)
	}
}

// onAck removes an acknowledged job from the journal (the session's
// OnFrame).
func (w *Worker) onAck(frame any) {
	switch f := frame.(type) {
	case *CompleteAck:
		w.journal("remove", f.JobID, func(j *Journal) error { return j.Remove(f.JobID) })
	case *FailAck:
		w.journal("remove", f.JobID, func(j *Journal) error { return j.Remove(f.JobID) })
	}
}

// onWelcome sends the final frames the journal holds back (the session's
// OnWelcome, before the first heartbeat and so before any offer): a kept
// result is delivered, a job an earlier run left unfinished is failed as
// retryable. Each stays journalled until the studio acknowledges it.
func (w *Worker) onWelcome(s Sender) {
	w.mu.Lock()
	w.live = s
	w.mu.Unlock()
	w.flushPending(s)
}

// deliverNow sends what was just kept on the session that is connected
// now, if one is: a job that outlived a short outage need not wait for the
// next reconnect.
func (w *Worker) deliverNow() {
	w.mu.Lock()
	s := w.live
	w.mu.Unlock()
	if s != nil {
		go w.flushPending(s)
	}
}

// flushPending sends the journal's held-back final frames on s.
func (w *Worker) flushPending(s Sender) {
	w.mu.Lock()
	pending := w.pending
	w.pending = nil
	w.mu.Unlock()
	for _, e := range pending {
		w.journal("mark reported", e.JobID, func(j *Journal) error { return j.MarkReported(e.JobID) })
		ctx, cancel := context.WithTimeout(context.Background(), frameSendTimeout)
		var err error
		info := JobInfo{ID: e.JobID, Kind: e.Kind, Model: e.Model, Started: e.Accepted, Finished: w.clock.Now(), Stats: e.Stats, Ext: e.Ext}
		switch {
		case e.Kept && len(e.JSON) > 0:
			err = s.Send(ctx, CompleteJSON{JobID: e.JobID, Result: e.JSON, Prompt: e.Prompt})
			info.Outcome = OutcomeDone
			w.log.Info("sent the kept result of job "+e.JobID, "op", "journal", "job", e.JobID)
		case e.Kept:
			go w.uploadKept(s, e)
			cancel()
			continue
		default:
			err = s.Send(ctx, Fail{JobID: e.JobID, Error: msgStoppedWhileRunning, Retryable: true})
			info.Outcome, info.Error = OutcomeFailed, msgStoppedWhileRunning
			w.log.Warn(fmt.Sprintf("job %s failed (retryable=true): %s", e.JobID, msgStoppedWhileRunning), "op", "journal", "job", e.JobID)
		}
		cancel()
		if err != nil {
			w.log.Warn("could not report job "+e.JobID+": "+err.Error(), "op", "journal", "job", e.JobID)
			w.mu.Lock()
			w.pending = append(w.pending, e) // the next welcome tries again
			w.mu.Unlock()
			continue
		}
		w.record(info)
	}
}

// uploadKept delivers a kept binary result; the upload's answer is the
// acknowledgement. A refusal (409: the job is no longer this worker's)
// ends it too.
func (w *Worker) uploadKept(s Sender, e JournalEntry) {
	data, err := w.cfg.Journal.ResultBytes(e)
	if err != nil {
		w.log.Warn("the kept result of job "+e.JobID+" is unreadable: "+err.Error(), "op", "journal", "job", e.JobID)
		_ = w.cfg.Journal.Remove(e.JobID)
		return
	}
	workerID, token := w.senderCreds(s)
	w.mu.Lock()
	base := w.apiBase
	w.mu.Unlock()
	err = uploadResult(w.life, w.http, w.wait, resultUpload{APIBase: base, WorkerID: workerID, AuthToken: token,
		JobID: e.JobID, Prompt: e.Prompt, Ext: e.Ext, Data: data})
	var ue *UploadError
	switch {
	case err == nil:
		w.log.Info("uploaded the kept result of job "+e.JobID, "op", "journal", "job", e.JobID)
		w.record(JobInfo{ID: e.JobID, Kind: e.Kind, Model: e.Model, Started: e.Accepted, Finished: w.clock.Now(), Outcome: OutcomeDone, Stats: e.Stats, Ext: e.Ext})
	case errors.As(err, &ue) && !ue.retryable():
		w.log.Warn("the studio no longer takes the kept result of job "+e.JobID+": "+err.Error(), "op", "journal", "job", e.JobID)
	default:
		w.log.Warn("could not upload the kept result of job "+e.JobID+": "+err.Error(), "op", "journal", "job", e.JobID)
		w.mu.Lock()
		w.pending = append(w.pending, e)
		w.mu.Unlock()
		return
	}
	_ = w.cfg.Journal.Remove(e.JobID)
}

// record adds a finished job to the history.
func (w *Worker) record(info JobInfo) {
	w.mu.Lock()
	w.recent = append([]JobInfo{info}, w.recent...)
	if len(w.recent) > RecentJobs {
		w.recent = w.recent[:RecentJobs]
	}
	if info.Outcome == OutcomeDone {
		w.counters.Done++
	} else {
		w.counters.Failed++
	}
	w.mu.Unlock()
	w.publish()
}

// refreshRunnerFacts asks the runner what it serves and what it knows of
// the GPU. It is called outside w.mu: a probe may take a while.
func (w *Worker) refreshRunnerFacts() ([]engine.TaskKind, map[engine.TaskKind][]string, engine.VRAMInfo) {
	kinds := w.runner.Kinds()
	models := w.runner.SupportedModels()
	vram := w.runner.VRAM()
	var resident uint64
	if rr, ok := w.runner.(residentReporter); ok {
		resident = rr.ResidentVRAMBytes()
	}
	var held []engine.Held
	if hr, ok := w.runner.(heldReporter); ok {
		held = hr.Held()
	}
	w.mu.Lock()
	w.held = held
	w.kinds = servedKinds(kinds)
	w.vram = vram
	w.resident = resident
	w.mu.Unlock()
	return kinds, models, vram
}

// Capabilities builds §3.3 from live settings, the pause flag and the
// runner. The session calls it for hello and every heartbeat.
func (w *Worker) Capabilities() Capabilities {
	kinds, models, vram := w.refreshRunnerFacts()
	s := w.cfg.Settings()
	w.mu.Lock()
	dec := w.decideLocked()
	w.mu.Unlock()
	total := 0.0
	if vram.Known {
		total = bytesToGB(vram.TotalBytes)
	}
	return buildCapabilities(capsInput{
		MachineName:    w.host,
		Username:       w.user,
		Version:        w.cfg.Version,
		VRAMTotalGB:    total,
		BudgetGB:       s.VRAMBudgetGB,
		Paused:         !dec.MayWork,
		OnlyWhenIdle:   dec.OnlyWhenIdle,
		UserPresence:   string(dec.Presence),
		AutoStart:      s.StartAtLogin,
		StartMinimised: s.StartMinimised,
		AutoUpdate:     s.AutoUpdate,
		Kinds:          kinds,
		Models:         models,
	})
}

// currentJobID is the heartbeat's currentJobId: set once the job was
// accepted, and still set on a reconnected session while it runs (§3.7).
func (w *Worker) currentJobID() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cur != nil && w.cur.accepted {
		return w.cur.claim.JobID
	}
	return ""
}

// ---- offers (§4.2) ----

// HandleOffer is the session's OnOffer. It runs on the session's reader
// goroutine, so it only decides and reserves the one-job gate here; frames
// are sent and the job runs on other goroutines.
func (w *Worker) HandleOffer(s Sender, claim JobOfferClaim) {
	kind := engine.TaskKind("")
	if claim.Task != nil {
		kind = claim.Task.Kind
	}
	w.log.Info(fmt.Sprintf("offer received %s game=%s asset=%s model=%s vram=%s kind=%s",
		claim.JobID, claim.GameID, claim.AssetName, claim.Model, formatGB(claim.VRAMGBEstimate), kind),
		"op", "offer", "job", claim.JobID, "model", claim.Model)

	w.mu.Lock()
	w.counters.Offered++
	var reason, code string
	dec := w.decideLocked()
	switch {
	case w.stopping:
		reason, code = reasonShuttingDown, RejectPaused
	case !dec.MayWork:
		// The donor's pause, the work hours, only when idle, the GPU…:
		// the protocol's exact reason where it gives one (§3.2).
		reason, code = dec.OfferReason(), RejectPaused
	case w.cur != nil && w.cur.claim.JobID == claim.JobID:
		reason, code = fmt.Sprintf("job %s is already running on this worker", claim.JobID), RejectBusy
	case w.cur != nil:
		reason, code = ReasonBusy, RejectBusy
	case w.holder != "":
		reason, code = ReasonUpdating, RejectBusy
	}
	if reason != "" {
		w.noteRejectLocked(reason, false)
		w.mu.Unlock()
		w.publish()
		go w.sendReject(s, claim, reason, code)
		return
	}
	if w.answerRepeatLocked(s, claim, func() *jobRun { return w.takeGateLocked(s, claim, kind) }) {
		return
	}
	jr := w.takeGateLocked(s, claim, kind)
	w.mu.Unlock()
	go w.admitAndRun(jr)
}

// takeGateLocked makes claim's jobRun and gives it the one-job gate.
// Called with w.mu held.
func (w *Worker) takeGateLocked(s Sender, claim JobOfferClaim, kind engine.TaskKind) *jobRun {
	ctx, cancel := context.WithCancel(w.life)
	jr := &jobRun{
		claim:   claim,
		sender:  s,
		apiBase: w.apiBase,
		ctx:     ctx,
		cancel:  cancel,
		done:    make(chan struct{}),
		info: JobInfo{
			ID:      claim.JobID,
			Kind:    kind,
			Model:   claim.Model,
			Started: w.clock.Now(),
			Outcome: OutcomeRunning,
		},
	}
	if claim.Task != nil {
		jr.info.Prompt = shortPrompt(claim.Task.Prompt())
		if im := claim.Task.Image; im != nil {
			jr.info.Width, jr.info.Height = im.Width, im.Height
		}
	}
	w.cur = jr
	w.jobs.Add(1)
	return jr
}

// admitAndRun finishes admission off the reader goroutine (the runner's
// Admit may probe the GPU), then accepts and runs the job.
func (w *Worker) admitAndRun(jr *jobRun) {
	defer w.jobs.Done()
	defer close(jr.done)
	reason, code, lasting := w.admissionProblem(jr.claim), "", true
	w.mu.Lock()
	if reason == "" && w.stopping {
		reason, code, lasting = reasonShuttingDown, RejectPaused, false
	}
	if reason != "" {
		w.noteRejectLocked(reason, lasting)
		if w.cur == jr {
			w.cur = nil
		}
		w.mu.Unlock()
		jr.cancel()
		w.publish()
		w.sendReject(jr.sender, jr.claim, reason, code)
		return
	}
	w.mu.Unlock()
	sctx, cancel := context.WithTimeout(context.Background(), frameSendTimeout)
	err := jr.sender.Send(sctx, Accept{JobID: jr.claim.JobID})
	cancel()
	if err != nil {
		// §4.2.6: the studio never saw an accept, so it will release the
		// claim on its own; nothing to record as a job.
		w.log.Warn("could not accept job "+jr.claim.JobID+": "+err.Error(),
			"op", "offer", "job", jr.claim.JobID, "model", jr.claim.Model)
		w.mu.Lock()
		if w.cur == jr {
			w.cur = nil
		}
		w.mu.Unlock()
		jr.cancel()
		w.publish()
		return
	}
	w.journal("record", jr.claim.JobID, func(j *Journal) error {
		return j.Begin(JournalEntry{JobID: jr.claim.JobID, Model: jr.claim.Model, Kind: jr.info.Kind, Accepted: jr.info.Started})
	})
	w.mu.Lock()
	jr.accepted = true
	jr.info.Accepted = w.clock.Now()
	w.counters.Accepted++
	w.idleHint = ""
	w.mu.Unlock()
	w.log.Info("accepted job "+jr.claim.JobID, "op", "offer", "job", jr.claim.JobID, "model", jr.claim.Model)
	w.publish()
	w.runAccepted(jr)
}

// admissionProblem returns why the worker will not run this claim, in
// words a donor understands, or "" to accept. Order: kind, engine, budget,
// then the runner's own check.
func (w *Worker) admissionProblem(c JobOfferClaim) string {
	if c.Task == nil || c.ModelSource == nil {
		// The decoder refuses such claims; this guards direct callers.
		return "the offer has no task or no model source"
	}
	kind := c.Task.Kind
	kinds := servedKinds(w.runner.Kinds())
	if !slices.Contains(kinds, kind) {
		if len(kinds) == 0 {
			return fmt.Sprintf("this worker does not run %s jobs (no engine is ready)", kind)
		}
		return fmt.Sprintf("this worker does not run %s jobs (it runs %s)", kind, joinKinds(kinds))
	}
	eng := c.ModelSource.Engine
	if eng == "" {
		return fmt.Sprintf("the offer for model %s names no engine", c.Model)
	}
	if engines, ok := enginesServing(w.runner.SupportedModels()[kind]); ok && !slices.Contains(engines, eng) {
		return fmt.Sprintf("model %s needs the %s engine, which this worker does not have for %s jobs", c.Model, eng, kind)
	}
	budget := w.cfg.Settings().VRAMBudgetGB
	if c.VRAMGBEstimate > budget {
		return fmt.Sprintf("needs %s GB, your budget is %s GB", formatGB(c.VRAMGBEstimate), formatGB(budget))
	}
	if err := w.runner.Admit(engine.Admission{Kind: kind, Engine: eng, Model: c.Model, VRAMGB: c.VRAMGBEstimate, Files: c.ModelSource.Files}); err != nil {
		return err.Error()
	}
	return ""
}

// noteRejectLocked records a rejection for the snapshot. A lasting reason
// (kind, engine, budget) also explains why the worker sits idle until the
// next job is accepted.
func (w *Worker) noteRejectLocked(reason string, lasting bool) {
	reason = logging.RedactText(reason) // the window shows it
	w.counters.Rejected++
	w.lastReject = reason
	if lasting {
		if after, ok := strings.CutPrefix(reason, "needs "); ok {
			w.idleHint = "last offer needed " + after
		} else {
			w.idleHint = "last offer turned down: " + reason
		}
	}
}

func (w *Worker) sendReject(s Sender, c JobOfferClaim, reason, code string) {
	reason = logging.RedactText(reason) // no signed URL's secret leaves the worker
	w.log.Info(fmt.Sprintf("rejected job %s: %s", c.JobID, reason), "op", "offer", "job", c.JobID, "model", c.Model)
	ctx, cancel := context.WithTimeout(context.Background(), frameSendTimeout)
	defer cancel()
	if err := s.Send(ctx, Reject{JobID: c.JobID, Reason: reason, Code: code}); err != nil {
		w.log.Warn("could not send the reject of job "+c.JobID+": "+err.Error(), "op", "offer", "job", c.JobID)
	}
}

// ---- running and delivering ----

func (w *Worker) runAccepted(jr *jobRun) {
	c := jr.claim
	job := engine.Job{ID: c.JobID, Model: c.Model, Task: *c.Task, Source: *c.ModelSource}
	start := w.clock.Now()
	res, err := w.safeRun(jr.ctx, job, w.progressFunc(jr))
	if err != nil {
		var crash *engine.CrashError
		if errors.As(err, &crash) || errors.Is(err, errEnginePanic) {
			w.mu.Lock()
			jr.info.EngineCrashed = true
			w.mu.Unlock()
		}
		switch {
		case jr.shutdown.Load():
			err = errors.New(msgShutdownFail)
		case jr.heldStop.Load() != nil:
			err = errors.New(*jr.heldStop.Load())
		case jr.stopped.Load():
			err = errors.New(msgPausedNow)
		}
		w.deliverFail(jr, err.Error(), engine.IsRetryable(err))
		return
	}
	w.log.Info(fmt.Sprintf("job %s dispatched in %s", c.JobID, w.clock.Now().Sub(start).Round(time.Millisecond)),
		"op", "job", "job", c.JobID, "model", c.Model)
	switch {
	case len(res.JSON) > 0:
		w.deliverJSON(jr, res)
	case len(res.Bytes) > 0:
		w.deliverBinary(jr, res)
	default:
		w.deliverFail(jr, "the engine finished without producing a result", true)
	}
}

// errEnginePanic is the failure of a job whose engine panicked.
var errEnginePanic = errors.New("the engine crashed")

// safeRun turns an engine panic into a retryable failure (§5.1) instead of
// taking the whole worker down.
func (w *Worker) safeRun(ctx context.Context, job engine.Job, p engine.ProgressFunc) (res engine.Result, err error) {
	defer func() {
		if r := recover(); r != nil {
			w.log.Error(fmt.Sprintf("engine crashed on job %s: %v", job.ID, r), "op", "job", "job", job.ID, "model", job.Model)
			res, err = engine.Result{}, fmt.Errorf("%w: %v", errEnginePanic, r)
		}
	}()
	return w.runner.Run(ctx, job, p)
}

func (w *Worker) progressFunc(jr *jobRun) engine.ProgressFunc {
	return func(p engine.Progress) {
		w.mu.Lock()
		jr.info.Phase, jr.info.Done, jr.info.Total, jr.info.Note = p.Phase, p.Done, p.Total, p.Note
		if p.Phase == engine.PhaseGenerate && jr.info.Generating.IsZero() {
			jr.info.Generating = w.clock.Now()
		}
		w.mu.Unlock()
		w.publish()
	}
}

func (w *Worker) deliverJSON(jr *jobRun, res engine.Result) {
	if !jr.settled.CompareAndSwap(false, true) {
		return
	}
	c := jr.claim
	frame := CompleteJSON{JobID: c.JobID, Result: res.JSON, Prompt: c.Task.Prompt()}
	w.releaseGate(jr)
	if err := w.sendFinal(jr, frame); err != nil {
		w.finish(jr, OutcomeLost, w.keep(jr, res), res)
		return
	}
	w.log.Info("json result sent for job "+c.JobID, "op", "result", "job", c.JobID, "model", c.Model)
	w.finish(jr, OutcomeDone, "", res)
}

func (w *Worker) deliverBinary(jr *jobRun, res engine.Result) {
	if !jr.settled.CompareAndSwap(false, true) {
		return
	}
	c := jr.claim
	ext := res.Ext
	if ext == "" {
		ext = defaultExt(c.Task)
	}
	workerID, token := w.senderCreds(jr.sender)
	w.releaseGate(jr)
	// The job's own context: Shutdown's cancel stops a slow upload too, and
	// the fail then goes out while the session is still open.
	err := uploadResult(jr.ctx, w.http, w.wait, resultUpload{
		APIBase:   jr.apiBase,
		WorkerID:  workerID,
		AuthToken: token,
		JobID:     c.JobID,
		Prompt:    c.Task.Prompt(),
		Ext:       ext,
		Data:      res.Bytes,
	})
	var refused *UploadError
	if err == nil || (errors.As(err, &refused) && !refused.retryable()) {
		// The upload's answer is the studio's acknowledgement; a refusal
		// (409) says the job is no longer this worker's.
		w.journal("remove", c.JobID, func(j *Journal) error { return j.Remove(c.JobID) })
	}
	if err != nil {
		w.log.Warn(fmt.Sprintf("result upload of job %s failed: %v", c.JobID, err), "op", "result", "job", c.JobID, "model", c.Model)
		msg := "the result could not be uploaded: " + logging.RedactText(err.Error())
		if jr.shutdown.Load() {
			msg = msgShutdownFail
		}
		if ferr := w.sendFinal(jr, Fail{JobID: c.JobID, Error: msg, Retryable: true}); ferr != nil {
			why := msgLost
			if refused == nil && !jr.shutdown.Load() {
				why = w.keep(jr, res) // the studio was unreachable: upload it later
			}
			w.finish(jr, OutcomeLost, why, res)
			return
		}
		w.finish(jr, OutcomeFailed, msg, res)
		return
	}
	w.log.Info("binary upload ok for job "+c.JobID, "op", "result", "job", c.JobID, "model", c.Model)
	res.Ext = ext
	w.finish(jr, OutcomeDone, "", res)
}

func (w *Worker) deliverFail(jr *jobRun, msg string, retryable bool) {
	if !jr.settled.CompareAndSwap(false, true) {
		return
	}
	c := jr.claim
	jr.final = !retryable
	// The one place every failure passes: a URL's query string and user
	// info go neither to the studio nor to the Jobs page (issue 10 item 14).
	msg = logging.RedactText(msg)
	w.log.Warn(fmt.Sprintf("job %s failed (retryable=%t): %s", c.JobID, retryable, msg), "op", "job", "job", c.JobID, "model", c.Model)
	w.releaseGate(jr)
	if err := w.sendFinal(jr, Fail{JobID: c.JobID, Error: msg, Retryable: retryable}); err != nil {
		w.keepFail(jr)
		w.finish(jr, OutcomeLost, msg+"; and "+msgLost, engine.Result{})
		return
	}
	w.finish(jr, OutcomeFailed, msg, engine.Result{})
}

// keep journals a finished result the studio could not be sent, for the
// next welcome, and returns the words for the job's outcome.
func (w *Worker) keep(jr *jobRun, res engine.Result) string {
	if w.cfg.Journal == nil || !w.cfg.Journal.Has(jr.claim.JobID) {
		return msgLost
	}
	if err := w.cfg.Journal.Keep(jr.claim.JobID, res, jr.claim.Task.Prompt()); err != nil {
		w.log.Warn("job journal: "+err.Error(), "op", "journal", "job", jr.claim.JobID)
		return msgLost
	}
	for _, e := range w.cfg.Journal.Entries() {
		if e.JobID == jr.claim.JobID {
			w.mu.Lock()
			w.pending = append(w.pending, e)
			w.mu.Unlock()
		}
	}
	w.log.Info("kept the result of job "+jr.claim.JobID+" to send when the studio is reachable again", "op", "journal", "job", jr.claim.JobID)
	w.deliverNow()
	return msgLost + "; the result is kept and sent when the studio is reachable again"
}

// keepFail leaves a failed job whose fail could not be sent in the journal,
// to be failed on the next welcome.
func (w *Worker) keepFail(jr *jobRun) {
	if w.cfg.Journal == nil || !w.cfg.Journal.Has(jr.claim.JobID) {
		return
	}
	for _, e := range w.cfg.Journal.Entries() {
		if e.JobID == jr.claim.JobID {
			w.mu.Lock()
			w.pending = append(w.pending, e)
			w.mu.Unlock()
		}
	}
	w.deliverNow()
}

// sendFinal sends a result frame on the socket the offer came on, and only
// there: a newer socket belongs to a session that does not hold the job.
func (w *Worker) sendFinal(jr *jobRun, frame any) error {
	ctx, cancel := context.WithTimeout(context.Background(), frameSendTimeout)
	defer cancel()
	err := jr.sender.Send(ctx, frame)
	if err != nil {
		w.log.Warn(fmt.Sprintf("job %s: %s (%v)", jr.claim.JobID, msgLost, err), "op", "result", "job", jr.claim.JobID)
	}
	return err
}

// credsOf is implemented by *Conn: the credentials of the socket an offer
// came on, so the upload is made as that session.
type credsOf interface {
	WorkerID() string
	AuthToken() string
}

func (w *Worker) senderCreds(s Sender) (workerID, token string) {
	if c, ok := s.(credsOf); ok {
		return c.WorkerID(), c.AuthToken()
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.creds.WorkerID, w.creds.AuthToken
}

// releaseGate gives the one-job gate back just before jr's final frame or
// upload goes out, and applies a pending "pause after this job" there. The
// studio offers nothing to a worker that still holds a job, and it offers a
// retryably failed job again as soon as it reads the fail: with the gate
// still held, that offer would be turned down as busy and the job would
// wait for the next heartbeat. The heartbeat's currentJobId goes with the
// gate; the snapshot keeps showing the job until finish records it.
func (w *Worker) releaseGate(jr *jobRun) {
	w.mu.Lock()
	if w.cur != jr {
		w.mu.Unlock()
		return
	}
	w.cur = nil
	w.sending = jr
	pauseNow := w.pauseAfter
	if pauseNow {
		w.pauseAfter = false
		w.setPausedLocked(true)
	}
	w.mu.Unlock()
	if pauseNow {
		w.log.Info("claiming paused by operator (after finishing job "+jr.claim.JobID+")", "op", "pause")
		w.publish()
	}
}

// finish records the job and, on a paused worker, lets the resident models
// go.
func (w *Worker) finish(jr *jobRun, outcome, errText string, res engine.Result) {
	w.releaseGate(jr) // every path releases it earlier; this keeps the rule in one place
	w.mu.Lock()
	info := jr.info
	info.Finished = w.clock.Now()
	info.Outcome = outcome
	info.Error = errText
	info.Stats = res.Stats
	info.Ext = res.Ext
	if outcome == OutcomeDone && len(res.Bytes) > 0 {
		info.Thumbnail = thumbnail(res.Bytes, res.Ext)
	}
	w.recent = append([]JobInfo{info}, w.recent...)
	if len(w.recent) > RecentJobs {
		w.recent = w.recent[:RecentJobs]
	}
	if outcome == OutcomeDone {
		w.counters.Done++
	} else {
		w.counters.Failed++
	}
	w.rememberLocked(jr, outcome, errText, res)
	if w.sending == jr {
		w.sending = nil
	}
	paused := w.paused || !w.decideLocked().MayWork
	w.mu.Unlock()
	jr.cancel()
	if outcome == OutcomeLost {
		w.log.Warn(fmt.Sprintf("job %s lost: %s", jr.claim.JobID, errText), "op", "job", "job", jr.claim.JobID)
	}
	if paused {
		// Paused or held during the job, or by "pause after this job".
		w.releaseIfIdle()
	}
	w.refreshRunnerFacts() // what the engines hold now
	w.publish()
}

// wait pauses on the worker's clock (upload retries).
func (w *Worker) wait(ctx context.Context, d time.Duration) error { return Sleep(ctx, w.clock, d) }

// ---- operator controls ----

// Pause stops taking offers (heartbeats say autoEnabled:false); a running
// job carries on. Runtime only: a restart comes up unpaused (§5.3).
func (w *Worker) Pause() {
	w.mu.Lock()
	w.endSnoozeLocked()
	changed := !w.paused
	w.setPausedLocked(true)
	w.pauseAfter = false
	w.mu.Unlock()
	if changed {
		w.log.Info("claiming paused by operator", "op", "pause")
		w.releaseIfIdle()
	}
	w.publish()
}

// PauseNow pauses and gives everything back at once, where Pause lets the
// running job finish: the running job is cancelled and failed as retryable
// with the reason "paused by the donor" (the studio offers it to another
// worker), and the engines' processes are stopped, which returns all the
// memory they held. The next job after Resume starts them again.
func (w *Worker) PauseNow() {
	w.mu.Lock()
	w.endSnoozeLocked()
	w.setPausedLocked(true)
	w.pauseAfter = false
	jr := w.cur
	w.halting++
	w.mu.Unlock()
	if jr != nil {
		w.log.Info("paused now by operator: stopping job "+jr.claim.JobID, "op", "pause", "job", jr.claim.JobID)
		jr.stopped.Store(true)
		jr.cancel()
	} else {
		w.log.Info("paused now by operator", "op", "pause")
	}
	w.publish()
	go w.haltEngines()
}

// haltEngines stops the engines' processes (or lets their models go),
// returning every byte they held; PauseNow and a control's "stop it now"
// call it after taking w.halting, which it gives back.
func (w *Worker) haltEngines() {
	var err error
	if st, ok := w.runner.(engineStopper); ok {
		err = st.StopEngines()
	} else if rel, ok := w.runner.(releaser); ok {
		err = rel.ReleaseAll()
	}
	if err != nil {
		w.log.Warn("could not stop the engines: "+err.Error(), "op", "pause")
	}
	w.mu.Lock()
	w.halting--
	w.mu.Unlock()
	w.refreshRunnerFacts()
	w.publish()
}

// PauseFor is PauseNow that ends by itself: after d the worker resumes
// as if Resume were pressed. Any pause, resume or PauseFor before then
// replaces it. Snapshot.ResumeAt says when it ends.
func (w *Worker) PauseFor(d time.Duration) {
	w.PauseNow()
	w.mu.Lock()
	w.snoozeGen++
	gen := w.snoozeGen
	w.resumeAt = w.clock.Now().Add(d)
	w.setPausedLocked(true) // the decision learns when the snooze ends
	ctx := w.life
	w.mu.Unlock()
	w.log.Info(fmt.Sprintf("paused for %s, until %s", d, w.resumeAt.Local().Format("15:04")), "op", "pause")
	w.publish()
	go func() {
		if ctx == nil {
			ctx = context.Background()
		}
		if Sleep(ctx, w.clock, d) != nil {
			return
		}
		w.mu.Lock()
		current := w.snoozeGen == gen
		w.mu.Unlock()
		if current {
			w.log.Info("the pause is over; taking jobs again", "op", "pause")
			w.Resume()
		}
	}()
}

// endSnoozeLocked forgets a PauseFor in force. Called with w.mu held.
func (w *Worker) endSnoozeLocked() {
	w.snoozeGen++
	w.resumeAt = time.Time{}
}

// releaseIfIdle frees the runner's resident models while paused and idle,
// so a paused worker holds no GPU memory. It runs in the background: a
// release can take a moment and Pause is called from the UI.
func (w *Worker) releaseIfIdle() {
	rel, ok := w.runner.(releaser)
	if !ok {
		return
	}
	w.mu.Lock()
	idle := (w.paused || !w.decideLocked().MayWork) && w.cur == nil && w.sending == nil
	w.mu.Unlock()
	if !idle {
		return
	}
	go func() {
		if err := rel.ReleaseAll(); err != nil {
			w.log.Warn("could not release the loaded models: "+err.Error(), "op", "pause")
		}
		w.refreshRunnerFacts()
		w.publish()
	}()
}

// Resume takes offers again.
func (w *Worker) Resume() {
	w.mu.Lock()
	w.endSnoozeLocked()
	changed := w.paused || w.pauseAfter
	w.setPausedLocked(false)
	w.pauseAfter = false
	w.mu.Unlock()
	if changed {
		w.log.Info("claiming resumed by operator", "op", "pause")
	}
	w.publish()
}

// PauseAfterCurrent lets the running job finish, then pauses; with no job
// running it pauses at once.
func (w *Worker) PauseAfterCurrent() {
	w.mu.Lock()
	w.endSnoozeLocked()
	if w.cur == nil {
		w.mu.Unlock()
		w.Pause()
		return
	}
	id := w.cur.claim.JobID
	w.pauseAfter = true
	w.mu.Unlock()
	w.log.Info("will pause after job "+id+" finishes", "op", "pause", "job", id)
	w.publish()
}

// ---- snapshots ----

// Snapshot returns the worker's current picture.
func (w *Worker) Snapshot() Snapshot {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.snapshotLocked()
}

// Subscribe returns a channel that always holds the latest snapshot: a
// slow reader skips stale pictures instead of blocking the worker. The
// current snapshot is waiting in it at once. cancel closes the channel.
func (w *Worker) Subscribe() (<-chan Snapshot, func()) {
	ch := make(chan Snapshot, 1)
	w.mu.Lock()
	id := w.nextSub
	w.nextSub++
	w.subs[id] = ch
	ch <- w.snapshotLocked()
	w.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			w.mu.Lock()
			delete(w.subs, id)
			close(ch)
			w.mu.Unlock()
		})
	}
}

// publish pushes a fresh snapshot to every subscriber. It holds w.mu so
// that publishers are serialised and the replace-stale step below can
// never block.
func (w *Worker) publish() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.subs) == 0 {
		return
	}
	s := w.snapshotLocked()
	for _, ch := range w.subs {
		select {
		case <-ch:
		default:
		}
		ch <- s
	}
}

func (w *Worker) snapshotLocked() Snapshot {
	s := w.cfg.Settings()
	snap := Snapshot{
		Controls:      w.decideLocked(),
		Paused:        w.paused,
		PauseAfterJob: w.pauseAfter,
		ResumeAt:      w.resumeAt,
		Session:       w.sess.State,
		SessionDetail: w.sess.Detail,
		RetryIn:       w.sess.RetryIn,
		StopReason:    w.sess.StopReason,
		Registration:  w.reg,
		Recent:        slices.Clone(w.recent),
		Counters:      w.counters,
		LastReject:    w.lastReject,
		LastHeartbeat: w.sess.LastHeartbeatAck,
		VRAM: VRAM{
			Known:      w.vram.Known,
			TotalBytes: w.vram.TotalBytes,
			FreeBytes:  w.vram.FreeBytes,
			InUseBytes: w.resident,
			BudgetGB:   s.VRAMBudgetGB,
		},
		Kinds:     slices.Clone(w.kinds),
		Held:      slices.Clone(w.held),
		StudioURL: s.StudioURL,
		Version:   w.cfg.Version,
	}
	if snap.StopReason == "" {
		snap.StopReason = w.runErr
	}
	if jr := w.shownJob(); jr != nil {
		info := jr.info
		snap.Current = &info
	}
	snap.State, snap.IdleReason = w.stateLocked()
	return snap
}

// shownJob is the job the snapshot shows as current: the one holding the
// gate, else the one still sending its result. Called with w.mu held.
func (w *Worker) shownJob() *jobRun {
	if w.cur != nil {
		return w.cur
	}
	return w.sending
}

// stateLocked derives the one-word state and, when not working, the line
// that says why the worker is idle.
func (w *Worker) stateLocked() (WorkerState, string) {
	switch {
	case w.shownJob() != nil:
		return StateWorking, ""
	case w.reg.State == "rejected":
		reason := "the studio turned this worker down"
		if w.reg.Reason != "" {
			reason += ": " + w.reg.Reason
		}
		return StateRejected, reason
	case w.sess.State == SessionStopped || w.runErr != "":
		reason := w.sess.StopReason
		if reason == "" {
			reason = w.runErr
		}
		if reason == "" {
			reason = "stopped"
		}
		return StateStopped, reason
	case w.paused:
		return StatePaused, "paused"
	case w.stopping:
		return StateStopped, "shutting down"
	case w.holder != "":
		// The updater holds the gate (HoldGate): say why no job comes.
		return StateIdle, w.holder + "; no jobs until it is done"
	case w.reg.State == "pending":
		return StateWaitingApproval, "waiting for approval"
	case w.runCtl.registering:
		return StateRegistering, "asking the studio to register this worker"
	}
	switch w.sess.State {
	case SessionConnected:
		if dec := w.decideLocked(); !dec.MayWork {
			return StateHeld, dec.Line()
		}
		switch {
		case w.idleHint != "":
			return StateIdle, w.idleHint
		case len(w.kinds) == 0:
			return StateIdle, "no engine is ready, so the studio has nothing to offer"
		case w.counters.Done+w.counters.Failed == 0:
			return StateIdle, "no jobs for your models yet"
		}
		return StateIdle, "waiting for the next job"
	case SessionRetrying:
		if w.sess.Detail != "" {
			return StateConnecting, w.sess.Detail
		}
		return StateConnecting, fmt.Sprintf("studio unreachable, retrying in %d s", int(w.sess.RetryIn.Round(time.Second)/time.Second))
	case SessionConnecting:
		return StateConnecting, "connecting to the studio"
	}
	return StateStarting, "starting"
}

// ---- helpers ----

// formatGB prints 12 as "12" and 7.5 as "7.5".
func formatGB(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

func joinKinds(ks []engine.TaskKind) string {
	out := ""
	for i, k := range ks {
		if i > 0 {
			out += ", "
		}
		out += string(k)
	}
	return out
}

// defaultExt is the task's own ext when the engine left Ext empty.
func defaultExt(t *engine.Task) string {
	switch {
	case t.Image != nil && t.Image.Ext != "":
		return t.Image.Ext
	case t.TTS != nil && t.TTS.Ext != "":
		return t.TTS.Ext
	case t.Video != nil && t.Video.Ext != "":
		return t.Video.Ext
	case t.Kind == engine.KindImage:
		return engine.DefaultImageExt
	}
	return "bin"
}
