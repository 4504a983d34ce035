package devstudio

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/studio"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type harness struct {
	t       testing.TB
	srv     *Server
	ts      *httptest.Server
	clock   *fakeClock
	dataDir string
	opts    Options
	mu      sync.Mutex
	clients []*client
}

func newHarness(t testing.TB, mod func(*Options)) *harness {
	t.Helper()
	clock := &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	opts := Options{DataDir: t.TempDir(), Clock: clock, SweepEvery: -1}
	if mod != nil {
		mod(&opts)
	}
	h := &harness{t: t, clock: clock, dataDir: opts.DataDir, opts: opts}
	h.start()
	t.Cleanup(h.stop)
	return h
}

func (h *harness) start() {
	h.t.Helper()
	srv, err := New(h.opts)
	if err != nil {
		h.t.Fatalf("New: %v", err)
	}
	h.srv = srv
	h.ts = httptest.NewServer(srv.Handler())
}

// stop closes the clients first so that the studio's close handshakes do
// not wait on sockets nobody reads.
func (h *harness) stop() {
	h.mu.Lock()
	for _, c := range h.clients {
		_ = c.c.CloseNow()
	}
	h.clients = nil
	h.mu.Unlock()
	if err := h.srv.Close(); err != nil {
		h.t.Errorf("Close: %v", err)
	}
	h.ts.Close()
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// do sends a JSON request and decodes a JSON answer into out (if non-nil).
func (h *harness) do(method, path, bearerTok string, body any, out any) int {
	h.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			h.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, h.ts.URL+path, rd)
	if err != nil {
		h.t.Fatal(err)
	}
	if bearerTok != "" {
		req.Header.Set("Authorization", "Bearer "+bearerTok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		h.t.Fatalf("%s %s: content type %q, body %s", method, path, ct, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			h.t.Fatalf("%s %s: %v in %s", method, path, err, data)
		}
	}
	return resp.StatusCode
}

func randHex(t testing.TB) string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// register posts a register-request and returns the request id and secret.
func (h *harness) register(installID string) (string, string) {
	h.t.Helper()
	secret := randHex(h.t)
	var out map[string]string
	code := h.do("POST", "/graphics/api/workers/register-request", "", map[string]any{
		"installId": installID, "registrationSecretHash": sha256Hex(secret),
		"capabilities": caps([]engine.TaskKind{engine.KindImage}, 8), "userAgent": "studio-worker/test",
	}, &out)
	if code != 200 || out["status"] != "pending" || !strings.HasPrefix(out["requestId"], "rr-") {
		h.t.Fatalf("register-request: %d %v", code, out)
	}
	return out["requestId"], secret
}

func (h *harness) poll(reqID, secret string) (int, map[string]string) {
	h.t.Helper()
	var out map[string]string
	code := h.do("GET", "/graphics/api/workers/register-requests/"+reqID, secret, nil, &out)
	return code, out
}

// newWorker registers, approves and collects credentials.
func (h *harness) newWorker() (workerID, token string) {
	h.t.Helper()
	reqID, secret := h.register("install-" + randHex(h.t)[:12])
	if err := h.srv.Approve(reqID); err != nil {
		h.t.Fatal(err)
	}
	code, out := h.poll(reqID, secret)
	if code != 200 || out["status"] != "approved" {
		h.t.Fatalf("poll: %d %v", code, out)
	}
	return out["workerId"], out["authToken"]
}

func caps(kinds []engine.TaskKind, threshold float64) studio.Capabilities {
	per := map[engine.TaskKind][]string{}
	for _, k := range kinds {
		per[k] = []string{"*"}
	}
	return studio.Capabilities{
		MachineName: "test-box", Username: "tester", AgentVersion: "0.0.1", Engine: "multi",
		VRAMTotalGB: threshold, VRAMThresholdGB: threshold, AutoEnabled: true,
		SupportedModels: []string{"*"}, TaskKinds: kinds, SupportedModelsPerKind: per,
	}
}

type client struct {
	t   testing.TB
	h   *harness
	c   *websocket.Conn
	id  string
	tok string
}

func (h *harness) wsURL(workerID string) string {
	return "ws" + strings.TrimPrefix(h.ts.URL, "http") + "/graphics/api/workers/" + workerID + "/connect"
}

func (h *harness) dial(workerID, token string) (*client, *http.Response, error) {
	hdr := http.Header{}
	if token != "" {
		hdr.Set("Authorization", "Bearer "+token)
	}
	c, resp, err := websocket.Dial(ctxT(h.t), h.wsURL(workerID), &websocket.DialOptions{
		HTTPHeader: hdr, Subprotocols: []string{studio.Subprotocol},
	})
	if err != nil {
		return nil, resp, err
	}
	c.SetReadLimit(maxFrame)
	cl := &client{t: h.t, h: h, c: c, id: workerID, tok: token}
	h.mu.Lock()
	h.clients = append(h.clients, cl)
	h.mu.Unlock()
	return cl, resp, nil
}

// connect dials, says hello and waits for welcome.
func (h *harness) connect(workerID, token string, cp studio.Capabilities) *client {
	h.t.Helper()
	cl, _, err := h.dial(workerID, token)
	if err != nil {
		h.t.Fatalf("dial: %v", err)
	}
	if got := cl.c.Subprotocol(); got != studio.Subprotocol {
		h.t.Fatalf("subprotocol %q, want %q", got, studio.Subprotocol)
	}
	cl.send(studio.Hello{AuthToken: token, Capabilities: cp})
	w, ok := cl.read().(*studio.Welcome)
	if !ok || w.WorkerID != workerID {
		h.t.Fatalf("want welcome for %s, got %#v", workerID, w)
	}
	return cl
}

// idleWorker is a new approved worker, connected with cp and past its
// first heartbeat: from here the studio may offer it jobs.
func (h *harness) idleWorker(cp studio.Capabilities) *client {
	h.t.Helper()
	id, tok := h.newWorker()
	cl := h.connect(id, tok, cp)
	cl.heartbeat(cp, "")
	return cl
}

// accept waits for the offer of jobID and accepts it.
func (cl *client) accept(jobID string) {
	cl.t.Helper()
	cl.expectOffer(jobID)
	cl.send(studio.Accept{JobID: jobID})
}

func (cl *client) send(frame any) {
	cl.t.Helper()
	data, err := studio.Encode(frame)
	if err != nil {
		cl.t.Fatal(err)
	}
	cl.sendRaw(websocket.MessageText, data)
}

func (cl *client) sendRaw(typ websocket.MessageType, data []byte) {
	cl.t.Helper()
	if err := cl.c.Write(ctxT(cl.t), typ, data); err != nil {
		cl.t.Fatalf("write: %v", err)
	}
}

func (cl *client) read() any {
	cl.t.Helper()
	typ, data, err := cl.c.Read(ctxT(cl.t))
	if err != nil {
		cl.t.Fatalf("read: %v", err)
	}
	if typ != websocket.MessageText {
		cl.t.Fatalf("studio sent a binary frame")
	}
	f, err := studio.DecodeServerFrame(data)
	if err != nil {
		cl.t.Fatalf("decode %s: %v", data, err)
	}
	return f
}

// heartbeat sends a heartbeat and expects its ack as the very next frame.
func (cl *client) heartbeat(cp studio.Capabilities, currentJob string) {
	cl.t.Helper()
	cl.send(studio.Heartbeat{Capabilities: cp, CurrentJobID: currentJob})
	if f, ok := cl.read().(*studio.HeartbeatAck); !ok {
		cl.t.Fatalf("want heartbeatAck, got %#v", f)
	}
}

// expectNoOffer proves that nothing was queued for this worker: the studio
// writes in order, so a heartbeat's ack arriving first means no offer was
// sent before it. (A heartbeat may itself trigger an offer; callers use it
// where the worker must not fit.)
func (cl *client) expectNoOffer(cp studio.Capabilities) {
	cl.t.Helper()
	cl.send(studio.Heartbeat{Capabilities: cp})
	if f, ok := cl.read().(*studio.HeartbeatAck); !ok {
		cl.t.Fatalf("want heartbeatAck (no offer), got %#v", f)
	}
}

func (cl *client) expectOffer(jobID string) studio.JobOfferClaim {
	cl.t.Helper()
	o, ok := cl.read().(*studio.Offer)
	if !ok {
		cl.t.Fatalf("want offer, got %#v", o)
	}
	if jobID != "" && o.Claim.JobID != jobID {
		cl.t.Fatalf("offer for %s, want %s", o.Claim.JobID, jobID)
	}
	return o.Claim
}

// expectClose reads until the socket ends and checks the error frame code
// (empty: none expected) and the close code.
func (cl *client) expectClose(errCode string, code int) {
	cl.t.Helper()
	var gotErr string
	for {
		typ, data, err := cl.c.Read(ctxT(cl.t))
		if err != nil {
			if got := websocket.CloseStatus(err); int(got) != code {
				cl.t.Fatalf("close status %d (%v), want %d", got, err, code)
			}
			break
		}
		if typ != websocket.MessageText {
			cl.t.Fatalf("binary frame")
		}
		f, derr := studio.DecodeServerFrame(data)
		if derr != nil {
			cl.t.Fatalf("decode: %v", derr)
		}
		if e, ok := f.(*studio.ErrorFrame); ok {
			gotErr = e.Code
		}
	}
	if gotErr != errCode {
		cl.t.Fatalf("error frame code %q, want %q", gotErr, errCode)
	}
}

func imageSpec(vram float64) JobSpec {
	return JobSpec{
		Task:  engine.Task{Kind: engine.KindImage, Image: &engine.ImageParams{Prompt: "a lighthouse at dusk"}},
		Model: "z-image-turbo-q4_k_m.gguf",
		ModelSource: engine.ModelSource{Engine: engine.EngineSDCpp, Files: []engine.ModelFile{
			{Role: engine.RoleDiffusionModel, URL: "http://127.0.0.1:1/dev/models/z.gguf", Filename: "z.gguf"},
		}},
		VRAMGBEstimate: vram,
	}
}

func llmSpec(vram float64) JobSpec {
	return JobSpec{
		Task: engine.Task{Kind: engine.KindLLM, LLM: &engine.LLMParams{Messages: []engine.ChatMessage{
			{Role: "user", Content: "first"}, {Role: "user", Content: "name three moons"},
		}}},
		Model: "qwen3-0.6b-q8_0.gguf",
		ModelSource: engine.ModelSource{Engine: engine.EngineLlamaCpp, Files: []engine.ModelFile{
			{Role: engine.RoleModel, URL: "http://127.0.0.1:1/dev/models/q.gguf", Filename: "q.gguf"},
		}},
		VRAMGBEstimate: vram,
	}
}

func (h *harness) enqueue(spec JobSpec) string {
	h.t.Helper()
	id, err := h.srv.EnqueueJob(spec)
	if err != nil {
		h.t.Fatal(err)
	}
	return id
}

func (h *harness) job(id string) JobStatus {
	h.t.Helper()
	st, ok := h.srv.Job(id)
	if !ok {
		h.t.Fatalf("no job %s", id)
	}
	return st
}

// waitJob waits for a state and fails the test on timeout.
func (h *harness) waitJob(id string, states ...JobState) JobStatus {
	h.t.Helper()
	st, err := h.srv.WaitJob(ctxT(h.t), id, states...)
	if err != nil {
		h.t.Fatal(err)
	}
	return st
}

// waitSessions waits until the studio has filed n open sockets.
func (h *harness) waitSessions(n int) {
	h.t.Helper()
	ctx := ctxT(h.t)
	for {
		h.srv.mu.Lock()
		got := len(h.srv.sessions)
		ch := h.srv.changed
		h.srv.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-ch:
		case <-ctx.Done():
			h.t.Fatalf("%d sockets filed, want %d", got, n)
		}
	}
}
