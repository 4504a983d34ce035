package studio

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/minisgg/studio-worker/logging"
)

// Session timing (§3.6).
const (
	HeartbeatInterval   = 5 * time.Second
	LogFlushInterval    = 1 * time.Second
	ReadIdleTimeout     = 20 * time.Second
	ConnectTimeout      = 15 * time.Second
	CredentialsInterval = 1 * time.Second
	BackoffBase         = 1 * time.Second
	BackoffMax          = 30 * time.Second
	// writeTimeout bounds one frame write so a stuck socket cannot hold
	// the loop; the read-idle limit catches the rest.
	writeTimeout = 10 * time.Second
	// maxLogBatch keeps one logBatch frame to a sensible size; the rest
	// ships on the next tick.
	maxLogBatch = 500
	// readLimit is the largest studio frame accepted. Offers carry whole
	// chat histories, well past the library's 32 KiB default.
	readLimit = 16 << 20
	// HealthyAfter is how long a welcomed session must stay up to count as
	// healthy when no heartbeat was acknowledged yet. Only a healthy
	// session resets the reconnect backoff.
	HealthyAfter = 10 * time.Second
	// BackoffJitter is the spread of every reconnect wait: the wait is
	// Backoff(n) scaled by a random factor in [1−BackoffJitter, 1+BackoffJitter),
	// so workers that lost the studio together do not return together.
	BackoffJitter = 0.2
)

// Backoff is the wait before reconnect attempt n (1-based): 1 s·2^(n−1),
// at most 30 s (studio-protocol.md §3.6). Session.Run spreads it with
// BackoffJitter.
func Backoff(attempt int) time.Duration {
	if attempt < 1 {
		attempt = 1
	}
	if attempt > 6 {
		return BackoffMax
	}
	return min(BackoffBase*time.Duration(math.Pow(2, float64(attempt-1))), BackoffMax)
}

// SessionConfig configures a Session.
type SessionConfig struct {
	BaseURL string // the studio URL as the donor typed it
	// Credentials returns the worker id and auth token; ok is false until
	// registration has produced them (re-checked every second).
	Credentials  func() (workerID, token string, ok bool)
	Capabilities func() Capabilities // rebuilt for hello and every heartbeat
	CurrentJobID func() string       // "" when idle
	// OnOffer gets each offer with the connection it came on; results must
	// be sent on that Sender. Called on the session goroutine: must not
	// block.
	OnOffer func(s Sender, claim JobOfferClaim)
	// OnUnusableOffer gets an offer whose claim names a job but carries a
	// field this worker cannot use; it is answered for that job alone and
	// the session stays up. Called on the session goroutine: must not
	// block. When nil such offers are only logged.
	OnUnusableOffer func(s Sender, offer *UnusableOffer)
	// OnFrame gets completeAck and failAck frames (*CompleteAck, *FailAck).
	OnFrame func(frame any)
	// OnWelcome runs on the session goroutine right after welcome, before
	// the first heartbeat (so before the studio offers anything on this
	// session): it may send frames on s, such as the final frames of jobs
	// a previous session or process could not deliver.
	OnWelcome func(s Sender)
	OnStatus  func(SessionStatus) // must not block
	Logs      *LogQueue           // shipped as logBatch; may be nil
	Log       *slog.Logger
	Clock     Clock        // default RealClock
	HTTP      *http.Client // used for the upgrade; default http.DefaultClient
	// Rand returns a number in [0, 1) for the reconnect jitter; default
	// math/rand/v2's Float64. Tests pin it (0.5 means no jitter).
	Rand func() float64
}

// SessionStatus is what the UI shows about the connection.
type SessionStatus struct {
	State            SessionState
	Detail           string        // in words, e.g. "studio unreachable, retrying in 8 s"
	RetryIn          time.Duration // while State == SessionRetrying
	StopReason       string        // while State == SessionStopped
	LastHeartbeatAck time.Time
}

// StoppedError ends Session.Run for good: the studio refused the
// credentials (401, 4001, auth_failed), replaced the worker (4003,
// duplicate_worker) or deleted it (4004, worker_deleted). Nothing else
// stops the session: see docs/protocol-deviations.md.
type StoppedError struct {
	Reason string // in words, for the UI
	Code   string // "401", a close code like "4003", or the error frame's code
}

func (e *StoppedError) Error() string { return e.Reason }

// ErrConnClosed is returned by Conn.Send once its socket is gone.
var ErrConnClosed = errors.New("the studio connection this was meant for has closed")

// Conn is one connected socket. It is a Sender.
type Conn struct {
	ws       *websocket.Conn
	workerID string
	token    string
	closed   chan struct{}
	once     sync.Once
}

// Send writes one frame. It is safe for concurrent use and fails with
// ErrConnClosed once the socket is gone, so a result is never sent on a
// newer socket than its offer came on.
func (c *Conn) Send(ctx context.Context, frame any) error {
	select {
	case <-c.closed:
		return ErrConnClosed
	default:
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	data, err := Encode(frame)
	if err != nil {
		return err
	}
	// The library kills the socket when a write's context ends, even just
	// after the frame went out. So the caller's context only gates the
	// start; the write itself is bounded by writeTimeout alone.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer cancel()
	if err := c.ws.Write(wctx, websocket.MessageText, data); err != nil {
		select {
		case <-c.closed:
			return ErrConnClosed
		default:
		}
		return fmt.Errorf("sending to the studio failed: %w", err)
	}
	return nil
}

// WorkerID is the worker id this socket authenticated as.
func (c *Conn) WorkerID() string { return c.workerID }

// AuthToken is the token this socket authenticated with (for the multipart
// upload of a result of one of its offers).
func (c *Conn) AuthToken() string { return c.token }

func (c *Conn) markClosed() { c.once.Do(func() { close(c.closed) }) }

// Session holds the v1 WebSocket session and reconnects it.
type Session struct {
	cfg   SessionConfig
	clock Clock
	log   *slog.Logger

	mu     sync.Mutex
	status SessionStatus
}

// NewSession returns a session; nothing happens until Run.
func NewSession(cfg SessionConfig) *Session {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.HTTP == nil {
		cfg.HTTP = http.DefaultClient
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Float64
	}
	return &Session{
		cfg:    cfg,
		clock:  clockOrReal(cfg.Clock),
		log:    log.With(logging.KeyOp, "ws"),
		status: SessionStatus{State: SessionOffline},
	}
}

// Status is the latest status.
func (s *Session) Status() SessionStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

// setStatus applies f and reports the result, unless nothing changed (the
// credentials wait re-sets the same status every second).
func (s *Session) setStatus(f func(*SessionStatus)) {
	s.mu.Lock()
	old := s.status
	f(&s.status)
	st := s.status
	s.mu.Unlock()
	if st != old && s.cfg.OnStatus != nil {
		s.cfg.OnStatus(st)
	}
}

func (s *Session) setState(state SessionState, detail string, retryIn time.Duration, stop string) {
	s.setStatus(func(st *SessionStatus) {
		st.State, st.Detail, st.RetryIn, st.StopReason = state, detail, retryIn, stop
	})
}

// Run connects and reconnects until ctx ends (then it returns nil) or the
// studio stops the worker for good (a *StoppedError). Reconnects wait
// 1 s·2^(n−1) up to 30 s, each spread by ±BackoffJitter. The count starts
// over only after a session proved healthy (its first heartbeat was
// acknowledged, or it stayed up HealthyAfter) and ended for an ordinary
// reason: a session the studio ended with a frame or close code this worker
// cannot use (troubleError) keeps counting, so a studio that misbehaves on
// every connection is retried ever more slowly, never in a storm.
func (s *Session) Run(ctx context.Context) error {
	if _, err := WebSocketBase(s.cfg.BaseURL); err != nil {
		s.setState(SessionStopped, err.Error(), 0, err.Error())
		return &StoppedError{Reason: err.Error(), Code: "config"}
	}
	attempt := 0
	var repeat repeatCounter
	for {
		workerID, token, ok := "", "", false
		if s.cfg.Credentials != nil {
			workerID, token, ok = s.cfg.Credentials()
		}
		if !ok {
			s.setState(SessionOffline, "waiting for approval", 0, "")
			if Sleep(ctx, s.clock, CredentialsInterval) != nil {
				return nil
			}
			continue
		}
		s.setState(SessionConnecting, "connecting to the studio", 0, "")
		healthy, err := s.connect(ctx, workerID, token)
		if ctx.Err() != nil {
			s.setState(SessionOffline, "stopped", 0, "")
			return nil
		}
		var stop *StoppedError
		if errors.As(err, &stop) {
			s.log.Error("the studio stopped this worker; not reconnecting", "reason", stop.Reason, "code", stop.Code)
			s.setState(SessionStopped, stop.Reason, 0, stop.Reason)
			return stop
		}
		var trouble *troubleError
		isTrouble := errors.As(err, &trouble)
		if healthy && !isTrouble {
			attempt = 0
		}
		attempt++
		wait := s.jitter(Backoff(attempt))
		var detail string
		var unreachable *dialError
		switch {
		case errors.As(err, &unreachable):
			repeat.reset()
			detail = fmt.Sprintf("studio unreachable, retrying in %s", secs(wait))
		case isTrouble:
			if n := repeat.note(trouble.key); n > 1 {
				detail = fmt.Sprintf("%v; %d times in a row, retrying in %s", err, n, secs(wait))
			} else {
				detail = fmt.Sprintf("%v; retrying in %s", err, secs(wait))
			}
		default:
			if healthy {
				repeat.reset()
			}
			detail = fmt.Sprintf("disconnected (%v), retrying in %s", err, secs(wait))
		}
		s.log.Warn(fmt.Sprintf("disconnected; reconnect attempt %d in %dms", attempt, wait.Milliseconds()), "reason", err)
		s.setState(SessionRetrying, detail, wait, "")
		if Sleep(ctx, s.clock, wait) != nil {
			s.setState(SessionOffline, "stopped", 0, "")
			return nil
		}
	}
}

// jitter spreads d by a factor in [1−BackoffJitter, 1+BackoffJitter).
func (s *Session) jitter(d time.Duration) time.Duration {
	f := (s.cfg.Rand()*2 - 1) * BackoffJitter
	return d + time.Duration(f*float64(d))
}

// repeatCounter counts how many sessions in a row ended with the same
// trouble, so the donor sees "3 times in a row" rather than one line that
// looks new each time.
type repeatCounter struct {
	key string
	n   int
}

func (r *repeatCounter) note(key string) int {
	if key != r.key {
		r.key, r.n = key, 0
	}
	r.n++
	return r.n
}

func (r *repeatCounter) reset() { r.key, r.n = "", 0 }

func secs(d time.Duration) string {
	return fmt.Sprintf("%d s", int(math.Ceil(d.Seconds())))
}

// dialError marks a failure to reach the studio at all.
type dialError struct{ err error }

func (e *dialError) Error() string { return "cannot reach the studio: " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// troubleError marks a session the studio ended in a way this worker can do
// nothing about at once: a frame it cannot read (binary, unknown type,
// malformed JSON), a close with 1011 or 4002, or an internal_error or
// protocol_violation error frame. The session reconnects with backoff that
// such an end never resets. key groups repeats of the same trouble.
type troubleError struct {
	key string
	err error
}

func (e *troubleError) Error() string { return e.err.Error() }
func (e *troubleError) Unwrap() error { return e.err }

// protocolError is a frame this worker cannot read.
func protocolError(err error) *troubleError {
	return &troubleError{
		key: "frame",
		err: fmt.Errorf("the studio sent a frame this worker cannot read: %w", err),
	}
}

type inbound struct {
	frame any
	err   error
}

// connect runs one socket from dial to teardown. healthy reports whether
// the session proved itself (see Run).
func (s *Session) connect(ctx context.Context, workerID, token string) (healthy bool, err error) {
	u, err := ConnectURL(s.cfg.BaseURL, workerID)
	if err != nil {
		return false, &StoppedError{Reason: err.Error(), Code: "config"}
	}
	dctx, cancel := context.WithTimeout(ctx, ConnectTimeout)
	ws, resp, err := websocket.Dial(dctx, u, &websocket.DialOptions{
		HTTPClient: s.cfg.HTTP,
		HTTPHeader: http.Header{
			"Authorization": {"Bearer " + token},
			"User-Agent":    {UserAgent()},
		},
		Subprotocols: []string{Subprotocol},
	})
	cancel()
	if err != nil {
		if resp != nil && resp.StatusCode == http.StatusUnauthorized {
			return false, &StoppedError{
				Reason: "the studio no longer accepts this worker's credentials (HTTP 401); log out and register again",
				Code:   "401",
			}
		}
		if resp != nil {
			return false, &dialError{fmt.Errorf("HTTP %d on the upgrade", resp.StatusCode)}
		}
		return false, &dialError{redactURLError(err)}
	}
	ws.SetReadLimit(readLimit)
	conn := &Conn{ws: ws, workerID: workerID, token: token, closed: make(chan struct{})}

	// The reader's context is not derived from ctx: cancelling a Read
	// context kills the socket, and on shutdown we want a clean close.
	rctx, rcancel := context.WithCancel(context.Background())
	frames := make(chan inbound)
	readerDone := make(chan struct{})
	go s.reader(rctx, ws, frames, readerDone)
	defer func() {
		conn.markClosed()
		_ = ws.Close(websocket.StatusNormalClosure, "session ended")
		rcancel()
		<-readerDone
	}()

	if err := conn.Send(ctx, Hello{AuthToken: token, Capabilities: s.capabilities()}); err != nil {
		return false, err
	}
	idle := s.clock.NewTimer(ReadIdleTimeout)
	defer idle.Stop()

	// Nothing but hello goes out until welcome: the studio authenticates
	// hello asynchronously and kills a session that speaks early.
	welcomed := false
	for !welcomed {
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-idle.C():
			return false, errors.New("no welcome from the studio within 20 s")
		case in := <-frames:
			if in.err != nil {
				return false, in.err
			}
			idle.Reset(ReadIdleTimeout)
			switch f := in.frame.(type) {
			case *Welcome:
				welcomed = true
				s.onWelcome(f, workerID)
				if s.cfg.OnWelcome != nil {
					s.cfg.OnWelcome(conn)
				}
			case *ErrorFrame:
				return false, errorFrameEnd(f)
			default:
				s.log.Info("ignored a frame that came before welcome", "frame", fmt.Sprintf("%T", f))
			}
		}
	}

	welcomedAt := s.clock.Now()
	acked := false
	// proved reports whether this session counts as healthy: a heartbeat
	// came back acknowledged, or it stayed up HealthyAfter.
	proved := func() bool { return acked || s.clock.Now().Sub(welcomedAt) >= HealthyAfter }
	hb := s.clock.NewTicker(HeartbeatInterval)
	defer hb.Stop()
	lt := s.clock.NewTicker(LogFlushInterval)
	defer lt.Stop()
	if err := s.heartbeat(ctx, conn); err != nil {
		return proved(), err
	}
	for {
		select {
		case <-ctx.Done():
			return proved(), ctx.Err()
		case <-idle.C():
			return proved(), errors.New("nothing heard from the studio for 20 s")
		case <-hb.C():
			if err := s.heartbeat(ctx, conn); err != nil {
				return proved(), err
			}
		case <-lt.C():
			if err := s.flushLogs(ctx, conn); err != nil {
				return proved(), err
			}
		case in := <-frames:
			if in.err != nil {
				return proved(), in.err
			}
			idle.Reset(ReadIdleTimeout)
			if _, ok := in.frame.(*HeartbeatAck); ok {
				acked = true
			}
			if err := s.dispatch(conn, in.frame); err != nil {
				return proved(), err
			}
		}
	}
}

func (s *Session) capabilities() Capabilities {
	if s.cfg.Capabilities == nil {
		return Capabilities{}
	}
	return s.cfg.Capabilities()
}

func (s *Session) onWelcome(w *Welcome, workerID string) {
	caps := s.capabilities()
	s.log.Info("connected to the studio",
		"workerId", workerID, "serverTime", w.ServerTime,
		"taskKinds", fmt.Sprint(caps.TaskKinds),
		"vramBudgetGb", caps.VRAMThresholdGB, "vramTotalGb", caps.VRAMTotalGB)
	if caps.VRAMTotalGB > 0 && caps.VRAMThresholdGB > caps.VRAMTotalGB {
		s.log.Warn("the VRAM budget is above the detected graphics memory",
			"vramBudgetGb", caps.VRAMThresholdGB, "vramTotalGb", caps.VRAMTotalGB)
	}
	s.setState(SessionConnected, "connected", 0, "")
}

func (s *Session) heartbeat(ctx context.Context, c *Conn) error {
	hb := Heartbeat{Capabilities: s.capabilities()}
	if s.cfg.CurrentJobID != nil {
		hb.CurrentJobID = s.cfg.CurrentJobID()
	}
	return c.Send(ctx, hb)
}

func (s *Session) flushLogs(ctx context.Context, c *Conn) error {
	if s.cfg.Logs == nil {
		return nil
	}
	entries := s.cfg.Logs.Drain(maxLogBatch)
	if len(entries) == 0 {
		return nil
	}
	if err := c.Send(ctx, LogBatch{Entries: entries}); err != nil {
		s.cfg.Logs.Requeue(entries)
		return err
	}
	return nil
}

func (s *Session) dispatch(c *Conn, frame any) error {
	switch f := frame.(type) {
	case *Offer:
		if s.cfg.OnOffer != nil {
			s.cfg.OnOffer(c, f.Claim)
		}
	case *HeartbeatAck:
		now := s.clock.Now()
		s.setStatus(func(st *SessionStatus) { st.LastHeartbeatAck = now })
	case *CompleteAck:
		s.log.Info("studio confirmed completion of job "+f.JobID, logging.KeyJob, f.JobID)
		if s.cfg.OnFrame != nil {
			s.cfg.OnFrame(f)
		}
	case *FailAck:
		s.log.Info("studio confirmed failure of job "+f.JobID, logging.KeyJob, f.JobID)
		if s.cfg.OnFrame != nil {
			s.cfg.OnFrame(f)
		}
	case *UnusableOffer:
		s.log.Warn("the offer of job "+f.JobID+" carries a field this worker cannot use: "+f.Problem(),
			logging.KeyJob, f.JobID)
		if s.cfg.OnUnusableOffer != nil {
			s.cfg.OnUnusableOffer(c, f)
		}
	case *Welcome:
		s.log.Info("ignored a second welcome", "workerId", f.WorkerID)
	case *ErrorFrame:
		return errorFrameEnd(f)
	}
	return nil
}

// reader turns socket reads into frames for the session loop until the
// first error, which it hands over before leaving.
func (s *Session) reader(ctx context.Context, ws *websocket.Conn, out chan<- inbound, done chan<- struct{}) {
	defer close(done)
	for {
		typ, data, err := ws.Read(ctx)
		var in inbound
		switch {
		case err != nil:
			in.err = closeError(err)
		case typ != websocket.MessageText:
			in.err = protocolError(errors.New("a binary frame (the protocol carries JSON text frames only)"))
		default:
			f, derr := DecodeServerFrame(data)
			if derr != nil {
				in.err = protocolError(derr)
			} else {
				in.frame = f
			}
		}
		var te *troubleError
		if err == nil && errors.As(in.err, &te) {
			s.log.Warn("dropping the session and reconnecting with backoff: "+te.Error(), "frame", bodySnippet(data))
		}
		select {
		case out <- in:
		case <-ctx.Done():
			return
		}
		if in.err != nil {
			return
		}
	}
}

// closeError turns the end of a read into the session's verdict: 4001,
// 4003 and 4004 stop the worker for good; 1011 (the studio failed), 4002
// (it saw a protocol violation) and the other codes that say the two sides
// disagree reconnect with backoff that they never reset (troubleError);
// anything else is a plain disconnect.
func closeError(err error) error {
	code := websocket.CloseStatus(err)
	reason := ""
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		reason = ce.Reason
	}
	switch code {
	case CloseAuthFailed:
		return &StoppedError{Code: "4001", Reason: withDetail(
			"the studio refused this worker's credentials; log out and register again", reason)}
	case CloseDuplicateWorker:
		return &StoppedError{Code: "4003", Reason: withDetail(
			"another Studio Worker connected with this worker's identity, so the studio closed this one", reason)}
	case CloseWorkerDeleted:
		return &StoppedError{Code: "4004", Reason: withDetail(
			"the studio deleted this worker; log out and register again", reason)}
	case -1:
		return fmt.Errorf("connection lost: %w", err)
	}
	var out error
	if reason != "" {
		out = fmt.Errorf("the studio closed the connection (%d %s)", code, reason)
	} else {
		out = fmt.Errorf("the studio closed the connection (%d)", code)
	}
	if troubleClose(code) {
		return &troubleError{key: fmt.Sprintf("close %d", code), err: out}
	}
	return out
}

// troubleClose reports close codes that say the studio failed or the two
// sides disagree, as opposed to a restart or a network drop.
func troubleClose(code websocket.StatusCode) bool {
	switch code {
	case websocket.StatusProtocolError, websocket.StatusUnsupportedData,
		websocket.StatusInvalidFramePayloadData, websocket.StatusPolicyViolation,
		websocket.StatusMessageTooBig, websocket.StatusInternalError:
		return true
	}
	// 4000–4999 are the studio's own; 4001, 4003 and 4004 stop earlier.
	return code >= 4000 && code <= 4999
}

func withDetail(reason, detail string) string {
	detail = strings.TrimSpace(detail)
	if detail == "" {
		return reason
	}
	return reason + " (" + detail + ")"
}

// errorFrameEnd is the verdict on an error frame. Only auth_failed,
// duplicate_worker and worker_deleted stop the worker (*StoppedError).
// internal_error, protocol_violation and any other code end this session
// only: the worker reconnects with backoff (*troubleError). The reference
// protocol calls every code but auth_failed fatal; that turns one transient
// studio fault into a worker that stays offline until someone registers it
// again (docs/protocol-deviations.md).
func errorFrameEnd(f *ErrorFrame) error {
	var reason string
	stop := true
	switch f.Code {
	case ErrCodeAuthFailed:
		reason = "the studio refused this worker's credentials; log out and register again"
	case ErrCodeDuplicateWorker:
		reason = "another Studio Worker connected with this worker's identity, so the studio closed this one"
	case ErrCodeWorkerDeleted:
		reason = "the studio deleted this worker; log out and register again"
	case ErrCodeProtocolViolation:
		reason, stop = "the studio ended the session for a protocol violation", false
	default:
		reason, stop = "the studio ended the session with an error", false
	}
	code, detail := f.Code, f.Code
	if code == "" {
		code = "error"
	}
	if msg := strings.TrimSpace(f.Message); msg != "" {
		detail = strings.TrimPrefix(detail+": "+msg, ": ")
	}
	if !stop {
		return &troubleError{key: "error " + code, err: errors.New(withDetail(reason, detail))}
	}
	return &StoppedError{Code: code, Reason: withDetail(reason, detail)}
}
