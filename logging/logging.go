// Package logging gives the whole app one *slog.Logger that fans out to
// stderr (charmbracelet/log), a rotating file in the state folder, an
// in-memory ring for the Logs page and any number of extra sinks (the
// studio's logBatch queue is one). It is a leaf package.
//
// Stable attribute keys: "op" (what part of the worker speaks), "job" (the
// studio job id) and "model". Secrets (auth token, registration secret) are
// never logged; attributes under well-known secret keys are redacted as a
// second line of defence, and every URL in a message or a text or error
// attribute loses its query string and user info (RedactText).
package logging

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/adrg/xdg"
	charm "github.com/charmbracelet/log"
	"gopkg.in/natefinch/lumberjack.v2"
)

// Stable attribute keys.
const (
	KeyOp    = "op"
	KeyJob   = "job"
	KeyModel = "model"
)

// DefaultRingSize is how many entries the Logs page keeps.
const DefaultRingSize = 1000

// Entry is one log line as the ring and the sinks see it.
type Entry struct {
	Time    time.Time
	Level   slog.Level
	Message string
	Op      string // from the "op" attribute
	Job     string // from the "job" attribute
	Model   string // from the "model" attribute
	Attrs   []slog.Attr
}

// Text renders the attributes other than op/job as " key=value" pairs, for
// one-line views. Groups are flattened with dots.
func (e Entry) Text() string {
	var sb strings.Builder
	sb.WriteString(e.Message)
	if e.Model != "" {
		sb.WriteString(" model=")
		sb.WriteString(quoteIfNeeded(e.Model))
	}
	appendAttrs(&sb, "", e.Attrs)
	return sb.String()
}

func appendAttrs(sb *strings.Builder, prefix string, attrs []slog.Attr) {
	for _, a := range attrs {
		if a.Value.Kind() == slog.KindGroup {
			appendAttrs(sb, prefix+a.Key+".", a.Value.Group())
			continue
		}
		sb.WriteByte(' ')
		sb.WriteString(prefix)
		sb.WriteString(a.Key)
		sb.WriteByte('=')
		sb.WriteString(quoteIfNeeded(a.Value.String()))
	}
}

func quoteIfNeeded(s string) string {
	if s == "" || strings.ContainsAny(s, " \t\n\"=") {
		return fmt.Sprintf("%q", s)
	}
	return s
}

// Sink receives every entry the logger lets through. Write is called on the
// logging goroutine and must not block.
type Sink interface {
	Write(Entry)
}

// Options configure New.
type Options struct {
	// Stderr gets the human-readable lines; nil means os.Stderr. Use
	// io.Discard to silence it.
	Stderr io.Writer
	// FilePath is the rotating log file; empty means no file (see
	// DefaultLogPath).
	FilePath string
	// OnFileError hears, once per streak of failed writes, that the log
	// file stopped taking lines (a full disk, a folder gone). The logger
	// itself says so too, once, on stderr, in the ring and to the sinks.
	// Called on a goroutine of its own; may be nil.
	OnFileError func(error)
	// Level is the lowest level logged anywhere (default Info).
	Level slog.Level
	// RingSize bounds the in-memory ring (default 1000).
	RingSize int
}

// Logger owns the outputs behind one *slog.Logger.
type Logger struct {
	core *core
	slog *slog.Logger
}

type core struct {
	level  slog.LevelVar
	ring   *Ring
	file   *lumberjack.Logger
	closed atomic.Bool

	mu     sync.RWMutex
	sinks  map[int]Sink
	nextID int
}

// DefaultLogPath is $XDG_STATE_HOME/studio-worker/studio-worker.log (or the
// platform's equivalent).
func DefaultLogPath() (string, error) {
	if xdg.StateHome == "" {
		return "", errors.New("logging: no state folder could be found for this user")
	}
	return filepath.Join(xdg.StateHome, "studio-worker", "studio-worker.log"), nil
}

// New builds the logger. It fails only when the log file cannot be created.
func New(opts Options) (*Logger, error) {
	c := &core{sinks: map[int]Sink{}}
	c.level.Set(opts.Level)
	size := opts.RingSize
	if size <= 0 {
		size = DefaultRingSize
	}
	c.ring = NewRing(size)

	w := opts.Stderr
	if w == nil {
		w = os.Stderr
	}
	h := &handler{core: c, pre: [][]slog.Attr{nil}}
	if w != io.Discard { // formatting costs ~50µs a line; skip it when nobody reads
		h.stderr = charm.NewWithOptions(w, charm.Options{
			ReportTimestamp: true,
			TimeFormat:      "15:04:05",
			Level:           charm.DebugLevel,
		})
	}

	if opts.FilePath != "" {
		if err := os.MkdirAll(filepath.Dir(opts.FilePath), 0o700); err != nil {
			return nil, fmt.Errorf("logging: cannot create the log folder: %w", err)
		}
		c.file = &lumberjack.Logger{
			Filename:   opts.FilePath,
			MaxSize:    10, // MB
			MaxBackups: 3,
			MaxAge:     28, // days
		}
		// lumberjack opens lazily; open now so a bad path fails here, in
		// words, rather than on every line. A full disk is not a bad path:
		// the file stays, reported as failing until the disk has room.
		fw := &fileWriter{w: c.file}
		if _, err := c.file.Write(nil); errors.Is(err, syscall.ENOSPC) {
			fw.failing.Store(true)
			defer func() { go fw.report(err) }()
		} else if err != nil {
			return nil, fmt.Errorf("logging: cannot open the log file %s: %w", opts.FilePath, err)
		}
		h.file = slog.NewTextHandler(fw, &slog.HandlerOptions{Level: slog.LevelDebug})
		l := &Logger{core: c, slog: slog.New(h)}
		path, onErr := opts.FilePath, opts.OnFileError
		fw.report = func(err error) {
			l.slog.Warn(fmt.Sprintf("the log file %s cannot be written (%v); until it can, logs are kept only in memory (the Logs page) and on stderr", path, err),
				KeyOp, "logging")
			if onErr != nil {
				onErr(err)
			}
		}
		return l, nil
	}
	return &Logger{core: c, slog: slog.New(h)}, nil
}

// fileWriter is the log file as the file handler writes to it: a failed
// write is reported once per streak (report runs on its own goroutine, so
// the report's own line, which fails to reach the file too, never waits on
// the write that failed), and the next good write ends the streak.
type fileWriter struct {
	w       io.Writer
	failing atomic.Bool
	report  func(error)
}

func (f *fileWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if err != nil {
		if !f.failing.Swap(true) && f.report != nil {
			go f.report(err)
		}
		return n, err
	}
	f.failing.Store(false)
	return n, nil
}

// Slog is the logger to hand to every part of the app.
func (l *Logger) Slog() *slog.Logger { return l.slog }

// Ring is the in-memory ring behind the Logs page.
func (l *Logger) Ring() *Ring { return l.core.ring }

// SetLevel changes the lowest level logged, at run time.
func (l *Logger) SetLevel(level slog.Level) { l.core.level.Set(level) }

// AddSink adds s to the fan-out; the returned func removes it.
func (l *Logger) AddSink(s Sink) (remove func()) {
	c := l.core
	c.mu.Lock()
	id := c.nextID
	c.nextID++
	c.sinks[id] = s
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		delete(c.sinks, id)
		c.mu.Unlock()
	}
}

// Close flushes and closes the log file. Lines logged after Close still
// reach stderr, the ring and the sinks.
func (l *Logger) Close() error {
	if l.core.closed.Swap(true) || l.core.file == nil {
		return nil
	}
	l.core.mu.Lock() // wait for writers in flight
	defer l.core.mu.Unlock()
	return l.core.file.Close()
}

// handler is the fan-out slog.Handler. Each derived handler carries its
// own attributes and open groups; op/job/model given at the top level are
// pulled out into Entry fields.
type handler struct {
	core         *core
	stderr, file slog.Handler
	op, job, mdl string
	groups       []string
	// pre[0] holds top-level attributes, pre[i] those added inside groups[i-1].
	pre [][]slog.Attr
}

func (h *handler) Enabled(_ context.Context, level slog.Level) bool {
	return level >= h.core.level.Level()
}

func (h *handler) clone() *handler {
	c := *h
	c.groups = slices.Clone(h.groups)
	c.pre = make([][]slog.Attr, len(h.pre))
	for i, p := range h.pre {
		c.pre[i] = slices.Clone(p)
	}
	return &c
}

func (h *handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	attrs = redactAll(attrs)
	c := h.clone()
	last := len(c.pre) - 1
	for _, a := range attrs {
		if last == 0 && c.takeField(a) {
			continue
		}
		c.pre[last] = append(c.pre[last], a)
	}
	if h.stderr != nil {
		c.stderr = h.stderr.WithAttrs(attrs)
	}
	if h.file != nil {
		c.file = h.file.WithAttrs(attrs)
	}
	return c
}

func (h *handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := h.clone()
	c.groups = append(c.groups, name)
	c.pre = append(c.pre, nil)
	if h.stderr != nil {
		c.stderr = h.stderr.WithGroup(name)
	}
	if h.file != nil {
		c.file = h.file.WithGroup(name)
	}
	return c
}

// takeField stores op/job/model in the handler's fields; it reports whether
// a was one of them.
func (h *handler) takeField(a slog.Attr) bool {
	switch a.Key {
	case KeyOp:
		h.op = a.Value.String()
	case KeyJob:
		h.job = a.Value.String()
	case KeyModel:
		h.mdl = a.Value.String()
	default:
		return false
	}
	return true
}

func (h *handler) Handle(ctx context.Context, r slog.Record) error {
	msg := RedactText(r.Message)
	e := Entry{Time: r.Time, Level: r.Level, Message: msg, Op: h.op, Job: h.job, Model: h.mdl}
	var recAttrs []slog.Attr
	r.Attrs(func(a slog.Attr) bool {
		a = redact(a)
		recAttrs = append(recAttrs, a)
		if len(h.groups) == 0 {
			switch a.Key {
			case KeyOp:
				e.Op = a.Value.String()
				return true
			case KeyJob:
				e.Job = a.Value.String()
				return true
			case KeyModel:
				e.Model = a.Value.String()
				return true
			}
		}
		e.Attrs = append(e.Attrs, a)
		return true
	})
	// Nest the record's attributes inside the open groups, innermost first,
	// dropping groups left empty as slog does.
	cur := append(slices.Clone(h.pre[len(h.pre)-1]), e.Attrs...)
	for i := len(h.groups) - 1; i >= 0; i-- {
		outer := slices.Clone(h.pre[i])
		if len(cur) > 0 {
			outer = append(outer, slog.Attr{Key: h.groups[i], Value: slog.GroupValue(cur...)})
		}
		cur = outer
	}
	e.Attrs = cur

	out := slog.NewRecord(r.Time, r.Level, msg, r.PC)
	out.AddAttrs(recAttrs...)

	c := h.core
	c.ring.Write(e)
	c.mu.RLock()
	defer c.mu.RUnlock()
	for _, s := range c.sinks {
		s.Write(e)
	}
	var errs []error
	if h.stderr != nil {
		if err := h.stderr.Handle(ctx, out.Clone()); err != nil {
			errs = append(errs, err)
		}
	}
	if h.file != nil && !c.closed.Load() {
		if err := h.file.Handle(ctx, out); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// secretKeys are attribute keys whose values are never written anywhere.
var secretKeys = map[string]bool{
	"authtoken": true, "auth_token": true, "token": true, "secret": true,
	"registrationsecret": true, "registration_secret": true, "password": true,
	"authorization": true,
}

const redacted = "[redacted]"

func redact(a slog.Attr) slog.Attr {
	if secretKeys[strings.ToLower(a.Key)] {
		return slog.String(a.Key, redacted)
	}
	a.Value = a.Value.Resolve()
	switch a.Value.Kind() {
	case slog.KindGroup:
		return slog.Attr{Key: a.Key, Value: slog.GroupValue(redactAll(a.Value.Group())...)}
	case slog.KindString:
		// A URL's query string and user info never reach a log line.
		if v := a.Value.String(); strings.Contains(v, "://") {
			return slog.String(a.Key, RedactText(v))
		}
	case slog.KindAny:
		if err, ok := a.Value.Any().(error); ok && err != nil {
			if v := err.Error(); strings.Contains(v, "://") {
				return slog.String(a.Key, RedactText(v))
			}
		}
	}
	return a
}

func redactAll(attrs []slog.Attr) []slog.Attr {
	out := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		out[i] = redact(a)
	}
	return out
}
