package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime/debug"
	"sort"
	"sync"
	"time"
)

// DefaultVRAMCacheTTL is how long a GPU probe result is reused. Probing runs
// a program (nvidia-smi), so it is done on demand and briefly cached, never
// in a polling loop.
const DefaultVRAMCacheTTL = 2 * time.Second

// RunnerConfig wires a Runner.
type RunnerConfig struct {
	Store    *Store
	Engines  []Engine
	BudgetGB func() float64 // the donor's VRAM budget, read on every admission
	Probe    GPUProbe       // nil: NewSystemProbe with defaults
	Log      *slog.Logger
	// VRAMCacheTTL: 0 means DefaultVRAMCacheTTL.
	VRAMCacheTTL time.Duration
	// Now is the clock for the probe cache; nil means time.Now.
	Now func() time.Time
}

// Runner is the engine side of the worker: it admits offers against the
// budget and the GPU, fetches model files through the store, makes room
// among resident models, and routes each job to its engine. It implements
// the studio worker's JobRunner.
type Runner struct {
	router *Router
	budget func() float64
	probe  GPUProbe
	log    *slog.Logger
	ttl    time.Duration
	now    func() time.Time

	probeMu  sync.Mutex // one probe at a time; callers share its result
	cacheMu  sync.Mutex
	cached   VRAMInfo
	cachedAt time.Time
	haveVRAM bool

	estMu     sync.Mutex
	estimates map[string]float64 // last admitted estimate by engine+model

	storeMu sync.Mutex
	store   *Store

	// crashes count engine-process crashes by job id and by model file
	// for the poison rule (see Run).
	crashMu    sync.Mutex
	crashJobs  map[string]int
	crashFiles map[string]int

	// lastFiles are the model files of the last job each engine ran: what
	// it holds when it says it holds something but not what (disk budget).
	lastMu    sync.Mutex
	lastFiles map[EngineName][]string
}

// NewRunner builds a Runner. Store and BudgetGB are required.
func NewRunner(cfg RunnerConfig) *Runner {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	probe := cfg.Probe
	if probe == nil {
		probe = NewSystemProbe(SystemProbeOptions{Log: log})
	}
	ttl := cfg.VRAMCacheTTL
	if ttl <= 0 {
		ttl = DefaultVRAMCacheTTL
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	budget := cfg.BudgetGB
	if budget == nil {
		budget = func() float64 { return 0 }
	}
	r := &Runner{
		router: NewRouter(cfg.Engines...), store: cfg.Store, budget: budget, probe: probe,
		log: log, ttl: ttl, now: now, estimates: map[string]float64{},
		crashJobs: map[string]int{}, crashFiles: map[string]int{}, lastFiles: map[EngineName][]string{},
	}
	if cfg.Store != nil {
		cfg.Store.setResident(r.residentModelPaths)
	}
	return r
}

// residentModel is an engine that can say which model file it holds
// (engine/llama).
type residentModel interface{ ResidentModel() string }

// residentModelPaths lists the model files the engines hold in memory now,
// for the disk budget, which never evicts them. An engine that holds
// something without saying what (its process runs, or it reports resident
// memory) is taken to hold the files of the last job it ran.
func (r *Runner) residentModelPaths() []string {
	var out []string
	for _, e := range r.router.Engines() {
		var model string
		var holding bool
		if hr, ok := e.(heldReporter); ok {
			h := hr.Held()
			model, holding = h.Model, h.PID != 0 || h.Bytes > 0 || h.VRAMBytes > 0
		} else {
			if rm, ok := e.(residentModel); ok {
				model = rm.ResidentModel()
			}
			holding = e.ResidentVRAMBytes() > 0
		}
		switch {
		case model != "":
			out = append(out, model)
		case holding:
			r.lastMu.Lock()
			out = append(out, r.lastFiles[e.Name()]...)
			r.lastMu.Unlock()
		}
	}
	return out
}

// Router is the runner's router (for the UI: which engines are loaded).
func (r *Runner) Router() *Router { return r.router }

// Store is the model store the runner downloads through now.
func (r *Runner) Store() *Store {
	r.storeMu.Lock()
	defer r.storeMu.Unlock()
	return r.store
}

// SetStore makes the next jobs use s (the donor chose another models
// folder) and returns the store used until now. A job already running
// keeps the store it started with to its end, so its files stay in one
// folder; the caller should Sync the old store before the process exits.
func (r *Runner) SetStore(s *Store) (old *Store) {
	r.storeMu.Lock()
	defer r.storeMu.Unlock()
	old, r.store = r.store, s
	if s != nil {
		s.setResident(r.residentModelPaths)
	}
	return old
}

// Kinds lists the task kinds some loaded engine can run.
func (r *Runner) Kinds() []TaskKind { return r.router.Kinds() }

// SupportedModels is the advertised per-kind model list.
func (r *Runner) SupportedModels() map[TaskKind][]string {
	var local []string
	if st := r.Store(); st != nil {
		local = st.LocalGGUF()
	}
	return r.router.SupportedModels(local)
}

// VRAM is what is known about GPU memory now (a briefly cached probe).
func (r *Runner) VRAM() VRAMInfo {
	if v, ok := r.cachedVRAM(); ok {
		return v
	}
	r.probeMu.Lock()
	defer r.probeMu.Unlock()
	// Another caller may have probed while this one waited.
	if v, ok := r.cachedVRAM(); ok {
		return v
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	v := r.probe.Probe(ctx)
	cancel()
	r.cacheMu.Lock()
	r.cached, r.cachedAt, r.haveVRAM = v, r.now(), true
	r.cacheMu.Unlock()
	return v
}

// cachedVRAM is the last probe while it is fresh.
func (r *Runner) cachedVRAM() (VRAMInfo, bool) {
	r.cacheMu.Lock()
	defer r.cacheMu.Unlock()
	if r.haveVRAM && r.now().Sub(r.cachedAt) < r.ttl {
		return r.cached, true
	}
	return VRAMInfo{}, false
}

// forgetVRAM drops the cached probe after something changed GPU memory.
func (r *Runner) forgetVRAM() {
	r.cacheMu.Lock()
	r.haveVRAM = false
	r.cacheMu.Unlock()
}

func estimateKey(e EngineName, model string) string { return string(e) + "\x00" + model }

// Admit says whether an offer can run here; the error's text is the
// donor-facing reason (a *CannotServeError, *OverBudgetError,
// *NotEnoughVRAMError or *DiskBudgetError).
func (r *Runner) Admit(a Admission) error {
	if _, err := r.router.Route(a.Engine, a.Kind); err != nil {
		return err
	}
	if a.VRAMGB < 0 {
		return fmt.Errorf("the studio sent a negative memory estimate (%g GB) for %s", a.VRAMGB, a.Model)
	}
	if err := checkBudget(a.VRAMGB, r.budget()); err != nil {
		return err
	}
	v := r.VRAM()
	if !v.Known {
		r.log.Debug("GPU memory is unknown; admitting on the budget alone", "op", "admit", "model", a.Model, "need_gb", a.VRAMGB)
	} else if err := checkFree(a.VRAMGB, usableFree(v, a.Kind), r.ResidentVRAMBytes()); err != nil {
		return err
	}
	// The disk budget's preflight: a model that cannot fit the models
	// folder is turned down before accept, so that the studio offers the
	// job elsewhere without counting an attempt.
	if st := r.Store(); st != nil && len(a.Files) > 0 {
		if err := st.CheckRoom(a.Model, a.Files); err != nil {
			return err
		}
	}
	r.estMu.Lock()
	r.estimates[estimateKey(a.Engine, a.Model)] = a.VRAMGB
	r.estMu.Unlock()
	return nil
}

// ResidentVRAMBytes is the GPU memory the engines' resident models hold
// (what releasing them all would give back); the worker shows it as the
// memory Studio Worker has in use.
func (r *Runner) ResidentVRAMBytes() uint64 {
	var sum uint64
	for _, e := range r.router.Engines() {
		sum += e.ResidentVRAMBytes()
	}
	return sum
}

// Run fetches the job's files, makes room among resident models and runs
// the job on the engine its modelSource names. A job that fails
// Job.Validate is refused before anything is downloaded. IsRetryable
// classifies the error: a *CannotServeError or *JobError cannot succeed on
// a retry; any other error is worth one.
func (r *Runner) Run(ctx context.Context, job Job, progress ProgressFunc) (res Result, err error) {
	if progress == nil {
		progress = func(Progress) {}
	}
	eng, err := r.router.Route(job.Source.Engine, job.Task.Kind)
	if err != nil {
		return Result{}, err
	}
	if err := job.Validate(); err != nil {
		return Result{}, err // before any download: the job can never succeed
	}
	// One store for the whole job, even if the models folder changes
	// meanwhile.
	store := r.Store()
	if store == nil {
		return Result{}, errors.New("the worker has no models folder configured")
	}
	release := store.Use(job.Model)
	defer release()
	log := r.log.With("job", job.ID, "model", job.Model)

	var files map[FileRole]string
	if len(job.Source.Files) == 0 && len(job.Files) > 0 {
		// A local request for a model on disk (LocalModel.Job).
		files, err = localFiles(store, eng.Name(), job.Files)
	} else {
		files, err = store.EnsureSource(ctx, job.Model, job.Source, progress)
	}
	if err != nil {
		return Result{}, err
	}
	if _, ok := files[RoleModel]; !ok && len(job.Source.Files) == 0 && eng.Name() == EngineLlamaCpp {
		// An advertised local GGUF placed straight in the models folder.
		if p, ok := store.LooseGGUF(job.Model); ok {
			// The donor's own file: checked before llama.cpp opens it, but
			// never deleted.
			if err := CheckModelContent(p, EngineLlamaCpp, RoleModel); err != nil {
				return Result{}, fmt.Errorf("the GGUF file %s in the models folder is not a usable model: %w", p, err)
			}
			files[RoleModel] = p
		}
	}
	if len(files) == 0 {
		return Result{}, fmt.Errorf("the offer for %s lists no model files and no such model is stored on this worker", job.Model)
	}
	job.Files = files
	held := make([]string, 0, len(files))
	for _, p := range files {
		held = append(held, p)
	}
	r.lastMu.Lock()
	r.lastFiles[eng.Name()] = held
	r.lastMu.Unlock()

	r.makeRoom(log, eng, job)

	defer func() {
		if p := recover(); p != nil {
			log.Error("engine crashed", "op", "run", "engine", eng.Name(), "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			res, err = Result{}, fmt.Errorf("the %s engine crashed: %v", eng.Name(), p)
		}
		r.forgetVRAM()
	}()
	res, err = eng.Run(ctx, job, progress)
	var mfe *ModelFileError
	if errors.As(err, &mfe) {
		if derr := store.Discard(mfe.Path); derr != nil {
			log.Warn("could not remove a model file that failed to load", "op", "store", "path", mfe.Path, "err", derr)
		} else {
			log.Warn("removed a model file that failed to load; the next offer downloads it again", "op", "store", "path", mfe.Path, "why", mfe.Reason)
		}
	}
	var ce *CrashError
	if errors.As(err, &ce) {
		err = r.noteCrash(log, store, job, ce)
	}
	return res, err
}

// PoisonCrashes is how many crashes of an engine's process make a job, or
// a model file, poison: its next crash fails it for good.
const PoisonCrashes = 2

// noteCrash applies the poison rule (the design's "a crash is a failed
// job"): a job that has crashed an engine process PoisonCrashes times is
// failed as not retryable, since the studio would only hand it to the next
// worker to crash there; a model file that has, is deleted from the store
// (Store.Discard: re-downloaded and checked against its sha256 before any
// further use)
// and its job fails the same way. Other crashes stay retryable.
func (r *Runner) noteCrash(log *slog.Logger, store *Store, job Job, ce *CrashError) error {
	files := make([]string, 0, len(job.Files))
	for _, p := range job.Files {
		files = append(files, p)
	}
	sort.Strings(files)
	r.crashMu.Lock()
	if len(r.crashJobs) > 1000 { // bounded: old job ids are not coming back
		clear(r.crashJobs)
	}
	r.crashJobs[job.ID]++
	jobCrashes := r.crashJobs[job.ID]
	var poisoned []string
	for _, p := range files {
		r.crashFiles[p]++
		if r.crashFiles[p] >= PoisonCrashes {
			poisoned = append(poisoned, p)
			delete(r.crashFiles, p) // a fresh download starts counting again
		}
	}
	r.crashMu.Unlock()
	if jobCrashes < PoisonCrashes && len(poisoned) == 0 {
		return ce
	}
	var reason string
	for _, p := range poisoned {
		if err := store.Discard(p); err != nil {
			// A file the donor placed in the models folder is theirs: it
			// stays, and the job still fails for good.
			log.Warn("a model file crashed its engine twice and was left in place: "+err.Error(), "op", "poison", "file", p)
		} else {
			log.Warn("deleted a model file that crashed its engine twice; it is downloaded afresh and checked before any further use", "op", "poison", "file", p)
		}
		if reason == "" {
			reason = fmt.Sprintf("the model file %s has crashed %s twice, so it is not used again until it is downloaded afresh", filepath.Base(p), ce.What)
		}
	}
	if jobCrashes >= PoisonCrashes {
		reason = fmt.Sprintf("this job has crashed %s twice, so it is not tried again", ce.What)
	}
	if reason == "" {
		return ce
	}
	return &JobError{Reason: reason + ": " + ce.Error(), Err: ce}
}

// makeRoom releases other engines' resident models when the job would not
// fit beside them within the budget or the free GPU memory.
func (r *Runner) makeRoom(log *slog.Logger, eng Engine, job Job) {
	need := job.VRAMGB
	if need <= 0 {
		r.estMu.Lock()
		need = r.estimates[estimateKey(eng.Name(), job.Model)]
		r.estMu.Unlock()
	}
	var others []Engine
	for _, e := range r.router.Engines() {
		if e != eng {
			others = append(others, e)
		}
	}
	v := r.VRAM()
	var free uint64
	if v.Known {
		free = usableFree(v, job.Task.Kind)
	}
	plan := evictionPlan(need, r.budget(), others, v.Known, free, eng.ResidentVRAMBytes())
	for _, e := range plan {
		b := e.ResidentVRAMBytes()
		if err := e.Release(); err != nil {
			log.Warn("could not release a resident model", "op", "budget", "engine", e.Name(), "err", err)
			continue
		}
		log.Info("released a resident model to make room", "op", "budget", "engine", e.Name(), "freed", FormatGB(b), "need_gb", need)
	}
	if len(plan) > 0 {
		r.forgetVRAM()
	}
}

// stopper is an engine that runs in a process it can end (engine/host).
type stopper interface{ Stop() error }

// StopEngines ends every engine process now, whatever it is doing, which
// returns all the memory it held (the worker's "pause now"); a job running
// in one fails. Engines that run in this process release their resident
// models instead. The next job starts its engine again.
func (r *Runner) StopEngines() error {
	var errs []error
	for _, e := range r.router.Engines() {
		var err error
		if s, ok := e.(stopper); ok {
			err = s.Stop()
		} else {
			err = e.Release()
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", e.Name(), err))
		}
	}
	r.forgetVRAM()
	return errors.Join(errs...)
}

// ReleaseAll frees every engine's resident model (on pause or shutdown).
func (r *Runner) ReleaseAll() error {
	var errs []error
	for _, e := range r.router.Engines() {
		if err := e.Release(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", e.Name(), err))
		}
	}
	r.forgetVRAM()
	return errors.Join(errs...)
}
