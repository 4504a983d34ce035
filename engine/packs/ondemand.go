package packs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	"github.com/minisgg/studio-worker/engine"
)

// Reloadable is an engine whose runtime can be looked for again: an
// engine/host.Client, whose Reload starts a fresh child.
type Reloadable interface {
	engine.Engine
	// LoadError says why the engine serves nothing (nil when it serves).
	LoadError() error
	// Reload makes the engine look for its runtime again.
	Reload(ctx context.Context) error
}

// OnDemand is an engine whose runtime is fetched as a pack on its first
// job when it is missing: the job waits, its progress saying "downloading
// the image runtime (23 of 80 MB)", while the pack is downloaded, checked,
// unpacked and tried; then the engine is reloaded and runs the job. A
// failure fails the job as retryable (another worker, or this one later,
// can run it), saying why. While the runtime is missing, the engine
// advertises the kinds it would run only once the feed is known to hold a
// pack this computer can run (Probe), so that no offer is taken that no
// pack could serve.
type OnDemand struct {
	inner   Reloadable
	inst    *Installer
	runtime string
	kinds   []engine.TaskKind
	what    string // "the image runtime"
	log     *slog.Logger

	mu        sync.Mutex
	available bool  // the feed holds a pack this computer can run
	probeErr  error // why not, from the last Probe
}

// NewOnDemand wraps inner, whose runtime is runtime (engine.RuntimeLlama
// or engine.RuntimeSD) and which serves kinds once that runtime is in
// place; what names the runtime in a donor's words ("the image runtime").
func NewOnDemand(inner Reloadable, inst *Installer, runtime string, kinds []engine.TaskKind, what string, log *slog.Logger) *OnDemand {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &OnDemand{inner: inner, inst: inst, runtime: runtime, kinds: kinds, what: what, log: log}
}

// Probe reads the feed and says whether it holds a pack of the runtime
// this computer can run; after a nil answer, and while the runtime is
// missing, Kinds advertises the kinds it would serve. It downloads no pack.
func (o *OnDemand) Probe(ctx context.Context) error {
	m, err := o.inst.fetchFeed(ctx)
	if err == nil {
		_, err = Choose(m.Packs, o.runtime, o.inst.cfg.Machine)
	}
	o.mu.Lock()
	o.available, o.probeErr = err == nil, err
	o.mu.Unlock()
	return err
}

// Missing says whether the engine's runtime is missing (it serves nothing).
func (o *OnDemand) Missing() bool { return len(o.inner.Kinds()) == 0 }

// Name implements engine.Engine.
func (o *OnDemand) Name() engine.EngineName { return o.inner.Name() }

// Kinds implements engine.Engine: the engine's own kinds; while its
// runtime is missing, the kinds a pack would bring once Probe found one.
func (o *OnDemand) Kinds() []engine.TaskKind {
	if k := o.inner.Kinds(); len(k) > 0 {
		return k
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.available {
		return slices.Clone(o.kinds)
	}
	return nil
}

// Run implements engine.Engine, fetching the runtime first when it is
// missing (see OnDemand).
func (o *OnDemand) Run(ctx context.Context, job engine.Job, progress engine.ProgressFunc) (engine.Result, error) {
	if progress == nil {
		progress = func(engine.Progress) {}
	}
	if o.Missing() && slices.Contains(o.Kinds(), job.Task.Kind) {
		if err := o.fetch(ctx, job, progress); err != nil {
			return engine.Result{}, err
		}
	}
	return o.inner.Run(ctx, job, progress)
}

// fetch installs the runtime's pack as part of job's setup and reloads
// the engine.
func (o *OnDemand) fetch(ctx context.Context, job engine.Job, progress engine.ProgressFunc) error {
	o.log.Info(fmt.Sprintf("%s is not installed; fetching it for job %s", o.what, job.ID), "op", "packs", "job", job.ID)
	last := ""
	rec, err := o.inst.Ensure(ctx, o.runtime, Options{}, func(p Progress) {
		// One report per megabyte (and the last): the download reports
		// every 64 KiB, and each report redraws the window.
		note := fmt.Sprintf("downloading %s (%s of %s)", o.what, mbShort(p.Done), mb(p.Total))
		if note == last && p.Done != p.Total {
			return
		}
		last = note
		progress(engine.Progress{Phase: engine.PhaseRuntime, Done: p.Done, Total: p.Total, Note: note})
	})
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, ErrNoPack) {
			// The feed changed since Probe: stop advertising the kinds.
			o.mu.Lock()
			o.available, o.probeErr = false, err
			o.mu.Unlock()
		}
		return &FetchError{What: o.what, Err: err}
	}
	progress(engine.Progress{Phase: engine.PhaseLoad, Note: "starting " + o.what})
	if err := o.inner.Reload(ctx); err != nil {
		return &FetchError{What: o.what, Err: fmt.Errorf("%s was installed in %s but did not load: %w", rec.Describe(), rec.Dir, err)}
	}
	if rec.Problem != "" {
		o.log.Warn(rec.Problem, "op", "packs")
	}
	return nil
}

// FetchError is a job's failure to fetch the runtime it needs. It is
// retryable (not an engine.JobError): the job itself is fine.
type FetchError struct {
	What string // "the image runtime"
	Err  error
}

func (e *FetchError) Error() string { return e.What + " could not be fetched: " + e.Err.Error() }
func (e *FetchError) Unwrap() error { return e.Err }

// Release implements engine.Engine.
func (o *OnDemand) Release() error { return o.inner.Release() }

// ResidentVRAMBytes implements engine.Engine.
func (o *OnDemand) ResidentVRAMBytes() uint64 { return o.inner.ResidentVRAMBytes() }

// Held reports what the inner engine holds, when it can say.
func (o *OnDemand) Held() engine.Held {
	if h, ok := o.inner.(interface{ Held() engine.Held }); ok {
		return h.Held()
	}
	return engine.Held{Engine: o.Name(), VRAMBytes: o.ResidentVRAMBytes()}
}

// mbShort is a byte count in MB without the unit, for "23 of 80 MB".
func mbShort(n int64) string { return fmt.Sprintf("%.0f", float64(n)/(1<<20)) }
