package studio

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	mathrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/minisgg/studio-worker/engine"
)

// ---- a scripted studio on the other end of the socket ----

type peerFrame struct {
	frame any
	raw   string
	err   error
}

// wsPeer is the studio's side of one accepted socket. A background loop
// reads every frame so that close handshakes always complete.
type wsPeer struct {
	t      *testing.T
	c      *websocket.Conn
	req    *http.Request
	frames chan peerFrame
	gone   chan struct{}
	endErr error
}

func (p *wsPeer) loop() {
	defer close(p.gone)
	for {
		typ, data, err := p.c.Read(context.Background())
		if err != nil {
			p.endErr = err
			return
		}
		pf := peerFrame{raw: string(data)}
		if typ != websocket.MessageText {
			pf.err = errors.New("binary frame from the worker")
		} else {
			pf.frame, pf.err = DecodeWorkerFrame(data)
		}
		p.frames <- pf
	}
}

// next returns the next frame the worker sent.
func (p *wsPeer) next(ctx context.Context) any {
	p.t.Helper()
	select {
	case pf := <-p.frames:
		if pf.err != nil {
			p.t.Fatalf("worker sent a bad frame %q: %v", pf.raw, pf.err)
		}
		return pf.frame
	case <-p.gone:
		p.t.Fatalf("socket ended while waiting for a frame: %v", p.endErr)
	case <-ctx.Done():
		p.t.Fatal("no frame from the worker")
	}
	return nil
}

func (p *wsPeer) send(frame any) {
	p.t.Helper()
	data, err := Encode(frame)
	if err != nil {
		p.t.Fatal(err)
	}
	p.sendRaw(websocket.MessageText, string(data))
}

func (p *wsPeer) sendRaw(typ websocket.MessageType, data string) {
	p.t.Helper()
	if err := p.c.Write(context.Background(), typ, []byte(data)); err != nil {
		p.t.Fatalf("studio write: %v", err)
	}
}

// waitGone waits for the worker to end the socket and returns how it ended.
func (p *wsPeer) waitGone(ctx context.Context) error {
	p.t.Helper()
	select {
	case <-p.gone:
		return p.endErr
	case <-ctx.Done():
		p.t.Fatal("the worker kept the socket open")
	}
	return nil
}

type wsStudio struct {
	t        *testing.T
	srv      *httptest.Server
	peers    chan *wsPeer
	refuse   atomic.Int32 // HTTP status to answer upgrades with; 0 = accept
	attempts atomic.Int32
}

func newWSStudio(t *testing.T) *wsStudio {
	s := &wsStudio{t: t, peers: make(chan *wsPeer, 8)}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.attempts.Add(1)
		if r.URL.Path != "/graphics/api/workers/w-1/connect" {
			t.Errorf("upgrade on %s", r.URL.Path)
		}
		if got := r.Header.Get("Authorization"); got != "Bearer tok-1" {
			t.Errorf("upgrade Authorization %q", got)
		}
		if st := s.refuse.Load(); st != 0 {
			http.Error(w, "no", int(st))
			return
		}
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{Subprotocol}})
		if err != nil {
			t.Errorf("accept: %v", err)
			return
		}
		p := &wsPeer{t: t, c: c, req: r, frames: make(chan peerFrame, 256), gone: make(chan struct{})}
		go p.loop()
		s.peers <- p
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *wsStudio) accept(ctx context.Context) *wsPeer {
	s.t.Helper()
	select {
	case p := <-s.peers:
		return p
	case <-ctx.Done():
		s.t.Fatal("the worker did not connect")
	}
	return nil
}

// ---- the worker side ----

type offerSeen struct {
	sender Sender
	claim  JobOfferClaim
}

type sessHarness struct {
	t        *testing.T
	ctx      context.Context
	cancel   context.CancelFunc
	studio   *wsStudio
	clock    *FakeClock
	logs     *LogQueue
	logText  *syncBuffer
	statuses chan SessionStatus
	offers   chan offerSeen
	frames   chan any
	done     chan error
	credsOK  atomic.Bool
	sess     *Session
	unusable chan *UnusableOffer
	// rand is the jitter source: 0.5 (no jitter) unless a test sets it.
	rand func() float64

	mu    sync.Mutex
	caps  Capabilities
	jobID string
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func newSessHarness(t *testing.T) *sessHarness {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	h := &sessHarness{
		t: t, ctx: ctx, studio: newWSStudio(t), clock: NewFakeClock(t0), logs: NewLogQueue(0),
		logText:  &syncBuffer{},
		statuses: make(chan SessionStatus, 1024), offers: make(chan offerSeen, 8), frames: make(chan any, 8),
		done: make(chan error, 1), unusable: make(chan *UnusableOffer, 8),
		rand: func() float64 { return 0.5 },
		caps: Capabilities{MachineName: "box", Engine: "multi", VRAMThresholdGB: 12, AutoEnabled: true,
			TaskKinds: []engine.TaskKind{engine.KindLLM}},
	}
	h.credsOK.Store(true)
	return h
}

func (h *sessHarness) setCaps(f func(*Capabilities)) { h.mu.Lock(); f(&h.caps); h.mu.Unlock() }
func (h *sessHarness) setJob(id string)              { h.mu.Lock(); h.jobID = id; h.mu.Unlock() }

func (h *sessHarness) start() {
	runCtx, cancel := context.WithCancel(h.ctx)
	h.cancel = cancel
	s := NewSession(SessionConfig{
		BaseURL: h.studio.srv.URL,
		Credentials: func() (string, string, bool) {
			if !h.credsOK.Load() {
				return "", "", false
			}
			return "w-1", "tok-1", true
		},
		Capabilities: func() Capabilities { h.mu.Lock(); defer h.mu.Unlock(); return h.caps },
		CurrentJobID: func() string { h.mu.Lock(); defer h.mu.Unlock(); return h.jobID },
		OnOffer:      func(s Sender, c JobOfferClaim) { h.offers <- offerSeen{s, c} },
		OnFrame:      func(f any) { h.frames <- f },
		OnStatus: func(st SessionStatus) {
			select {
			case h.statuses <- st:
			default:
				h.t.Error("status channel full")
			}
		},
		OnUnusableOffer: func(s Sender, u *UnusableOffer) { h.unusable <- u },
		Logs:            h.logs,
		Log:             slog.New(slog.NewTextHandler(h.logText, nil)),
		Clock:           h.clock,
		Rand:            h.rand,
	})
	h.sess = s
	go func() { h.done <- s.Run(runCtx) }()
}

func (h *sessHarness) waitState(state SessionState) SessionStatus {
	h.t.Helper()
	for {
		select {
		case st := <-h.statuses:
			if st.State == state {
				return st
			}
			if st.State == SessionStopped && state != SessionStopped {
				h.t.Fatalf("stopped while waiting for %s: %s", state, st.StopReason)
			}
		case <-h.ctx.Done():
			h.t.Fatalf("never reached state %s", state)
		}
	}
}

func (h *sessHarness) runResult() error {
	h.t.Helper()
	select {
	case err := <-h.done:
		return err
	case <-h.ctx.Done():
		h.t.Fatal("Run did not return")
	}
	return nil
}

// waitAck waits for the status that records a heartbeatAck handled at
// fake time at.
func (h *sessHarness) waitAck(at time.Time) {
	h.t.Helper()
	for {
		if st := h.waitState(SessionConnected); st.LastHeartbeatAck.Equal(at) {
			return
		}
	}
}

// advanceWhenArmed waits until n timers/tickers are armed, then moves time.
func (h *sessHarness) advanceWhenArmed(n int, d time.Duration) {
	h.t.Helper()
	if err := h.clock.BlockUntilContext(h.ctx, n); err != nil {
		h.t.Fatalf("never had %d timers armed (have %d)", n, h.clock.Waiters())
	}
	h.clock.Advance(d)
}

// connectWelcomed runs the handshake and returns the peer after the first
// heartbeat.
func (h *sessHarness) connectWelcomed() *wsPeer {
	h.t.Helper()
	p := h.studio.accept(h.ctx)
	if _, ok := p.next(h.ctx).(*Hello); !ok {
		h.t.Fatal("first frame is not hello")
	}
	p.send(Welcome{WorkerID: "w-1", ServerTime: "2025-01-02T03:04:05.000Z"})
	if _, ok := p.next(h.ctx).(*Heartbeat); !ok {
		h.t.Fatal("first frame after welcome is not a heartbeat")
	}
	h.waitState(SessionConnected)
	return p
}

// ---- tests ----

func TestSessionHelloFirstNothingBeforeWelcome(t *testing.T) {
	h := newSessHarness(t)
	h.logs.Push(LogEntry{TS: "2025-01-02T03:04:05.000Z", Level: "info", Category: "t", Message: "queued early"})
	h.start()
	h.waitState(SessionConnecting)
	p := h.studio.accept(h.ctx)
	if got := p.c.Subprotocol(); got != Subprotocol {
		t.Fatalf("subprotocol %q", got)
	}
	if ua := p.req.Header.Get("User-Agent"); ua != UserAgent() {
		t.Fatalf("User-Agent %q", ua)
	}
	hello, ok := p.next(h.ctx).(*Hello)
	if !ok || hello.AuthToken != "tok-1" || hello.Capabilities.MachineName != "box" {
		t.Fatalf("first frame %#v", hello)
	}
	// Before welcome only the read-idle timer is armed: no heartbeat and
	// no log shipping, however long the studio takes (under 20 s).
	h.advanceWhenArmed(1, 19*time.Second)
	if n := h.clock.Waiters(); n != 1 {
		t.Fatalf("%d timers armed before welcome, want only the read-idle one", n)
	}
	p.send(HeartbeatAck{}) // not welcome: ignored, resets the idle timer
	p.send(Welcome{WorkerID: "w-1", ServerTime: "2025-01-02T03:04:05.000Z"})
	if _, ok := p.next(h.ctx).(*Heartbeat); !ok {
		t.Fatal("something other than a heartbeat came first after welcome")
	}
	h.waitState(SessionConnected)
	h.advanceWhenArmed(3, LogFlushInterval)
	lb, ok := p.next(h.ctx).(*LogBatch)
	if !ok || len(lb.Entries) == 0 || lb.Entries[0].Message != "queued early" {
		t.Fatalf("log batch %#v", lb)
	}
	h.cancel()
	if err := h.runResult(); err != nil {
		t.Fatalf("Run after cancel = %v, want nil", err)
	}
	end := p.waitGone(h.ctx)
	if websocket.CloseStatus(end) != websocket.StatusNormalClosure || !strings.Contains(end.Error(), "session ended") {
		t.Fatalf("socket ended with %v, want 1000 session ended", end)
	}
}

func TestSessionNoWelcomeTimesOut(t *testing.T) {
	h := newSessHarness(t)
	h.start()
	p := h.studio.accept(h.ctx)
	p.next(h.ctx) // hello
	h.advanceWhenArmed(1, ReadIdleTimeout)
	st := h.waitState(SessionRetrying)
	if st.RetryIn != time.Second || !strings.Contains(st.Detail, "welcome") {
		t.Fatalf("status %+v", st)
	}
	p.waitGone(h.ctx)
}

func TestSessionHeartbeatCadence(t *testing.T) {
	h := newSessHarness(t)
	h.start()
	p := h.connectWelcomed() // heartbeat at t=0
	h.setCaps(func(c *Capabilities) { c.VRAMThresholdGB = 8; c.AutoEnabled = false })
	h.setJob("job-1")
	h.advanceWhenArmed(3, HeartbeatInterval-LogFlushInterval) // 4 s: log ticks only, queue empty
	h.clock.Advance(LogFlushInterval)                         // 5 s
	hb, ok := p.next(h.ctx).(*Heartbeat)
	if !ok {
		t.Fatal("no heartbeat at 5 s")
	}
	if hb.CurrentJobID != "job-1" || hb.Capabilities.VRAMThresholdGB != 8 || hb.Capabilities.AutoEnabled {
		t.Fatalf("heartbeat not rebuilt from live values: %#v", hb)
	}
	p.send(HeartbeatAck{})
	h.waitAck(t0.Add(5 * time.Second))
	h.setJob("")
	h.clock.Advance(HeartbeatInterval) // 10 s
	hb, ok = p.next(h.ctx).(*Heartbeat)
	if !ok || hb.CurrentJobID != "" {
		t.Fatalf("idle heartbeat %#v", hb)
	}
	data, _ := Encode(hb)
	if strings.Contains(string(data), "currentJobId") {
		t.Fatalf("idle heartbeat carries currentJobId: %s", data)
	}
	select {
	case pf := <-p.frames:
		t.Fatalf("unexpected extra frame %q", pf.raw)
	default:
	}
}

func TestSessionLogBatch(t *testing.T) {
	h := newSessHarness(t)
	h.start()
	p := h.connectWelcomed()
	for _, m := range []string{"a", "b", "c"} {
		h.logs.Push(LogEntry{TS: "2025-01-02T03:04:05.000Z", Level: "info", Category: "t", Message: m, JobID: "j"})
	}
	h.advanceWhenArmed(3, LogFlushInterval)
	lb, ok := p.next(h.ctx).(*LogBatch)
	if !ok || len(lb.Entries) != 3 || lb.Entries[2].Message != "c" || lb.Entries[0].JobID != "j" {
		t.Fatalf("log batch %#v", lb)
	}
	if h.logs.Len() != 0 {
		t.Fatalf("%d entries left in the queue", h.logs.Len())
	}
	// Nothing queued: the next ticks send nothing until the heartbeat.
	h.clock.Advance(HeartbeatInterval - LogFlushInterval)
	if _, ok := p.next(h.ctx).(*Heartbeat); !ok {
		t.Fatal("expected only a heartbeat when the queue is empty")
	}
}

func TestSessionUnsentLogsGoBack(t *testing.T) {
	q := NewLogQueue(0)
	q.Push(LogEntry{Message: "a"})
	q.Push(LogEntry{Message: "b"})
	s := NewSession(SessionConfig{Logs: q})
	gone := &Conn{closed: make(chan struct{})}
	gone.markClosed()
	if err := s.flushLogs(context.Background(), gone); !errors.Is(err, ErrConnClosed) {
		t.Fatalf("flush on a gone socket: %v", err)
	}
	if got := q.Drain(0); msgs(got) != "a,b" {
		t.Fatalf("queue after a failed send: %s", msgs(got))
	}
}

func TestSessionReadIdleReconnects(t *testing.T) {
	h := newSessHarness(t)
	h.start()
	p := h.connectWelcomed()
	h.advanceWhenArmed(3, ReadIdleTimeout) // heartbeats go out, nothing comes back
	st := h.waitState(SessionRetrying)
	if st.RetryIn != time.Second || !strings.Contains(st.Detail, "20 s") {
		t.Fatalf("status %+v", st)
	}
	p.waitGone(h.ctx)
	h.advanceWhenArmed(1, time.Second)
	p2 := h.studio.accept(h.ctx)
	if _, ok := p2.next(h.ctx).(*Hello); !ok {
		t.Fatal("reconnect did not start with hello")
	}
}

func TestSessionAnyFrameKeepsItAlive(t *testing.T) {
	h := newSessHarness(t)
	h.start()
	p := h.connectWelcomed()
	for i := range 4 { // 4 × 15 s = 60 s, one frame from the studio every 15 s
		h.advanceWhenArmed(3, 15*time.Second)
		p.send(HeartbeatAck{})
		// Once the ack is handled the idle timer has been reset.
		h.waitAck(t0.Add(time.Duration(i+1) * 15 * time.Second))
	}
	if st := h.sess.Status(); st.State != SessionConnected {
		t.Fatalf("state %s after 60 s with frames every 15 s", st.State)
	}
	if n := h.studio.attempts.Load(); n != 1 {
		t.Fatalf("%d connections, want 1", n)
	}
}

func TestSessionBackoffSequence(t *testing.T) {
	h := newSessHarness(t)
	h.studio.refuse.Store(http.StatusServiceUnavailable)
	h.start()
	for i, want := range []int{1, 2, 4, 8, 16, 30, 30} {
		st := h.waitState(SessionRetrying)
		if st.RetryIn != time.Duration(want)*time.Second {
			t.Fatalf("retry %d: RetryIn %v, want %d s", i+1, st.RetryIn, want)
		}
		if want == 8 && st.Detail != "studio unreachable, retrying in 8 s" {
			t.Fatalf("Detail %q", st.Detail)
		}
		h.advanceWhenArmed(1, st.RetryIn)
	}
	if n := h.studio.attempts.Load(); n < 7 {
		t.Fatalf("%d attempts", n)
	}
}

func TestBackoff(t *testing.T) {
	want := []time.Duration{1, 2, 4, 8, 16, 30, 30, 30}
	for i, w := range want {
		if got := Backoff(i + 1); got != w*time.Second {
			t.Errorf("Backoff(%d) = %v, want %v", i+1, got, w*time.Second)
		}
	}
	if Backoff(0) != time.Second || Backoff(1000) != 30*time.Second {
		t.Error("Backoff edges")
	}
}

func TestSessionBackoffResetsAfterAHealthySession(t *testing.T) {
	h := newSessHarness(t)
	h.studio.refuse.Store(http.StatusBadGateway)
	h.start()
	for _, want := range []time.Duration{time.Second, 2 * time.Second} {
		st := h.waitState(SessionRetrying)
		if st.RetryIn != want {
			t.Fatalf("RetryIn %v, want %v", st.RetryIn, want)
		}
		if want == 2*time.Second {
			h.studio.refuse.Store(0)
		}
		h.advanceWhenArmed(1, st.RetryIn)
	}
	p := h.connectWelcomed()
	p.send(HeartbeatAck{}) // the first heartbeat acknowledged: healthy
	h.waitAck(h.clock.Now())
	p.c.Close(websocket.StatusGoingAway, "studio restarting")
	st := h.waitState(SessionRetrying)
	if st.RetryIn != time.Second || !strings.Contains(st.Detail, "studio restarting") {
		t.Fatalf("after a healthy session: %+v", st)
	}
	h.studio.refuse.Store(http.StatusBadGateway)
	h.advanceWhenArmed(1, st.RetryIn)
	if st := h.waitState(SessionRetrying); st.RetryIn != 2*time.Second {
		t.Fatalf("next failure RetryIn %v, want 2 s", st.RetryIn)
	}
}

// TestSessionHealthyAfterSomeSecondsWithoutAck: a session that stayed up
// HealthyAfter counts as healthy even if no heartbeat came back.
func TestSessionHealthyAfterSomeSecondsWithoutAck(t *testing.T) {
	h := newSessHarness(t)
	h.start()
	for i, want := range []time.Duration{time.Second, 2 * time.Second, time.Second} {
		p := h.connectWelcomed()
		if i == 2 {
			h.advanceWhenArmed(3, HealthyAfter)
			p.next(h.ctx) // a heartbeat went out, no ack came back
		}
		p.c.Close(websocket.StatusGoingAway, "bye")
		st := h.waitState(SessionRetrying)
		if st.RetryIn != want {
			t.Fatalf("session %d: RetryIn %v, want %v", i+1, st.RetryIn, want)
		}
		h.advanceWhenArmed(1, st.RetryIn)
	}
}

// TestSessionReconnectStormBacksOff is issue 10's item 7: a studio that
// sends welcome and then closes with 1001 got 21 connections in 20 s. The
// backoff now resets only after a healthy session, and every wait has
// jitter: at most 5 connections in 20 s of (fake) time.
func TestSessionReconnectStormBacksOff(t *testing.T) {
	h := newSessHarness(t)
	rng := mathrand.New(mathrand.NewPCG(10, 7))
	h.rand = rng.Float64
	h.start()
	start := h.clock.Now()
	connections := 0
	var waits []time.Duration
	for h.clock.Now().Sub(start) <= 20*time.Second {
		p := h.connectWelcomed()
		connections++
		p.c.Close(websocket.StatusGoingAway, "going away")
		st := h.waitState(SessionRetrying)
		base := Backoff(len(waits) + 1)
		lo, hi := time.Duration(float64(base)*(1-BackoffJitter)), time.Duration(float64(base)*(1+BackoffJitter))
		if st.RetryIn < lo || st.RetryIn >= hi {
			t.Fatalf("wait %d is %v, want within [%v, %v)", len(waits)+1, st.RetryIn, lo, hi)
		}
		waits = append(waits, st.RetryIn)
		h.advanceWhenArmed(1, st.RetryIn)
	}
	if connections > 5 {
		t.Fatalf("%d connections in 20 s (waits %v), want at most 5", connections, waits)
	}
	jittered := false
	for i, w := range waits {
		jittered = jittered || w != Backoff(i+1)
	}
	if !jittered {
		t.Fatalf("waits %v carry no jitter", waits)
	}
	t.Logf("%d connections in 20 s; waits %v", connections, waits)
}

func TestSession401StopsForGood(t *testing.T) {
	h := newSessHarness(t)
	h.studio.refuse.Store(http.StatusUnauthorized)
	h.start()
	err := h.runResult()
	var stop *StoppedError
	if !errors.As(err, &stop) || stop.Code != "401" || !strings.Contains(stop.Reason, "register again") {
		t.Fatalf("Run = %v", err)
	}
	st := h.waitState(SessionStopped)
	if st.StopReason != stop.Reason {
		t.Fatalf("status %+v", st)
	}
	if h.clock.Waiters() != 0 || h.studio.attempts.Load() != 1 {
		t.Fatal("it tried again after 401")
	}
}

func TestSessionTerminalCloseCodes(t *testing.T) {
	for _, tc := range []struct {
		code websocket.StatusCode
		want string
	}{
		{4001, "refused this worker's credentials"},
		{4003, "another Studio Worker"},
		{4004, "deleted this worker"},
	} {
		t.Run(tc.code.String(), func(t *testing.T) {
			h := newSessHarness(t)
			h.start()
			p := h.connectWelcomed()
			p.c.Close(tc.code, "bye")
			err := h.runResult()
			var stop *StoppedError
			if !errors.As(err, &stop) || !strings.Contains(stop.Reason, tc.want) || !strings.Contains(stop.Reason, "bye") {
				t.Fatalf("Run = %v", err)
			}
			if h.clock.Waiters() != 0 {
				t.Fatal("timers left after stopping")
			}
		})
	}
}

// TestSessionTroubleBacksOffEvenWhenHealthy is issue 10's item 17: frames
// the worker cannot use and closes 1011/4002 end the session, and the
// backoff grows even though each session was healthy (heartbeat acked), so
// a studio that misbehaves every time is not hammered every 2 s.
func TestSessionTroubleBacksOffEvenWhenHealthy(t *testing.T) {
	for _, tc := range []struct {
		name   string
		end    func(p *wsPeer)
		detail string
	}{
		{"binary frame", func(p *wsPeer) { p.sendRaw(websocket.MessageBinary, `{"type":"heartbeatAck"}`) }, "binary frame"},
		{"unknown type", func(p *wsPeer) { p.sendRaw(websocket.MessageText, `{"type":"pause"}`) }, "unknown frame type"},
		{"malformed JSON", func(p *wsPeer) { p.sendRaw(websocket.MessageText, `{"type":"offer","claim":`) }, "malformed"},
		{"close 1011", func(p *wsPeer) { p.c.Close(websocket.StatusInternalError, "oops") }, "1011 oops"},
		{"close 4002", func(p *wsPeer) { p.c.Close(CloseProtocolViolation, "accept for unknown jobId") }, "4002"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newSessHarness(t)
			h.start()
			for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
				p := h.connectWelcomed()
				p.send(HeartbeatAck{})
				h.waitAck(h.clock.Now())
				tc.end(p)
				st := h.waitState(SessionRetrying)
				if st.RetryIn != want || !strings.Contains(st.Detail, tc.detail) {
					t.Fatalf("session %d: %+v, want RetryIn %v and %q", i+1, st, want, tc.detail)
				}
				if i > 0 && !strings.Contains(st.Detail, fmt.Sprintf("%d times in a row", i+1)) {
					t.Fatalf("session %d: the repeat is not counted: %q", i+1, st.Detail)
				}
				p.waitGone(h.ctx)
				h.advanceWhenArmed(1, st.RetryIn)
			}
			select {
			case o := <-h.offers:
				t.Fatalf("a bad frame reached OnOffer: %+v", o)
			default:
			}
		})
	}
}

func TestSessionErrorFrameStops(t *testing.T) {
	for _, tc := range []struct {
		name     string
		welcomed bool
		code     string
		want     string
	}{
		{"auth_failed before welcome", false, ErrCodeAuthFailed, "refused this worker's credentials"},
		{"duplicate after welcome", true, ErrCodeDuplicateWorker, "another Studio Worker"},
		{"worker_deleted after welcome", true, ErrCodeWorkerDeleted, "deleted this worker"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newSessHarness(t)
			h.start()
			var p *wsPeer
			if tc.welcomed {
				p = h.connectWelcomed()
			} else {
				p = h.studio.accept(h.ctx)
				p.next(h.ctx)
			}
			p.send(ErrorFrame{Code: tc.code, Message: "details here"})
			err := h.runResult()
			var stop *StoppedError
			if !errors.As(err, &stop) || stop.Code != tc.code || !strings.Contains(stop.Reason, tc.want) ||
				!strings.Contains(stop.Reason, "details here") {
				t.Fatalf("Run = %#v", err)
			}
			if st := h.waitState(SessionStopped); st.StopReason != stop.Reason {
				t.Fatalf("status %+v", st)
			}
			p.waitGone(h.ctx)
			if h.studio.attempts.Load() != 1 {
				t.Fatal("reconnected after an error frame")
			}
		})
	}
}

// TestSessionTransientErrorFramesReconnect is issue 10's item 13: one
// internal_error frame took the worker offline for good. internal_error,
// protocol_violation and unknown codes now end the session only; it
// reconnects with backoff and shows a repeating one with its count.
func TestSessionTransientErrorFramesReconnect(t *testing.T) {
	for _, tc := range []struct {
		name     string
		welcomed bool
		code     string
		want     string
	}{
		{"internal_error after welcome", true, ErrCodeInternalError, "with an error (internal_error: details here)"},
		{"protocol_violation before welcome", false, ErrCodeProtocolViolation, "protocol violation (protocol_violation: details here)"},
		{"unknown code", true, "maintenance", "with an error (maintenance: details here)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newSessHarness(t)
			h.start()
			for i, want := range []time.Duration{time.Second, 2 * time.Second} {
				var p *wsPeer
				if tc.welcomed {
					p = h.connectWelcomed()
				} else {
					p = h.studio.accept(h.ctx)
					p.next(h.ctx)
				}
				p.send(ErrorFrame{Code: tc.code, Message: "details here"})
				st := h.waitState(SessionRetrying)
				if st.RetryIn != want || !strings.Contains(st.Detail, tc.want) {
					t.Fatalf("session %d: %+v", i+1, st)
				}
				if i == 1 && !strings.Contains(st.Detail, "2 times in a row") {
					t.Fatalf("the repeat is not counted: %q", st.Detail)
				}
				p.waitGone(h.ctx)
				h.advanceWhenArmed(1, st.RetryIn)
			}
			h.studio.accept(h.ctx) // a third connection: still reconnecting
			select {
			case err := <-h.done:
				t.Fatalf("Run returned %v after a transient error frame", err)
			default:
			}
		})
	}
}

func TestSessionBadFramesReconnect(t *testing.T) {
	for _, tc := range []struct {
		name   string
		typ    websocket.MessageType
		data   string
		logged string
	}{
		{"malformed JSON", websocket.MessageText, `{"type":"offer","claim":`, "malformed"},
		{"unknown type", websocket.MessageText, `{"type":"pause"}`, "unknown frame type"},
		{"offer without a job id", websocket.MessageText, `{"type":"offer","claim":{"task":{"kind":"llm","messages":[]}}}`, "without jobId"},
		{"binary frame", websocket.MessageBinary, `{"type":"heartbeatAck"}`, "binary frame"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newSessHarness(t)
			h.start()
			p := h.connectWelcomed()
			p.sendRaw(tc.typ, tc.data)
			st := h.waitState(SessionRetrying)
			if st.RetryIn != time.Second || !strings.Contains(st.Detail, "cannot read") {
				t.Fatalf("status %+v", st)
			}
			if logs := h.logText.String(); !strings.Contains(logs, tc.logged) || !strings.Contains(logs, "reconnecting") {
				t.Fatalf("reason not logged:\n%s", logs)
			}
			p.waitGone(h.ctx)
			select {
			case o := <-h.offers:
				t.Fatalf("a bad frame reached OnOffer: %+v", o)
			default:
			}
			h.advanceWhenArmed(1, time.Second)
			p2 := h.studio.accept(h.ctx)
			if _, ok := p2.next(h.ctx).(*Hello); !ok {
				t.Fatal("no hello on the new socket")
			}
		})
	}
}

// TestSessionUnusableOfferKeepsTheSession is issue 10's item 6: an offer
// whose messages use a form the worker cannot use dropped the session, 21
// times in 20 s, and the job was never answered. It now reaches
// OnUnusableOffer naming the field, and the session stays up for the next
// offer.
func TestSessionUnusableOfferKeepsTheSession(t *testing.T) {
	noTask := strings.Replace(wireClaimJSON, `"task":{"kind":"image","prompt":"a cat","width":1024,"height":1024,"steps":8,"seed":7},`, ``, 1)
	parts := strings.Replace(wireClaimJSON, `"task":{"kind":"image","prompt":"a cat","width":1024,"height":1024,"steps":8,"seed":7}`,
		`"task":{"kind":"llm","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}`, 1)
	h := newSessHarness(t)
	h.start()
	p := h.connectWelcomed()
	for _, tc := range []struct{ claim, field string }{{noTask, "task"}, {parts, "task"}} {
		p.sendRaw(websocket.MessageText, `{"type":"offer","claim":`+tc.claim+`}`)
		select {
		case u := <-h.unusable:
			if u.JobID != "job-1" || !strings.HasPrefix(u.Field, tc.field) {
				t.Fatalf("unusable offer %+v", u)
			}
		case <-h.ctx.Done():
			t.Fatal("the unusable offer was not handed over")
		}
	}
	// Text content parts (the OpenAI form) are an offer like any other.
	textParts := strings.Replace(parts, `[{"type":"image_url","image_url":{"url":"x"}}]`, `[{"type":"text","text":"hi"}]`, 1)
	p.sendRaw(websocket.MessageText, `{"type":"offer","claim":`+textParts+`}`)
	select {
	case o := <-h.offers:
		if o.claim.JobID != "job-1" || o.claim.Task.LLM == nil || o.claim.Task.LLM.Messages[0].Content != "hi" {
			t.Fatalf("claim %+v", o.claim)
		}
	case <-h.ctx.Done():
		t.Fatal("the offer with text content parts did not arrive")
	}
	if n := h.studio.attempts.Load(); n != 1 || h.sess.Status().State != SessionConnected {
		t.Fatalf("%d connections, state %s: the session did not stay up", n, h.sess.Status().State)
	}
}

func TestSessionOfferAndSendOnItsSocketOnly(t *testing.T) {
	h := newSessHarness(t)
	h.start()
	p := h.connectWelcomed()
	p.send(Offer{Claim: wireClaim()})
	var o offerSeen
	select {
	case o = <-h.offers:
	case <-h.ctx.Done():
		t.Fatal("no offer")
	}
	if o.claim.JobID != "job-1" || o.claim.ModelSource.Engine != engine.EngineSDCpp {
		t.Fatalf("claim %+v", o.claim)
	}
	conn := o.sender.(*Conn)
	if conn.WorkerID() != "w-1" || conn.AuthToken() != "tok-1" {
		t.Fatalf("conn identity %q %q", conn.WorkerID(), conn.AuthToken())
	}
	// Concurrent sends are safe.
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := o.sender.Send(h.ctx, Accept{JobID: "job-1"}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	for range 4 {
		if a, ok := p.next(h.ctx).(*Accept); !ok || a.JobID != "job-1" {
			t.Fatalf("expected accept, got %#v", a)
		}
	}
	p.send(CompleteAck{JobID: "job-1"})
	p.send(FailAck{JobID: "job-2"})
	for _, want := range []string{"job-1", "job-2"} {
		select {
		case f := <-h.frames:
			switch f := f.(type) {
			case *CompleteAck:
				if f.JobID != want {
					t.Fatalf("ack %+v", f)
				}
			case *FailAck:
				if f.JobID != want {
					t.Fatalf("ack %+v", f)
				}
			default:
				t.Fatalf("OnFrame got %T", f)
			}
		case <-h.ctx.Done():
			t.Fatal("no ack reached OnFrame")
		}
	}
	if logs := h.logText.String(); !strings.Contains(logs, "studio confirmed completion of job job-1") {
		t.Fatalf("ack not logged:\n%s", logs)
	}

	p.c.Close(websocket.StatusNormalClosure, "")
	h.waitState(SessionRetrying)
	if err := o.sender.Send(h.ctx, Fail{JobID: "job-1", Error: "x", Retryable: true}); !errors.Is(err, ErrConnClosed) {
		t.Fatalf("Send on the old socket = %v, want ErrConnClosed", err)
	}
	h.advanceWhenArmed(1, time.Second)
	p2 := h.studio.accept(h.ctx)
	p2.next(h.ctx) // hello
	select {
	case pf := <-p2.frames:
		t.Fatalf("the old socket's frame reached the new one: %q", pf.raw)
	default:
	}
}

func TestSessionWaitsForCredentials(t *testing.T) {
	h := newSessHarness(t)
	h.credsOK.Store(false)
	h.start()
	st := h.waitState(SessionOffline)
	if st.Detail != "waiting for approval" {
		t.Fatalf("status %+v", st)
	}
	h.advanceWhenArmed(1, CredentialsInterval)
	h.advanceWhenArmed(1, CredentialsInterval)
	if n := h.studio.attempts.Load(); n != 0 {
		t.Fatalf("%d connection attempts without credentials", n)
	}
	if len(h.statuses) != 0 {
		t.Fatal("the same offline status was reported again")
	}
	h.credsOK.Store(true)
	h.advanceWhenArmed(1, CredentialsInterval)
	h.connectWelcomed()
	if h.studio.attempts.Load() != 1 {
		t.Fatal("connected before credentials existed")
	}
}

func TestSessionBadBaseURLStops(t *testing.T) {
	s := NewSession(SessionConfig{BaseURL: "ftp://x", Credentials: func() (string, string, bool) { return "w", "t", true }})
	var stop *StoppedError
	if err := s.Run(context.Background()); !errors.As(err, &stop) {
		t.Fatalf("Run = %v", err)
	}
}

// BenchmarkSessionOfferToAccept measures loopback latency from the studio
// writing an offer to it reading the worker's accept.
func BenchmarkSessionOfferToAccept(b *testing.B) {
	studio := newWSStudioB(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := NewSession(SessionConfig{
		BaseURL:      studio.srv.URL,
		Credentials:  func() (string, string, bool) { return "w-1", "tok-1", true },
		Capabilities: func() Capabilities { return Capabilities{Engine: "multi"} },
		OnOffer: func(s Sender, c JobOfferClaim) {
			go s.Send(ctx, Accept{JobID: c.JobID})
		},
	})
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	c := <-studio.conns
	readFrame := func() any {
		_, data, err := c.Read(ctx)
		if err != nil {
			b.Fatal(err)
		}
		f, err := DecodeWorkerFrame(data)
		if err != nil {
			b.Fatal(err)
		}
		return f
	}
	readFrame() // hello
	welcome, _ := Encode(Welcome{WorkerID: "w-1"})
	c.Write(ctx, websocket.MessageText, welcome)
	readFrame() // heartbeat
	offer, _ := Encode(Offer{Claim: wireClaim()})
	b.ResetTimer()
	for b.Loop() {
		if err := c.Write(ctx, websocket.MessageText, offer); err != nil {
			b.Fatal(err)
		}
		for {
			if _, ok := readFrame().(*Accept); ok {
				break
			}
		}
	}
	b.StopTimer()
	cancel()
	<-done
}

type wsStudioB struct {
	srv   *httptest.Server
	conns chan *websocket.Conn
}

func newWSStudioB(b *testing.B) *wsStudioB {
	s := &wsStudioB{conns: make(chan *websocket.Conn, 1)}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{Subprotocol}})
		if err != nil {
			b.Error(err)
			return
		}
		s.conns <- c
	}))
	b.Cleanup(s.srv.Close)
	return s
}
