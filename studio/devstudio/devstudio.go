// Package devstudio is a small but real implementation of the studio side of
// the v1 contract (studio-protocol.md): registration with operator approval,
// the WebSocket session with its ordering and auth rules, offers to fitting
// workers, acks, retries, the multipart result route and result storage on
// disk. The hosted studio cannot be reached from development machines, so
// tests, the demo and self-hosters run the worker against this one.
//
// Everything the protocol puts under /graphics/api is served there; a small
// JSON API for people and tests lives under /dev.
package devstudio

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/minisgg/studio-worker/studio"
)

// Timing rules of the studio side (§3.6).
const (
	// HeartbeatStaleAfter is how old a worker's last heartbeat may get before
	// the studio stops offering to it and the sweep closes its session.
	HeartbeatStaleAfter = 30 * time.Second
	// SweepInterval is how often the stale sweep runs by default.
	SweepInterval = 10 * time.Second
	// DefaultMaxAttempts is how many failed tries a job gets before it is
	// failed for good.
	DefaultMaxAttempts = 3
	// DefaultMaxUploadBytes caps one multipart result upload.
	DefaultMaxUploadBytes = 4 << 30
	// APIPrefix is where the protocol routes live (§1).
	APIPrefix = "/graphics/api"

	closeGrace = 3 * time.Second
)

// Clock tells the studio the time. It is the only clock the heartbeat
// freshness and stale-sweep rules read, so a test can drive them. Any clock
// with a Now method fits, studio's own Clock included.
type Clock interface {
	Now() time.Time
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

// Options configure a dev studio.
type Options struct {
	// DataDir holds state.json (approved workers with hashed tokens,
	// registration requests, jobs) and results/. Required.
	DataDir string
	// ModelsDir is served read-only at /dev/models/ with Range support.
	// Empty: no models are served.
	ModelsDir string
	// AutoApprove approves every registration request as it arrives.
	AutoApprove bool
	// Log receives the studio's own log lines. Nil: discarded.
	Log *slog.Logger
	// Clock drives heartbeat freshness and the stale sweep. Nil: real time.
	// A studio.Clock (studio.FakeClock in tests) also drives the sweep's
	// ticker.
	Clock Clock
	// MaxAttempts is the number of failed tries before a job fails for
	// good. 0 means DefaultMaxAttempts.
	MaxAttempts int
	// SweepEvery is the period of the background stale sweep. 0 means
	// SweepInterval; a negative value turns the background sweep off (then
	// only SweepNow sweeps).
	SweepEvery time.Duration
	// MaxUploadBytes caps one result upload. 0 means DefaultMaxUploadBytes.
	MaxUploadBytes int64
}

// Server is one dev studio. Create it with New, serve Handler, and Close it
// before closing the HTTP server that serves it (open WebSocket sessions
// keep their handlers running until Close ends them).
type Server struct {
	opts        Options
	log         *slog.Logger
	clock       Clock
	maxAttempts int
	maxUpload   int64
	statePath   string
	resultsDir  string
	handler     http.Handler

	mu          sync.Mutex
	changed     chan struct{} // closed and replaced on every change
	closed      bool
	requests    map[string]*regRequest
	workers     map[string]*worker
	jobs        map[string]*job
	seq         uint64
	sessions    map[*session]struct{}
	sessSeq     uint64
	failUploads int
	logs        []WorkerLog
	saveErr     error
	dirty       bool

	fileMu   sync.Mutex // serialises state file writes
	saveKick chan struct{}
	stopSave chan struct{}
	saveDone chan struct{}

	sessWG    sync.WaitGroup
	stopSweep chan struct{}
	sweepDone chan struct{}
}

// New opens (or creates) a dev studio on opts.DataDir. State saved by an
// earlier server on the same folder is loaded; jobs that were held by a
// worker when it stopped are released as if that worker had disconnected.
func New(opts Options) (*Server, error) {
	if strings.TrimSpace(opts.DataDir) == "" {
		return nil, errors.New("devstudio: a data folder is required")
	}
	if opts.ModelsDir != "" {
		st, err := os.Stat(opts.ModelsDir)
		if err != nil {
			return nil, fmt.Errorf("devstudio: models folder: %w", err)
		}
		if !st.IsDir() {
			return nil, fmt.Errorf("devstudio: models folder %s is not a folder", opts.ModelsDir)
		}
	}
	s := &Server{
		opts:        opts,
		log:         opts.Log,
		clock:       opts.Clock,
		maxAttempts: opts.MaxAttempts,
		maxUpload:   opts.MaxUploadBytes,
		statePath:   filepath.Join(opts.DataDir, "state.json"),
		resultsDir:  filepath.Join(opts.DataDir, "results"),
		changed:     make(chan struct{}),
		requests:    map[string]*regRequest{},
		workers:     map[string]*worker{},
		jobs:        map[string]*job{},
		sessions:    map[*session]struct{}{},
		stopSweep:   make(chan struct{}),
		sweepDone:   make(chan struct{}),
		saveKick:    make(chan struct{}, 1),
		stopSave:    make(chan struct{}),
		saveDone:    make(chan struct{}),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.clock == nil {
		s.clock = realClock{}
	}
	if s.maxAttempts <= 0 {
		s.maxAttempts = DefaultMaxAttempts
	}
	if s.maxUpload <= 0 {
		s.maxUpload = DefaultMaxUploadBytes
	}
	if err := os.MkdirAll(s.resultsDir, 0o700); err != nil {
		return nil, fmt.Errorf("devstudio: cannot create the data folder: %w", err)
	}
	if err := s.load(); err != nil {
		return nil, err
	}
	if err := s.flush(); err != nil {
		return nil, fmt.Errorf("devstudio: cannot write %s: %w", s.statePath, err)
	}
	s.handler = s.routes()
	go s.saveLoop()

	every := opts.SweepEvery
	if every == 0 {
		every = SweepInterval
	}
	if every > 0 {
		// A clock with tickers (studio.Clock, studio.FakeClock) drives the
		// sweep too, so advancing a fake clock past 30 s sweeps without
		// waiting. The ticker is made here, before New returns, so a test
		// may advance at once.
		var tick <-chan time.Time
		var stop func()
		if tc, ok := s.clock.(tickerClock); ok {
			t := tc.NewTicker(every)
			tick, stop = t.C(), t.Stop
		} else {
			t := time.NewTicker(every)
			tick, stop = t.C, t.Stop
		}
		go s.sweepLoop(tick, stop)
	} else {
		close(s.sweepDone)
	}
	return s, nil
}

// Handler serves the protocol routes under /graphics/api and the dev API
// under /dev.
func (s *Server) Handler() http.Handler { return s.handler }

// Close ends every session (close 1001, so a worker reconnects to whatever
// serves this folder next), stops the sweep and saves the state. Jobs held
// by a worker stay held in the saved state; the next New releases them.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for sess := range s.sessions {
		s.closeSessionLocked(sess, closeSpec{code: 1001, reason: "studio shutting down"})
	}
	s.notifyLocked()
	s.mu.Unlock()

	close(s.stopSweep)
	<-s.sweepDone
	// A worker that never answers the close handshake must not hold the
	// shutdown up for long.
	done := make(chan struct{})
	go func() {
		s.sessWG.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(closeGrace):
		s.mu.Lock()
		for sess := range s.sessions {
			_ = sess.conn.CloseNow()
		}
		s.mu.Unlock()
		<-done
	}

	close(s.stopSave)
	<-s.saveDone
	return s.flush()
}

// Serve serves the studio on ln until ctx ends, then closes the sessions
// first (their handlers would otherwise keep the HTTP server waiting) and
// shuts the HTTP server down. It returns nil after a shutdown caused by ctx.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 15 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		_ = s.Close()
		return err
	case <-ctx.Done():
	}
	closeErr := s.Close()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		return err
	}
	<-errc
	return closeErr
}

// tickerClock is a Clock that also makes tickers, as studio.Clock does.
type tickerClock interface {
	NewTicker(d time.Duration) studio.Ticker
}

func (s *Server) sweepLoop(tick <-chan time.Time, stop func()) {
	defer close(s.sweepDone)
	defer stop()
	for {
		select {
		case <-s.stopSweep:
			return
		case <-tick:
			s.SweepNow()
		}
	}
}

// notifyLocked wakes everything waiting in WaitJob / WaitWorker / Subscribe.
func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// Changed returns a channel that is closed at the next change of any job,
// worker, session or registration request. Take a fresh one after each
// wake-up.
func (s *Server) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// ---- HTTP plumbing ----

type apiError struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, status int, format string, args ...any) {
	writeJSON(w, status, apiError{Error: fmt.Sprintf(format, args...)})
}

// allow answers 405 with a JSON body when r's method is not one of methods.
func allow(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m {
			return true
		}
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	writeErr(w, http.StatusMethodNotAllowed, "%s is not allowed on %s (use %s)", r.Method, r.URL.Path, strings.Join(methods, " or "))
	return false
}

const maxJSONBody = 1 << 20

// decodeBody reads one JSON object of at most 1 MiB.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	r.Body = http.MaxBytesReader(w, r.Body, maxJSONBody)
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			writeErr(w, http.StatusRequestEntityTooLarge, "request body is larger than %d bytes", maxJSONBody)
		case errors.Is(err, context.Canceled):
			writeErr(w, http.StatusBadRequest, "request cancelled")
		default:
			writeErr(w, http.StatusBadRequest, "request body is not valid JSON: %v", err)
		}
		return false
	}
	return true
}

func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	const p = "Bearer "
	if len(h) > len(p) && strings.EqualFold(h[:len(p)], p) {
		return strings.TrimSpace(h[len(p):])
	}
	return ""
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	// One pattern for both GET routes with two segments after workers/,
	// because "register-requests/{id}" and "{workerId}/connect" overlap.
	mux.HandleFunc(APIPrefix+"/workers/register-request", s.handleRegisterRequest)
	mux.HandleFunc(APIPrefix+"/workers/{a}/{b}", s.handleWorkersTwo)
	mux.HandleFunc(APIPrefix+"/workers/{workerId}/jobs/{jobId}/complete", s.handleComplete)

	mux.HandleFunc("/dev/jobs", s.handleDevJobs)
	mux.HandleFunc("/dev/jobs/{id}", s.handleDevJob)
	mux.HandleFunc("/dev/results/{id}", s.handleDevResult)
	mux.HandleFunc("/dev/workers", s.handleDevWorkers)
	mux.HandleFunc("/dev/workers/{id}", s.handleDevWorker)
	mux.HandleFunc("/dev/workers/{id}/revoke", s.handleDevRevoke)
	mux.HandleFunc("/dev/logs", s.handleDevLogs)
	mux.HandleFunc("/dev/register-requests", s.handleDevRequests)
	mux.HandleFunc("/dev/register-requests/{id}/{action}", s.handleDevRequestAction)
	mux.HandleFunc("/dev/models/{path...}", s.handleModel)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeErr(w, http.StatusNotFound, "no such route: %s %s", r.Method, r.URL.Path)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		closed := s.closed
		s.mu.Unlock()
		if closed {
			writeErr(w, http.StatusServiceUnavailable, "the dev studio is shutting down")
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func (s *Server) handleWorkersTwo(w http.ResponseWriter, r *http.Request) {
	a, b := r.PathValue("a"), r.PathValue("b")
	switch {
	case a == "register-requests":
		if allow(w, r, http.MethodGet) {
			s.handlePoll(w, r, b)
		}
	case b == "connect":
		if allow(w, r, http.MethodGet) {
			s.handleConnect(w, r, a)
		}
	default:
		writeErr(w, http.StatusNotFound, "no such route: %s %s", r.Method, r.URL.Path)
	}
}
