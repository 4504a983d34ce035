package studio

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minisgg/studio-worker/settings"
)

type regCall struct {
	Method, Path, Auth, UserAgent string
	Body                          RegisterRequest
}

type regReply struct {
	status int
	body   string
}

// regStudio is a scripted studio: each call is reported on calls and
// answered with the next reply queued for its method.
type regStudio struct {
	t     *testing.T
	srv   *httptest.Server
	calls chan regCall
	mu    sync.Mutex
	posts []regReply
	polls []regReply
}

func newRegStudio(t *testing.T) *regStudio {
	s := &regStudio{t: t, calls: make(chan regCall, 16)}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := regCall{Method: r.Method, Path: r.URL.Path, Auth: r.Header.Get("Authorization"), UserAgent: r.Header.Get("User-Agent")}
		if r.Method == http.MethodPost {
			if err := json.NewDecoder(r.Body).Decode(&c.Body); err != nil {
				t.Errorf("register-request body: %v", err)
			}
		}
		s.mu.Lock()
		var q *[]regReply
		if r.Method == http.MethodPost {
			q = &s.posts
		} else {
			q = &s.polls
		}
		if len(*q) == 0 {
			s.mu.Unlock()
			t.Errorf("unexpected %s %s", r.Method, r.URL.Path)
			w.WriteHeader(http.StatusTeapot)
			s.calls <- c
			return
		}
		rep := (*q)[0]
		*q = (*q)[1:]
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(rep.status)
		io.WriteString(w, rep.body)
		s.calls <- c
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *regStudio) post(status int, body string) {
	s.mu.Lock()
	s.posts = append(s.posts, regReply{status, body})
	s.mu.Unlock()
}
func (s *regStudio) poll(status int, body string) {
	s.mu.Lock()
	s.polls = append(s.polls, regReply{status, body})
	s.mu.Unlock()
}

func (s *regStudio) next(ctx context.Context) regCall {
	s.t.Helper()
	select {
	case c := <-s.calls:
		return c
	case <-ctx.Done():
		s.t.Fatal("no call to the studio")
	}
	return regCall{}
}

type regHarness struct {
	t       *testing.T
	ctx     context.Context // bounds the whole test
	runCtx  context.Context // given to Run
	studio  *regStudio
	clock   *FakeClock
	store   *settings.FileCredentialStore
	logs    *bytes.Buffer
	mu      sync.Mutex
	changes []Registration
	done    chan struct{}
	creds   settings.Credentials
	err     error
}

func newRegHarness(t *testing.T) *regHarness {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return &regHarness{
		t: t, ctx: ctx, runCtx: ctx, studio: newRegStudio(t), clock: NewFakeClock(t0),
		store: settings.NewFileCredentialStore(t.TempDir()), logs: &bytes.Buffer{},
		done: make(chan struct{}),
	}
}

type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func (h *regHarness) start() {
	r := NewRegistrar(RegistrarConfig{
		BaseURL: h.studio.srv.URL + "/", Store: h.store, InstallID: "5b0f4a3e-3c9a-4d7e-9f0e-1a2b3c4d5e6f",
		Capabilities: func() Capabilities { return Capabilities{MachineName: "box", Engine: "multi"} },
		Clock:        h.clock,
		Log:          slog.New(slog.NewTextHandler(&syncWriter{w: h.logs}, &slog.HandlerOptions{Level: slog.LevelDebug})),
		OnChange: func(reg Registration) {
			h.mu.Lock()
			h.changes = append(h.changes, reg)
			h.mu.Unlock()
		},
	})
	go func() {
		defer close(h.done)
		h.creds, h.err = r.Run(h.runCtx)
	}()
}

// tick waits until the registrar sleeps, then moves time by one poll
// interval.
func (h *regHarness) tick() {
	h.t.Helper()
	if err := h.clock.BlockUntilContext(h.ctx, 1); err != nil {
		h.t.Fatal("registrar never waited for its next tick")
	}
	h.clock.Advance(RegisterPollInterval)
}

func (h *regHarness) wait() {
	h.t.Helper()
	select {
	case <-h.done:
	case <-h.ctx.Done():
		h.t.Fatal("Run did not return")
	}
}

func (h *regHarness) states() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var s []string
	for _, c := range h.changes {
		// A failed try reports the same state again with its problem.
		if len(s) == 0 || s[len(s)-1] != c.State {
			s = append(s, c.State)
		}
	}
	return strings.Join(s, ",")
}

var hex64 = regexp.MustCompile(`^[0-9a-f]{64}$`)

// checkRequest checks a register-request and returns the hash it carried.
func checkRequest(t *testing.T, c regCall) string {
	t.Helper()
	if c.Method != http.MethodPost || c.Path != "/graphics/api/workers/register-request" || c.Auth != "" {
		t.Fatalf("register-request: %+v", c)
	}
	b := c.Body
	if b.InstallID != "5b0f4a3e-3c9a-4d7e-9f0e-1a2b3c4d5e6f" || !hex64.MatchString(b.RegistrationSecretHash) ||
		b.UserAgent != "studio-worker/"+Version || b.Capabilities.MachineName != "box" {
		t.Fatalf("register-request body: %+v", b)
	}
	if c.UserAgent != "studio-worker/"+Version {
		t.Fatalf("User-Agent %q", c.UserAgent)
	}
	return b.RegistrationSecretHash
}

// checkPoll checks a poll and that its Bearer secret hashes to hash.
func checkPoll(t *testing.T, c regCall, reqID, hash string) string {
	t.Helper()
	if c.Method != http.MethodGet || c.Path != "/graphics/api/workers/register-requests/"+reqID {
		t.Fatalf("poll: %+v", c)
	}
	secret, ok := strings.CutPrefix(c.Auth, "Bearer ")
	if !ok || !hex64.MatchString(secret) {
		t.Fatalf("poll auth %q is not Bearer <64 hex>", c.Auth)
	}
	sum := sha256.Sum256([]byte(secret))
	if got := hex.EncodeToString(sum[:]); got != hash {
		t.Fatalf("sha256(secret string) = %s, but the request carried %s", got, hash)
	}
	return secret
}

func TestRegistrationSecretHashIsOfTheHexString(t *testing.T) {
	// sha256("abc…") of the 64-char string, not of the 32 raw bytes.
	secret := strings.Repeat("ab", 32)
	if got := RegistrationSecretHash(secret); got != "271a413bd339c5709fdceaec41f14f11e9fbfb5042d72d331c65f32b284cd09a" {
		t.Fatalf("RegistrationSecretHash = %s", got)
	}
	raw, _ := hex.DecodeString(secret)
	rawSum := sha256.Sum256(raw)
	strSum := sha256.Sum256([]byte(secret))
	got := RegistrationSecretHash(secret)
	if got != hex.EncodeToString(strSum[:]) || got == hex.EncodeToString(rawSum[:]) {
		t.Fatalf("hash %s is not sha256 of the hex string", got)
	}
	s1, err := NewRegistrationSecret()
	s2, _ := NewRegistrationSecret()
	if err != nil || !hex64.MatchString(s1) || s1 == s2 {
		t.Fatalf("secrets %q %q %v", s1, s2, err)
	}
}

func TestRegisterApproved(t *testing.T) {
	h := newRegHarness(t)
	st := h.studio
	st.post(200, `{"requestId":"rr-1","status":"pending"}`)
	st.poll(200, `{"status":"pending"}`)
	st.poll(200, `{"status":"approved","workerId":"w-1","authToken":"tok-SECRET-0123"}`)
	h.start()

	hash := checkRequest(t, st.next(h.ctx))
	h.tick()
	secret := checkPoll(t, st.next(h.ctx), "rr-1", hash)
	mid, _ := h.store.Load()
	if mid.RequestID != "rr-1" || mid.RegistrationSecret != secret {
		t.Fatalf("pending credentials not stored: %v", mid)
	}
	h.tick()
	checkPoll(t, st.next(h.ctx), "rr-1", hash)
	h.wait()

	if h.err != nil {
		t.Fatal(h.err)
	}
	want := settings.Credentials{WorkerID: "w-1", AuthToken: "tok-SECRET-0123"}
	if h.creds != want {
		t.Fatalf("Run = %v", h.creds)
	}
	if stored, _ := h.store.Load(); stored != want {
		t.Fatalf("stored %v, want only the worker id and token", stored)
	}
	if got := h.states(); got != "none,pending,approved" {
		t.Fatalf("OnChange states %s", got)
	}
	// Approved stops polling: no timer left, and time passing calls nothing.
	h.clock.Advance(time.Hour)
	select {
	case c := <-st.calls:
		t.Fatalf("call after approval: %+v", c)
	default:
	}
	if h.clock.Waiters() != 0 {
		t.Fatal("a timer is still armed after approval")
	}
	logs := h.logs.String()
	if strings.Contains(logs, "tok-SECRET") || strings.Contains(logs, secret) {
		t.Fatalf("secret in logs:\n%s", logs)
	}
	if !strings.Contains(logs, "registration approved") {
		t.Fatalf("logs:\n%s", logs)
	}
}

func TestRegisterRejected(t *testing.T) {
	h := newRegHarness(t)
	h.studio.post(200, `{"requestId":"rr-1","status":"pending"}`)
	h.studio.poll(200, `{"status":"rejected","reason":"unknown machine"}`)
	h.start()
	checkRequest(t, h.studio.next(h.ctx))
	h.tick()
	h.studio.next(h.ctx)
	h.wait()
	var rej *RejectedError
	if !errors.As(h.err, &rej) || rej.Reason != "unknown machine" || !strings.Contains(rej.Error(), "unknown machine") {
		t.Fatalf("Run error %v", h.err)
	}
	if stored, _ := h.store.Load(); stored != (settings.Credentials{}) {
		t.Fatalf("request not cleared after rejection: %v", stored)
	}
	h.mu.Lock()
	last := h.changes[len(h.changes)-1]
	h.mu.Unlock()
	if last.State != RegRejected || last.Reason != "unknown machine" || last.RequestID != "rr-1" {
		t.Fatalf("last change %+v", last)
	}
}

func TestRegisterRejectedWithoutReason(t *testing.T) {
	h := newRegHarness(t)
	h.studio.post(200, `{"requestId":"rr-1","status":"pending"}`)
	h.studio.poll(200, `{"status":"rejected"}`)
	h.start()
	h.studio.next(h.ctx)
	h.tick()
	h.studio.next(h.ctx)
	h.wait()
	var rej *RejectedError
	if !errors.As(h.err, &rej) || rej.Reason != "" || !strings.Contains(rej.Error(), "no reason") {
		t.Fatalf("Run error %v", h.err)
	}
}

func TestRegister404StartsANewRequest(t *testing.T) {
	h := newRegHarness(t)
	st := h.studio
	st.post(200, `{"requestId":"rr-1","status":"pending"}`)
	st.poll(404, `{"error":"not found"}`)
	st.post(200, `{"requestId":"rr-2","status":"pending"}`)
	st.poll(200, `{"status":"approved","workerId":"w-2","authToken":"t2"}`)
	h.start()

	hash1 := checkRequest(t, st.next(h.ctx))
	h.tick()
	checkPoll(t, st.next(h.ctx), "rr-1", hash1)
	h.tick()
	hash2 := checkRequest(t, st.next(h.ctx)) // next tick: a new request, one call
	if hash2 == hash1 {
		t.Fatal("a new request reused the old secret")
	}
	h.tick()
	checkPoll(t, st.next(h.ctx), "rr-2", hash2)
	h.wait()
	if h.err != nil || h.creds.WorkerID != "w-2" {
		t.Fatalf("Run = %v, %v", h.creds, h.err)
	}
	if got := h.states(); got != "none,pending,none,pending,approved" {
		t.Fatalf("states %s", got)
	}
}

func TestRegisterServerErrorsStayPending(t *testing.T) {
	h := newRegHarness(t)
	st := h.studio
	st.post(200, `{"requestId":"rr-1","status":"pending"}`)
	st.poll(500, `oops`)
	st.poll(401, `{"error":"bad secret"}`)
	st.poll(200, `not json`)
	st.poll(200, `{"status":"approved","workerId":"w-1"}`) // no token: still pending
	st.poll(200, `{"status":"approved","workerId":"w-1","authToken":"t"}`)
	h.start()
	hash := checkRequest(t, st.next(h.ctx))
	var secret string
	for range 5 {
		h.tick()
		s := checkPoll(t, st.next(h.ctx), "rr-1", hash)
		if secret != "" && s != secret {
			t.Fatal("the secret changed while pending")
		}
		secret = s
	}
	h.wait()
	if h.err != nil || h.creds.AuthToken != "t" {
		t.Fatalf("Run = %v, %v", h.creds, h.err)
	}
	if got := h.states(); got != "none,pending,approved" {
		t.Fatalf("states %s", got)
	}
	if !strings.Contains(h.logs.String(), "status=500") {
		t.Fatalf("the 500 was not logged:\n%s", h.logs)
	}
	// The failed check was reported with its reason and the next try, and
	// the answer that came through cleared it.
	h.mu.Lock()
	defer h.mu.Unlock()
	var problems []string
	for _, c := range h.changes {
		if c.Problem != "" {
			problems = append(problems, c.Problem)
			if c.State != RegPending || !c.NextTry.After(t0) {
				t.Errorf("problem reported as %+v", c)
			}
		}
	}
	if len(problems) == 0 || problems[0] != "the studio did not answer the check (HTTP 500)" {
		t.Errorf("problems %q", problems)
	}
	if last := h.changes[len(h.changes)-1]; last.Problem != "" {
		t.Errorf("the approval still carries a problem: %+v", last)
	}
}

func TestRegisterRequestFailureReusesSecret(t *testing.T) {
	h := newRegHarness(t)
	st := h.studio
	st.post(503, `busy`)
	st.post(200, `{"status":"pending"}`) // no request id
	st.post(200, `{"requestId":"rr-1","status":"pending"}`)
	st.poll(200, `{"status":"approved","workerId":"w","authToken":"t"}`)
	h.start()
	first := checkRequest(t, st.next(h.ctx))
	h.tick()
	if again := checkRequest(t, st.next(h.ctx)); again != first {
		t.Fatal("a failed request's secret was replaced")
	}
	h.tick()
	checkRequest(t, st.next(h.ctx))
	h.tick()
	checkPoll(t, st.next(h.ctx), "rr-1", first)
	h.wait()
	if h.err != nil {
		t.Fatal(h.err)
	}
}

func TestRegisterRestartKeepsPollingTheSameRequest(t *testing.T) {
	h := newRegHarness(t)
	secret := strings.Repeat("0f", 32)
	if err := h.store.Save(settings.Credentials{RequestID: "rr-7", RegistrationSecret: secret}); err != nil {
		t.Fatal(err)
	}
	h.studio.poll(200, `{"status":"approved","workerId":"w-7","authToken":"t7"}`)
	h.start()
	c := h.studio.next(h.ctx) // at once, and a poll, not a new request
	checkPoll(t, c, "rr-7", RegistrationSecretHash(secret))
	h.wait()
	if h.err != nil || h.creds.WorkerID != "w-7" {
		t.Fatalf("Run = %v, %v", h.creds, h.err)
	}
	if got := h.states(); got != "pending,approved" {
		t.Fatalf("states %s", got)
	}
}

func TestRegisterFastPathMakesNoCalls(t *testing.T) {
	h := newRegHarness(t)
	want := settings.Credentials{WorkerID: "w", AuthToken: "t"}
	if err := h.store.Save(want); err != nil {
		t.Fatal(err)
	}
	h.start()
	h.wait()
	if h.err != nil || h.creds != want {
		t.Fatalf("Run = %v, %v", h.creds, h.err)
	}
	select {
	case c := <-h.studio.calls:
		t.Fatalf("fast path called the studio: %+v", c)
	default:
	}
	if got := h.states(); got != "approved" {
		t.Fatalf("states %s", got)
	}
}

func TestRegisterUnreachableStudioKeepsTrying(t *testing.T) {
	h := newRegHarness(t)
	h.studio.srv.Close()
	ctx, cancel := context.WithCancel(h.ctx)
	h.runCtx = ctx
	h.start()
	h.tick() // first attempt failed; it waits for the next tick
	h.tick()
	cancel()
	h.wait()
	if !errors.Is(h.err, context.Canceled) {
		t.Fatalf("Run error %v, want context.Canceled", h.err)
	}
	if !strings.Contains(h.logs.String(), "could not be reached") {
		t.Fatalf("logs:\n%s", h.logs)
	}
	h.mu.Lock()
	last := h.changes[len(h.changes)-1]
	h.mu.Unlock()
	if last.State != RegNone || !strings.HasPrefix(last.Problem, "the studio could not be reached: ") || last.NextTry.IsZero() {
		t.Fatalf("the window is not told why registering does not go on: %+v", last)
	}
}

func TestRegisterBadConfig(t *testing.T) {
	store := settings.NewFileCredentialStore(t.TempDir())
	if _, err := NewRegistrar(RegistrarConfig{BaseURL: "ftp://x", Store: store, InstallID: "i"}).Run(context.Background()); err == nil {
		t.Fatal("ftp studio URL accepted")
	}
	if _, err := NewRegistrar(RegistrarConfig{BaseURL: "https://x", Store: store}).Run(context.Background()); err == nil ||
		!strings.Contains(err.Error(), "install id") {
		t.Fatalf("missing install id: %v", err)
	}
}
