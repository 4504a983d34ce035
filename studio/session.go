package studio

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
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
)

// Backoff is the wait before reconnect attempt n (1-based): 1 s·2^(n−1),
// at most 30 s.
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
	// OnFrame gets completeAck and failAck frames (*CompleteAck, *FailAck).
	OnFrame  func(frame any)
	OnStatus func(SessionStatus) // must not block
	Logs     *LogQueue           // shipped as logBatch; may be nil
	Log      *slog.Logger
	Clock    Clock        // default RealClock
	HTTP     *http.Client // used for the upgrade; default http.DefaultClient
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
// credentials, replaced or deleted the worker, or sent an error frame.
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
// 1 s·2^(n−1) up to 30 s, and the count starts over after each welcome.
func (s *Session) Run(ctx context.Context) error {
	if _, err := WebSocketBase(s.cfg.BaseURL); err != nil {
		s.setState(SessionStopped, err.Error(), 0, err.Error())
		return &StoppedError{Reason: err.Error(), Code: "config"}
	}
	attempt := 0
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
		welcomed, err := s.connect(ctx, workerID, token)
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
		if welcomed {
			attempt = 0
		}
		attempt++
		wait := Backoff(attempt)
		var detail string
		var unreachable *dialError
		if errors.As(err, &unreachable) {
			detail = fmt.Sprintf("studio unreachable, retrying in %s", secs(wait))
		} else {
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

func secs(d time.Duration) string {
	return fmt.Sprintf("%d s", int(math.Ceil(d.Seconds())))
}

// dialError marks a failure to reach the studio at all.
type dialError struct{ err error }

func (e *dialError) Error() string { return "cannot reach the studio: " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// protocolError marks a frame this worker cannot read; the session drops
// and reconnects.
type protocolError struct{ err error }

func (e *protocolError) Error() string {
	return "the studio sent a frame this worker cannot read: " + e.err.Error()
}
func (e *protocolError) Unwrap() error { return e.err }

type inbound struct {
	frame any
	err   error
}

// connect runs one socket from dial to teardown. welcomed reports whether
// the studio sent welcome on it (which resets the backoff).
func (s *Session) connect(ctx context.Context, workerID, token string) (welcomed bool, err error) {
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
			case *ErrorFrame:
				return false, stopForErrorFrame(f)
			default:
				s.log.Info("ignored a frame that came before welcome", "frame", fmt.Sprintf("%T", f))
			}
		}
	}

	hb := s.clock.NewTicker(HeartbeatInterval)
	defer hb.Stop()
	lt := s.clock.NewTicker(LogFlushInterval)
	defer lt.Stop()
	if err := s.heartbeat(ctx, conn); err != nil {
		return true, err
	}
	for {
		select {
		case <-ctx.Done():
			return true, ctx.Err()
		case <-idle.C():
			return true, errors.New("nothing heard from the studio for 20 s")
		case <-hb.C():
			if err := s.heartbeat(ctx, conn); err != nil {
				return true, err
			}
		case <-lt.C():
			if err := s.flushLogs(ctx, conn); err != nil {
				return true, err
			}
		case in := <-frames:
			if in.err != nil {
				return true, in.err
			}
			idle.Reset(ReadIdleTimeout)
			if err := s.dispatch(conn, in.frame); err != nil {
				return true, err
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
	case *Welcome:
		s.log.Info("ignored a second welcome", "workerId", f.WorkerID)
	case *ErrorFrame:
		return stopForErrorFrame(f)
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
			in.err = &protocolError{errors.New("a binary frame (the protocol carries JSON text frames only)")}
		default:
			f, derr := DecodeServerFrame(data)
			if derr != nil {
				in.err = &protocolError{derr}
			} else {
				in.frame = f
			}
		}
		var pe *protocolError
		if errors.As(in.err, &pe) {
			s.log.Warn("dropping the session and reconnecting: "+pe.Error(), "frame", bodySnippet(data))
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
// 4003 and 4004 stop the worker for good; anything else reconnects.
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
	if reason != "" {
		return fmt.Errorf("the studio closed the connection (%d %s)", code, reason)
	}
	return fmt.Errorf("the studio closed the connection (%d)", code)
}

func withDetail(reason, detail string) string {
	detail = strings.TrimSpace(detail)
	if detail == "" {
		return reason
	}
	return reason + " (" + detail + ")"
}

func stopForErrorFrame(f *ErrorFrame) *StoppedError {
	var reason string
	switch f.Code {
	case ErrCodeAuthFailed:
		reason = "the studio refused this worker's credentials; log out and register again"
	case ErrCodeDuplicateWorker:
		reason = "another Studio Worker connected with this worker's identity, so the studio closed this one"
	case ErrCodeWorkerDeleted:
		reason = "the studio deleted this worker; log out and register again"
	case ErrCodeProtocolViolation:
		reason = "the studio ended the session for a protocol violation"
	default:
		reason = "the studio ended the session with an error"
	}
	code, detail := f.Code, f.Code
	if code == "" {
		code = "error"
	}
	if msg := strings.TrimSpace(f.Message); msg != "" {
		detail = strings.TrimPrefix(detail+": "+msg, ": ")
	}
	return &StoppedError{Code: code, Reason: withDetail(reason, detail)}
}
