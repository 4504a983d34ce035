// Package sd runs `image` jobs with stable-diffusion.cpp, through our own
// purego binding to its C API (no cgo). The binding is written for one
// sd.cpp release (PinnedVersion) and refuses any other library at load time.
package sd

import (
	"context"
	"errors"
	"fmt"
	"image"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/minisgg/studio-worker/engine"
)

// Config says where the library is and how to run it.
type Config struct {
	// LibPath is the libstable-diffusion shared library, or the folder
	// holding it (settings' sd_lib_path). Empty: FindLib's other places
	// (STUDIO_WORKER_SD_LIB, lib/ next to the program, a source tree's
	// runtime/sd/<variant>/); when none has it, the engine advertises nothing.
	LibPath string
	// Threads for the CPU parts of generation; 0 means max(1, cores-1)
	// (using every core stalls when anything else wants one).
	Threads int
	// Log receives the engine's and the library's log lines.
	Log *slog.Logger
}

// backend is the slice of the library the engine uses; tests substitute a
// double for it.
type backend interface {
	newContext(s ctxSpec) (uintptr, error)
	freeContext(h uintptr)
	generate(h uintptr, s genSpec) (*image.NRGBA, error)
	cancel(h uintptr)
}

// Engine is the sd-cpp engine.
type Engine struct {
	log     *slog.Logger
	threads int
	lib     *Library // nil when not loaded
	found   Found    // where lib came from
	b       backend  // nil when not loaded
	loadErr error

	// warm is the loaded context, kept between jobs with the same files;
	// only touched while holding runSlot.
	warm     *warmContext
	resident atomic.Uint64
}

type warmContext struct {
	key    string
	handle uintptr
	bytes  uint64
}

// New loads the library FindLib(cfg.LibPath) finds. It never fails:
// without a usable library the engine reports no kinds, and LoadError and
// the log (once) say why.
func New(cfg Config) *Engine {
	e := newEngine(cfg)
	found, err := FindLib(cfg.LibPath)
	if err != nil {
		e.loadErr = fmt.Errorf("%w; image jobs are not offered", err)
		e.log.Info("image engine off", "op", "sd-cpp", "reason", e.loadErr.Error())
		return e
	}
	lib, err := Open(found.Path)
	if err != nil {
		e.loadErr = fmt.Errorf("%w; image jobs are not offered", err)
		e.log.Warn("image engine off", "op", "sd-cpp", "reason", e.loadErr.Error())
		return e
	}
	e.lib, e.b, e.found = lib, lib, found
	fallbackLog.Store(e.log)
	e.log.Info("image engine ready", "op", "sd-cpp", "library", lib.Path(), "from", found.From,
		"version", lib.Version(), "commit", lib.Commit())
	return e
}

func newEngine(cfg Config) *Engine {
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	threads := cfg.Threads
	if threads <= 0 {
		threads = max(1, runtime.NumCPU()-1)
	}
	return &Engine{log: log, threads: threads}
}

// LoadError says why the engine is off; nil when the library is loaded.
func (e *Engine) LoadError() error { return e.loadErr }

// Library is the loaded library, nil when the engine is off.
func (e *Engine) Library() *Library { return e.lib }

// Found says where the loaded library was found (zero when the engine is
// off).
func (e *Engine) Found() Found { return e.found }

// Name implements engine.Engine.
func (e *Engine) Name() engine.EngineName { return engine.EngineSDCpp }

// Kinds implements engine.Engine: image, only when the library loaded.
func (e *Engine) Kinds() []engine.TaskKind {
	if e.b == nil {
		return nil
	}
	return []engine.TaskKind{engine.KindImage}
}

// ResidentVRAMBytes implements engine.Engine. The library does not report
// its memory use; the loaded model files' sizes stand for what releasing
// would give back (weights dominate it).
func (e *Engine) ResidentVRAMBytes() uint64 { return e.resident.Load() }

// Release implements engine.Engine: it frees the warm context, waiting for
// a running job to finish first.
func (e *Engine) Release() error {
	if e.b == nil {
		return nil
	}
	runSlot <- struct{}{}
	defer func() { <-runSlot }()
	e.dropWarm()
	return nil
}

func (e *Engine) dropWarm() {
	if e.warm != nil {
		e.b.freeContext(e.warm.handle)
		e.warm = nil
		e.resident.Store(0)
	}
}

// Run implements engine.Engine: one txt2img job.
func (e *Engine) Run(ctx context.Context, job engine.Job, progress engine.ProgressFunc) (engine.Result, error) {
	if job.Task.Kind != engine.KindImage || job.Task.Image == nil {
		return engine.Result{}, &engine.CannotServeError{Engine: string(engine.EngineSDCpp), Kind: job.Task.Kind}
	}
	if err := job.Validate(); err != nil {
		return engine.Result{}, err // text the library cannot take: not retryable
	}
	if e.b == nil {
		return engine.Result{}, cannotServe(e.loadErr.Error())
	}
	if err := ctx.Err(); err != nil {
		return engine.Result{}, fmt.Errorf("image job not started: %w", err)
	}
	cspec, err := contextSpec(job.Files, job.Source.CliDefaults, e.threads)
	if err != nil {
		return engine.Result{}, err
	}
	gspec, notes, err := resolveImage(job.Task.Image, job.Source.CliDefaults, cspec.LoRAFiles, randomSeed)
	if err != nil {
		return engine.Result{}, err
	}
	log := e.log.With("job", job.ID, "model", job.Model)
	for _, n := range notes {
		log.Warn(n, "op", "sd-cpp")
	}
	if err := fetchInputs(ctx, &gspec, progress, log); err != nil {
		return engine.Result{}, err
	}

	select {
	case runSlot <- struct{}{}:
	case <-ctx.Done():
		return engine.Result{}, fmt.Errorf("image job not started: %w", ctx.Err())
	}
	defer func() { <-runSlot }()

	sink := &jobSink{ctx: ctx, log: log, progress: progress}
	activeSink.Store(sink)
	defer activeSink.CompareAndSwap(sink, nil)

	if err := e.ensureContext(ctx, cspec, sink, log); err != nil {
		return engine.Result{}, err
	}
	h := e.warm.handle
	stop := func() { e.b.cancel(h) }
	sink.stop.Store(&stop)
	sink.setPhase(engine.PhaseGenerate)
	if progress != nil {
		progress(engine.Progress{Phase: engine.PhaseGenerate, Done: 0, Total: int64(gspec.Steps)})
	}

	log.Info("generating image", "op", "sd-cpp", "width", gspec.Width, "height", gspec.Height,
		"steps", gspec.Steps, "sampler", orDefault(gspec.SamplerName), "cfg_scale", numOrDefault(gspec.CfgScale),
		"seed", gspec.Seed, "loras", len(gspec.LoRAs), "ext", gspec.Ext)
	start := time.Now()
	img, err := e.generate(ctx, h, gspec)
	if ctx.Err() != nil {
		return engine.Result{}, fmt.Errorf("image generation cancelled: %w", ctx.Err())
	}
	if a := sink.aligned.Load(); a != nil {
		// The library would have rounded the size up and said so only in
		// its log; the engine stopped it instead of delivering another size.
		return engine.Result{}, engine.Invalid("width", "this model makes images whose sides are multiples of %d pixels: "+
			"asked for %dx%d, it would have made %dx%d; ask for a multiple of %d", a.multiple, gspec.Width, gspec.Height, a.w, a.h, a.multiple)
	}
	if err != nil {
		return engine.Result{}, sink.explain(err)
	}
	genTime := time.Since(start)
	if b := img.Rect; b.Dx() != gspec.Width || b.Dy() != gspec.Height {
		return engine.Result{}, engine.Invalid("width", "stable-diffusion.cpp made a %dx%d image for a %dx%d request; refusing to deliver another size",
			b.Dx(), b.Dy(), gspec.Width, gspec.Height)
	}

	out, err := encodeImage(img, gspec.Ext)
	if err != nil {
		return engine.Result{}, err
	}
	log.Info("image done", "op", "sd-cpp", "seed", gspec.Seed, "width", img.Rect.Dx(), "height", img.Rect.Dy(),
		"seconds", genTime.Seconds(), "bytes", len(out), "ext", gspec.Ext)
	return engine.Result{Bytes: out, Ext: gspec.Ext, Stats: engine.Stats{Images: 1}}, nil
}

// ensureContext makes the warm context the one this job needs. Loading
// cannot be interrupted inside the library; a cancel that arrives meanwhile
// is honoured as soon as it returns (the loaded model stays warm).
func (e *Engine) ensureContext(ctx context.Context, s ctxSpec, sink *jobSink, log *slog.Logger) error {
	key := s.key()
	if e.warm != nil && e.warm.key == key {
		return nil
	}
	e.dropWarm()
	for _, p := range s.paths() {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("model file missing: %w", err)
		}
	}
	// The library's own GGUF reader aborts the whole process on some
	// malformed headers (a tensor count the file does not hold ends in an
	// uncaught std::length_error), so every file's structure is checked
	// here first; a file that fails is the job's bad model file.
	for role, p := range s.roles() {
		if err := engine.CheckModelContent(p, engine.EngineSDCpp, role); err != nil {
			var je *engine.JobError
			if errors.As(err, &je) {
				return &engine.JobError{Field: je.Field, Reason: je.Reason, Err: &engine.ModelFileError{Path: p, Reason: je.Reason}}
			}
			return fmt.Errorf("reading model file %s: %w", filepath.Base(p), err)
		}
	}
	sink.setPhase(engine.PhaseLoad)
	if sink.progress != nil {
		sink.progress(engine.Progress{Phase: engine.PhaseLoad})
	}
	log.Info("loading image model", "op", "sd-cpp", "files", len(s.paths()), "threads", s.Threads)
	start := time.Now()
	h, err := e.b.newContext(s)
	if err != nil {
		return modelFileError(s, sink.explain(err))
	}
	// What the library says it allocated for the weights; the files' sizes
	// only when it said nothing (they understate it: sd.cpp expands
	// quantised embeddings and keeps convolutions in F16).
	size := sink.paramsBytes.Load()
	source := "library"
	if size == 0 {
		source = "file sizes"
		for _, p := range s.paths() {
			if fi, err := os.Stat(p); err == nil {
				size += uint64(fi.Size())
			}
		}
	}
	e.warm = &warmContext{key: key, handle: h, bytes: size}
	e.resident.Store(size)
	log.Info("image model loaded", "op", "sd-cpp", "seconds", time.Since(start).Seconds(),
		"resident_mb", float64(size)/(1<<20), "resident_from", source)
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("image job cancelled while the model loaded: %w", err)
	}
	return nil
}

// generate runs the library call, asking it to stop when ctx ends. The
// watcher is joined before returning, so a cancel never reaches a context
// that is being freed.
func (e *Engine) generate(ctx context.Context, h uintptr, s genSpec) (*image.NRGBA, error) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-ctx.Done():
			e.b.cancel(h)
		case <-done:
		}
	}()
	img, err := e.b.generate(h, s)
	close(done)
	wg.Wait()
	return img, err
}

// modelFileError makes a failed load the job's failure, naming the model
// file (the one the library's message names, else the main one), so the
// runner discards the file and the next offer downloads it again.
func modelFileError(s ctxSpec, err error) error {
	paths := s.paths()
	path := paths[0]
	for _, p := range paths {
		if strings.Contains(err.Error(), p) {
			path = p
		}
	}
	reason := strings.TrimPrefix(err.Error(), errLoadFailed.Error()+": ")
	return &engine.JobError{Field: filepath.Base(path), Reason: err.Error(), Err: &engine.ModelFileError{Path: path, Reason: reason}}
}

// fetchInputs downloads and decodes the job's input images and fits them
// to the request: without an explicit size an init image sets it; a mask
// must be the init image's size; both are then scaled to the output size.
func fetchInputs(ctx context.Context, s *genSpec, progress engine.ProgressFunc, log *slog.Logger) error {
	if s.InitURL == "" && s.RefURL == "" {
		return nil
	}
	if progress != nil {
		progress(engine.Progress{Phase: engine.PhaseDownload})
	}
	if s.RefURL != "" {
		img, err := fetchInput(ctx, "refImageUrl", s.RefURL)
		if err != nil {
			return err
		}
		b := img.Bounds()
		s.Refs = []cImageData{toRGB(img, b.Dx(), b.Dy())}
		log.Info("reference image", "op", "sd-cpp", "width", b.Dx(), "height", b.Dy())
		return nil
	}
	init, err := fetchInput(ctx, "initImageUrl", s.InitURL)
	if err != nil {
		return err
	}
	ib := init.Bounds()
	if !s.SizeGiven {
		s.Width, s.Height = ib.Dx(), ib.Dy()
		if err := checkSize(s.Width, s.Height); err != nil {
			return engine.Invalid("initImageUrl", "the init image sets the size and %v", err)
		}
	}
	var mask image.Image
	if s.MaskURL != "" {
		if mask, err = fetchInput(ctx, "maskUrl", s.MaskURL); err != nil {
			return err
		}
		if mb := mask.Bounds(); mb.Dx() != ib.Dx() || mb.Dy() != ib.Dy() {
			return engine.Invalid("maskUrl", "the mask is %dx%d but the init image is %dx%d; they must be the same size",
				mb.Dx(), mb.Dy(), ib.Dx(), ib.Dy())
		}
	}
	if ib.Dx() != s.Width || ib.Dy() != s.Height {
		log.Info("init image scaled to the requested size", "op", "sd-cpp", "from", fmt.Sprintf("%dx%d", ib.Dx(), ib.Dy()),
			"to", fmt.Sprintf("%dx%d", s.Width, s.Height))
	}
	in := toRGB(init, s.Width, s.Height)
	s.Init = &in
	if mask != nil {
		m := toMask(mask, s.Width, s.Height)
		s.Mask = &m
	}
	return nil
}

// randomSeed picks a seed for a job that gave none; it stays below 2^53 so
// that it survives a trip through JSON numbers intact.
func randomSeed() int64 { return rand.Int64N(1 << 53) }

func numOrDefault(v float64) any {
	if math.IsNaN(v) {
		return "model default"
	}
	return v
}

func orDefault(s string) string {
	if s == "" {
		return "model default"
	}
	return s
}
