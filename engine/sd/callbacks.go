package sd

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/minisgg/studio-worker/engine"
)

// The library has one log callback and one progress callback for the whole
// process, and purego callbacks are never freed, so both are made once and
// route through a package-level registry to whichever job is running now
// (at most one: runSlot serialises them).

// jobSink is where the library's callbacks go while one job runs.
type jobSink struct {
	ctx      context.Context
	log      *slog.Logger
	progress engine.ProgressFunc
	phase    atomic.Value // engine.Phase
	// stop re-asks the library to stop (see onProgress); set once the
	// context is loaded, read from the library's thread.
	stop atomic.Pointer[func()]
	// firstError is the library's first error line during the job: the
	// root cause that its error returns do not carry.
	firstError atomic.Pointer[string]
	// paramsBytes is what the library said it allocated for the model's
	// weights while loading ("total params memory size = … MB"), 0 if
	// it said nothing.
	paramsBytes atomic.Uint64
	// aligned is set when the library announces it will round the
	// requested size up; the generation is stopped then.
	aligned atomic.Pointer[alignment]
}

type alignment struct{ w, h, multiple int }

// The library's log lines the engine acts on (stable-diffusion.cpp at the
// pinned release).
var (
	paramsLine = regexp.MustCompile(`^total params memory size = ([0-9.]+)MB`)
	alignLine  = regexp.MustCompile(`^align generation request up \d+x\d+ to (\d+)x(\d+) \(multiple=(\d+)\)`)
)

// watch reads one library log line for the facts above.
func (s *jobSink) watch(msg string) {
	if m := paramsLine.FindStringSubmatch(msg); m != nil {
		if mb, err := strconv.ParseFloat(m[1], 64); err == nil && mb > 0 {
			s.paramsBytes.Store(uint64(mb * (1 << 20)))
		}
		return
	}
	if m := alignLine.FindStringSubmatch(msg); m != nil {
		w, _ := strconv.Atoi(m[1])
		h, _ := strconv.Atoi(m[2])
		mult, _ := strconv.Atoi(m[3])
		s.aligned.Store(&alignment{w: w, h: h, multiple: mult})
		if stop := s.stop.Load(); stop != nil {
			(*stop)()
		}
	}
}

// explain adds the library's own first error line to err.
func (s *jobSink) explain(err error) error {
	if m := s.firstError.Load(); m != nil {
		return fmt.Errorf("%w: %s", err, *m)
	}
	return err
}

func (s *jobSink) setPhase(p engine.Phase) { s.phase.Store(p) }

var (
	activeSink  atomic.Pointer[jobSink]
	fallbackLog atomic.Pointer[slog.Logger]

	callbacksOnce sync.Once
	logCB         uintptr
	progressCB    uintptr
)

// runSlot admits one library call sequence (load, generate, free) at a time
// in the whole process, because the callbacks above are process-wide.
var runSlot = make(chan struct{}, 1)

func installCallbacks(l *Library) {
	callbacksOnce.Do(func() {
		logCB = newLogCallback()
		progressCB = newProgressCallback()
	})
	l.setLogCallback(logCB, 0)
	l.setProgressCB(progressCB, 0)
}

// logCallback is sd_log_cb_t,
// void (*)(enum sd_log_level_t level, const char *text, void *data), and
// progressCallback is sd_progress_cb_t,
// void (*)(int step, int steps, float time, void *data), each in the one
// shape that is a valid callback on Windows x64, System V and Apple arm64
// (see internal/ccallback): a uintptr result, which Windows requires and a C
// caller expecting void ignores, and the trailing arguments left out (the
// caller owns them), so that no float parameter is declared — Windows x64
// callbacks cannot take one.
func logCallback(level int32, text *byte) uintptr {
	onLog(level, text)
	return 0
}

func progressCallback(step, steps int32) uintptr {
	onProgress(step, steps)
	return 0
}

// onLog receives one line of the library's log. It runs on a C thread: it
// must not panic, and it must not block.
func onLog(level int32, text *byte) {
	defer func() { _ = recover() }()
	msg := strings.TrimRight(goString(text), "\r\n")
	if msg == "" {
		return
	}
	// Lines come as "file.cpp:123  - message" (the line number padded).
	src := ""
	if i := strings.Index(msg, " - "); i > 0 {
		head := strings.TrimRight(msg[:i], " ")
		if strings.Contains(head, ":") && !strings.ContainsAny(head, " \t") {
			src, msg = head, msg[i+3:]
		}
	}
	lg := fallbackLog.Load()
	ctx := context.Background()
	if s := activeSink.Load(); s != nil {
		if level == logError {
			m := msg
			s.firstError.CompareAndSwap(nil, &m)
		}
		s.watch(msg)
		if s.log != nil {
			lg = s.log
		}
	}
	if lg == nil {
		return
	}
	lvl := slog.LevelInfo
	switch level {
	case logDebug:
		lvl = slog.LevelDebug
	case logWarn:
		lvl = slog.LevelWarn
	case logError:
		lvl = slog.LevelError
	}
	if !lg.Enabled(ctx, lvl) {
		return
	}
	if src != "" {
		lg.Log(ctx, lvl, msg, "op", "sd-cpp", "src", src)
	} else {
		lg.Log(ctx, lvl, msg, "op", "sd-cpp")
	}
}

// onProgress receives the library's progress: tensors loaded while a model
// loads, sampling steps while an image is made.
func onProgress(step, steps int32) {
	defer func() { _ = recover() }()
	s := activeSink.Load()
	if s == nil {
		return
	}
	// The library clears a pending cancel when a generation starts, so a
	// cancel that raced with that start is repeated here, at the next step.
	if (s.ctx != nil && s.ctx.Err() != nil) || s.aligned.Load() != nil {
		if stop := s.stop.Load(); stop != nil {
			(*stop)()
		}
	}
	if s.progress == nil || steps <= 0 || step < 0 {
		return
	}
	phase, _ := s.phase.Load().(engine.Phase)
	if phase == "" {
		phase = engine.PhaseGenerate
	}
	s.progress(engine.Progress{Phase: phase, Done: int64(step), Total: int64(steps)})
}
