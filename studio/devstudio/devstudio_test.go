package devstudio

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/studio"
)

func TestRegistrationApprove(t *testing.T) {
	h := newHarness(t, nil)
	reqID, secret := h.register("install-a")

	// Posting again for the same install returns the same request.
	again, secret2 := h.register("install-a")
	if again != reqID {
		t.Fatalf("dedupe: got %s, want %s", again, reqID)
	}
	// The newest secret is the one that polls.
	if code, _ := h.poll(reqID, secret); code != http.StatusUnauthorized {
		t.Fatalf("old secret after re-post: %d, want 401", code)
	}
	secret = secret2

	if code, out := h.poll(reqID, secret); code != 200 || out["status"] != "pending" || len(out) != 1 {
		t.Fatalf("pending poll: %d %v", code, out)
	}
	if code, _ := h.poll(reqID, "not-the-secret"); code != http.StatusUnauthorized {
		t.Fatalf("wrong secret: %d, want 401", code)
	}
	if code, _ := h.poll("rr-unknown", secret); code != http.StatusNotFound {
		t.Fatalf("unknown request: %d, want 404", code)
	}

	// Approval through the dev API.
	var rr RegisterRequest
	if code := h.do("POST", "/dev/register-requests/"+reqID+"/approve", "", nil, &rr); code != 200 || rr.Status != StatusApproved {
		t.Fatalf("approve: %d %+v", code, rr)
	}
	code, out := h.poll(reqID, secret)
	if code != 200 || out["status"] != "approved" || out["workerId"] != rr.WorkerID || len(out["authToken"]) != 64 {
		t.Fatalf("approved poll: %d %v", code, out)
	}
	first := out["authToken"]

	// Every poll after approval rotates the token: the first one stops working.
	_, out2 := h.poll(reqID, secret)
	if out2["authToken"] == first || out2["workerId"] != rr.WorkerID {
		t.Fatalf("second poll did not rotate the token: %v", out2)
	}
	if _, resp, err := h.dial(rr.WorkerID, first); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("rotated-out token: err %v resp %v, want 401", err, resp)
	}
	h.connect(rr.WorkerID, out2["authToken"], caps([]engine.TaskKind{engine.KindImage}, 8))

	// Only the hash is kept on disk.
	if err := h.srv.flush(); err != nil {
		t.Fatal(err)
	}
	state, err := os.ReadFile(filepath.Join(h.dataDir, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(state, []byte(out2["authToken"])) || bytes.Contains(state, []byte(secret)) {
		t.Fatal("state.json holds a raw token or secret")
	}
	if !bytes.Contains(state, []byte(sha256Hex(out2["authToken"]))) {
		t.Fatal("state.json lacks the token hash")
	}
}

func TestRegistrationReject(t *testing.T) {
	h := newHarness(t, nil)
	reqID, secret := h.register("install-b")
	var rr RegisterRequest
	if code := h.do("POST", "/dev/register-requests/"+reqID+"/reject", "", map[string]string{"reason": "unknown machine"}, &rr); code != 200 {
		t.Fatalf("reject: %d", code)
	}
	code, out := h.poll(reqID, secret)
	if code != 200 || out["status"] != "rejected" || out["reason"] != "unknown machine" {
		t.Fatalf("rejected poll: %d %v", code, out)
	}
	if err := h.srv.Approve(reqID); err == nil {
		t.Fatal("approving a rejected request succeeded")
	}
	var e apiError
	if code := h.do("POST", "/dev/register-requests/rr-nope/approve", "", nil, &e); code != 404 || e.Error == "" {
		t.Fatalf("approve unknown: %d %+v", code, e)
	}
}

func TestRegistrationAutoApprove(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.AutoApprove = true })
	reqID, secret := h.register("install-c")
	code, out := h.poll(reqID, secret)
	if code != 200 || out["status"] != "approved" || out["workerId"] == "" || out["authToken"] == "" {
		t.Fatalf("auto-approved poll: %d %v", code, out)
	}
}

func TestRegistrationBadInput(t *testing.T) {
	h := newHarness(t, nil)
	for name, body := range map[string]any{
		"no install":  map[string]any{"registrationSecretHash": strings.Repeat("a", 64)},
		"short hash":  map[string]any{"installId": "x", "registrationSecretHash": "abc"},
		"hash no hex": map[string]any{"installId": "x", "registrationSecretHash": strings.Repeat("z", 64)},
		"not object":  []int{1, 2},
	} {
		var e apiError
		if code := h.do("POST", "/graphics/api/workers/register-request", "", body, &e); code != 400 || e.Error == "" {
			t.Errorf("%s: %d %+v", name, code, e)
		}
	}
	var e apiError
	if code := h.do("GET", "/graphics/api/workers/register-request", "", nil, &e); code != 405 || e.Error == "" {
		t.Errorf("GET register-request: %d %+v", code, e)
	}
	if code := h.do("GET", "/nowhere", "", nil, &e); code != 404 {
		t.Errorf("unknown route: %d", code)
	}
}

func TestHelloWelcome(t *testing.T) {
	h := newHarness(t, nil)
	id, tok := h.newWorker()
	cl, _, err := h.dial(id, tok)
	if err != nil {
		t.Fatal(err)
	}
	if cl.c.Subprotocol() != studio.Subprotocol {
		t.Fatalf("subprotocol %q", cl.c.Subprotocol())
	}
	cl.send(studio.Hello{AuthToken: tok, Capabilities: caps([]engine.TaskKind{engine.KindLLM}, 6)})
	w, ok := cl.read().(*studio.Welcome)
	if !ok || w.WorkerID != id {
		t.Fatalf("welcome: %#v", w)
	}
	if ts, err := time.Parse(time.RFC3339, w.ServerTime); err != nil || !ts.Equal(h.clock.Now()) {
		t.Fatalf("serverTime %q: %v", w.ServerTime, err)
	}
	cl.heartbeat(caps([]engine.TaskKind{engine.KindLLM}, 6), "")
	ws, err := h.srv.WaitWorker(ctxT(t), func(w WorkerStatus) bool { return w.ID == id && w.Heartbeats == 1 })
	if err != nil {
		t.Fatal(err)
	}
	if !ws.Connected || ws.State != "idle" || ws.LastHeartbeat == nil || ws.Capabilities.VRAMThresholdGB != 6 {
		t.Fatalf("worker status: %+v", ws)
	}
	var list []WorkerStatus
	if code := h.do("GET", "/dev/workers", "", nil, &list); code != 200 || len(list) != 1 || list[0].State != "idle" {
		t.Fatalf("GET /dev/workers: %d %+v", code, list)
	}
}

func TestUpgradeNeedsSubprotocol(t *testing.T) {
	h := newHarness(t, nil)
	id, tok := h.newWorker()
	_, resp, err := websocket.Dial(ctxT(t), h.wsURL(id), &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + tok}},
	})
	if err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("dial without subprotocol: %v %v", err, resp)
	}
}

func TestFrameBeforeWelcome(t *testing.T) {
	h := newHarness(t, nil)
	id, tok := h.newWorker()
	cl, _, err := h.dial(id, tok)
	if err != nil {
		t.Fatal(err)
	}
	cl.send(studio.Heartbeat{Capabilities: caps(nil, 1)})
	f, ok := cl.read().(*studio.ErrorFrame)
	if !ok || f.Code != studio.ErrCodeProtocolViolation || f.Message != "session not authenticated" {
		t.Fatalf("want protocol_violation, got %#v", f)
	}
	cl.expectClose("", studio.CloseProtocolViolation)
}

func TestWrongToken(t *testing.T) {
	h := newHarness(t, nil)
	id, tok := h.newWorker()
	for name, bad := range map[string]string{"missing": "", "wrong": strings.Repeat("0", 64)} {
		_, resp, err := h.dial(id, bad)
		if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("%s token upgrade: %v %v", name, err, resp)
		}
	}
	if _, resp, err := h.dial("wk-nobody", tok); err == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("unknown worker upgrade: %v %v", err, resp)
	}
	// The upgrade passes, but hello carries another token.
	cl, _, err := h.dial(id, tok)
	if err != nil {
		t.Fatal(err)
	}
	cl.send(studio.Hello{AuthToken: "forged", Capabilities: caps(nil, 1)})
	cl.expectClose(studio.ErrCodeAuthFailed, studio.CloseAuthFailed)
}

func TestDuplicateWorker(t *testing.T) {
	h := newHarness(t, nil)
	id, tok := h.newWorker()
	cp := caps([]engine.TaskKind{engine.KindImage}, 8)
	older := h.connect(id, tok, cp)
	newer := h.connect(id, tok, cp)
	older.expectClose(studio.ErrCodeDuplicateWorker, studio.CloseDuplicateWorker)
	newer.heartbeat(cp, "")
}

func TestProtocolViolations(t *testing.T) {
	for name, send := range map[string]func(*client){
		"accept unknown job":   func(c *client) { c.send(studio.Accept{JobID: "job-nope"}) },
		"fail unknown job":     func(c *client) { c.send(studio.Fail{JobID: "job-nope", Error: "x", Retryable: true}) },
		"complete unknown job": func(c *client) { c.send(studio.CompleteJSON{JobID: "job-nope", Result: json.RawMessage(`{}`)}) },
		"reject unknown job":   func(c *client) { c.send(studio.Reject{JobID: "job-nope", Reason: "no"}) },
		"readyForMore":         func(c *client) { c.sendRaw(websocket.MessageText, []byte(`{"type":"readyForMore"}`)) },
		"binary frame":         func(c *client) { c.sendRaw(websocket.MessageBinary, []byte{1, 2, 3}) },
		"malformed json":       func(c *client) { c.sendRaw(websocket.MessageText, []byte(`{"type":"heartbeat",`)) },
		"unknown type":         func(c *client) { c.sendRaw(websocket.MessageText, []byte(`{"type":"progress"}`)) },
		"hello twice":          func(c *client) { c.send(studio.Hello{AuthToken: "x"}) },
	} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, nil)
			id, tok := h.newWorker()
			cl := h.connect(id, tok, caps([]engine.TaskKind{engine.KindImage}, 8))
			send(cl)
			cl.expectClose(studio.ErrCodeProtocolViolation, studio.CloseProtocolViolation)
		})
	}
}

func TestOfferOnlyToFittingWorker(t *testing.T) {
	h := newHarness(t, nil)
	type w struct {
		name string
		cp   studio.Capabilities
		cl   *client
	}
	paused := caps([]engine.TaskKind{engine.KindImage}, 24)
	paused.AutoEnabled = false
	idleOnly := caps([]engine.TaskKind{engine.KindImage}, 24)
	idleOnly.OnlyWhenIdle, idleOnly.UserPresence = true, "active"
	ws := []*w{
		{name: "wrong kind", cp: caps([]engine.TaskKind{engine.KindLLM}, 24)},
		{name: "threshold too low", cp: caps([]engine.TaskKind{engine.KindImage}, 3.5)},
		{name: "paused", cp: paused},
		{name: "only when idle, person active", cp: idleOnly},
		{name: "fits, connected first", cp: caps([]engine.TaskKind{engine.KindImage, engine.KindLLM}, 4)},
		{name: "fits, connected later", cp: caps([]engine.TaskKind{engine.KindImage}, 24)},
	}
	for _, x := range ws {
		x.cl = h.idleWorker(x.cp)
		h.clock.Advance(time.Second)
	}
	jobID := h.enqueue(imageSpec(4))
	claim := ws[4].cl.expectOffer(jobID)
	if claim.Task == nil || claim.Task.Image == nil || claim.Task.Image.Prompt != "a lighthouse at dusk" ||
		claim.ModelSource == nil || claim.ModelSource.Engine != engine.EngineSDCpp || claim.VRAMGBEstimate != 4 ||
		claim.GameID == "" || claim.AssetName == "" || claim.Model != "z-image-turbo-q4_k_m.gguf" {
		t.Fatalf("claim: %+v", claim)
	}
	for _, x := range ws[:4] {
		x.cl.expectNoOffer(x.cp)
	}
	ws[5].cl.expectNoOffer(ws[5].cp)
	if st := h.job(jobID); st.State != JobClaimed || st.WorkerID != ws[4].cl.id {
		t.Fatalf("job: %+v", st)
	}

	// A second job goes to the other fitting worker; a stale heartbeat
	// keeps a worker out.
	h.clock.Advance(HeartbeatStaleAfter)
	second := h.enqueue(imageSpec(1))
	ws[5].cl.expectNoOffer(ws[5].cp) // that heartbeat is fresh again...
	ws[5].cl.expectOffer(second)     // ...and self-heal offers right after its ack
}

func TestAcceptCompleteJSON(t *testing.T) {
	h := newHarness(t, nil)
	id, tok := h.newWorker()
	cp := caps([]engine.TaskKind{engine.KindLLM}, 8)
	cl := h.connect(id, tok, cp)
	jobID := h.enqueue(llmSpec(2)) // queued: no heartbeat yet
	if st := h.job(jobID); st.State != JobQueued {
		t.Fatalf("before heartbeat: %+v", st)
	}
	cl.heartbeat(cp, "")
	cl.accept(jobID)
	h.waitJob(jobID, JobRunning)
	result := json.RawMessage(`{"object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Io, Europa, Titan"},"finish_reason":"stop"}]}`)
	cl.send(studio.CompleteJSON{JobID: jobID, Result: result, Prompt: "name three moons"})
	if ack, ok := cl.read().(*studio.CompleteAck); !ok || ack.JobID != jobID {
		t.Fatalf("want completeAck, got %#v", ack)
	}
	st := h.waitJob(jobID)
	if st.State != JobDone || st.Prompt != "name three moons" || st.Attempts != 0 || !bytes.Equal(st.Result, result) {
		t.Fatalf("done job: %+v", st)
	}
	stored, err := os.ReadFile(filepath.Join(h.dataDir, st.ResultFile))
	if err != nil || !bytes.Equal(stored, result) {
		t.Fatalf("stored result: %s %v", stored, err)
	}
	var got JobStatus
	if code := h.do("GET", "/dev/jobs/"+jobID, "", nil, &got); code != 200 || got.State != JobDone || !bytes.Contains(got.Result, []byte("Titan")) {
		t.Fatalf("GET /dev/jobs/id: %d %+v", code, got)
	}
	// The worker is idle again: the next job is offered at once.
	next := h.enqueue(llmSpec(2))
	cl.expectOffer(next)
}

func TestFailRetryableUntilAttemptLimit(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.MaxAttempts = 2 })
	cp := caps([]engine.TaskKind{engine.KindImage}, 8)
	cl := h.idleWorker(cp)
	jobID := h.enqueue(imageSpec(2))

	cl.accept(jobID)
	cl.send(studio.Fail{JobID: jobID, Error: "out of memory", Retryable: true})
	if ack, ok := cl.read().(*studio.FailAck); !ok || ack.JobID != jobID {
		t.Fatalf("want failAck, got %#v", ack)
	}
	cl.expectOffer(jobID) // requeued and offered again
	if st := h.job(jobID); st.Attempts != 1 || st.State != JobClaimed {
		t.Fatalf("after first failure: %+v", st)
	}
	cl.send(studio.Accept{JobID: jobID})
	cl.send(studio.Fail{JobID: jobID, Error: "out of memory", Retryable: true})
	if _, ok := cl.read().(*studio.FailAck); !ok {
		t.Fatal("want failAck")
	}
	st := h.waitJob(jobID)
	if st.State != JobFailed || st.Attempts != 2 || !strings.Contains(st.Error, "out of memory") {
		t.Fatalf("after attempt limit: %+v", st)
	}
	cl.expectNoOffer(cp)
}

func TestFailNotRetryable(t *testing.T) {
	h := newHarness(t, nil)
	cp := caps([]engine.TaskKind{engine.KindImage}, 8)
	cl := h.idleWorker(cp)
	jobID := h.enqueue(imageSpec(2))
	cl.accept(jobID)
	cl.send(studio.Fail{JobID: jobID, Error: "sdcpp engine cannot serve image tasks", Retryable: false})
	if _, ok := cl.read().(*studio.FailAck); !ok {
		t.Fatal("want failAck")
	}
	st := h.waitJob(jobID)
	if st.State != JobFailed || st.Attempts != 1 || !strings.Contains(st.Error, "cannot serve") {
		t.Fatalf("job: %+v", st)
	}
}

func TestRejectBusyRequeuesWithoutAttempt(t *testing.T) {
	h := newHarness(t, nil)
	cp := caps([]engine.TaskKind{engine.KindImage}, 8)
	cl := h.idleWorker(cp)
	jobID := h.enqueue(imageSpec(2))
	cl.expectOffer(jobID)
	cl.send(studio.Reject{JobID: jobID, Reason: studio.ReasonBusy, Code: studio.RejectBusy})
	h.waitJob(jobID, JobQueued)
	// Not offered again at once: the heartbeat's ack comes first, and only
	// that heartbeat re-opens offers to this worker.
	cl.send(studio.Heartbeat{Capabilities: cp})
	if f, ok := cl.read().(*studio.HeartbeatAck); !ok {
		t.Fatalf("want heartbeatAck before any new offer, got %#v", f)
	}
	cl.expectOffer(jobID)
	if st := h.job(jobID); st.Attempts != 0 {
		t.Fatalf("a busy reject counted an attempt: %+v", st)
	}
	// Paused works the same way.
	cl.send(studio.Reject{JobID: jobID, Reason: studio.ReasonPaused, Code: studio.RejectPaused})
	h.waitJob(jobID, JobQueued)
	paused := cp
	paused.AutoEnabled = false
	cl.expectNoOffer(paused)
	cl.heartbeat(cp, "")
	cl.expectOffer(jobID)
}

func TestRejectWithoutCodeGoesElsewhere(t *testing.T) {
	h := newHarness(t, nil)
	cp := caps([]engine.TaskKind{engine.KindImage}, 8)
	a := h.idleWorker(cp)
	h.clock.Advance(time.Second)
	b := h.idleWorker(cp)
	jobID := h.enqueue(imageSpec(2))
	a.expectOffer(jobID)
	a.send(studio.Reject{JobID: jobID, Reason: "modelSource.engine onnx is not served here"})
	b.expectOffer(jobID)
	a.expectNoOffer(cp) // never offered to a again
}

func TestHeartbeatNamingUnknownJobMeansBusy(t *testing.T) {
	h := newHarness(t, nil)
	id, tok := h.newWorker()
	cp := caps([]engine.TaskKind{engine.KindImage}, 8)
	cl := h.connect(id, tok, cp)
	jobID := h.enqueue(imageSpec(2))
	cl.heartbeat(cp, "job-from-before-a-restart")
	cl.expectNoOffer(cp) // this heartbeat says idle: the offer follows its ack
	cl.expectOffer(jobID)
}

// droppedMidJob: an idle worker of capabilities cp accepts an image job,
// then its session drops; it returns once the studio has requeued the job
// and counts the worker offline.
func (h *harness) droppedMidJob(cp studio.Capabilities) (*client, JobStatus) {
	h.t.Helper()
	cl := h.idleWorker(cp)
	jobID := h.enqueue(imageSpec(2))
	cl.accept(jobID)
	h.waitJob(jobID, JobRunning)
	_ = cl.c.Close(websocket.StatusNormalClosure, "bye")
	st := h.waitJob(jobID, JobQueued)
	if _, err := h.srv.WaitWorker(ctxT(h.t), func(w WorkerStatus) bool { return w.ID == cl.id && w.State == "offline" }); err != nil {
		h.t.Fatal(err)
	}
	return cl, st
}

func TestDisconnectReleasesClaim(t *testing.T) {
	h := newHarness(t, nil)
	cp := caps([]engine.TaskKind{engine.KindImage}, 8)
	cl, st := h.droppedMidJob(cp)
	jobID := st.ID
	if st.Attempts != 1 || st.WorkerID != "" {
		t.Fatalf("after drop: %+v", st)
	}
	// Reconnected, it gets the job again.
	cl2 := h.connect(cl.id, cl.tok, cp)
	cl2.heartbeat(cp, "")
	cl2.expectOffer(jobID)
}

// A final frame for a job the studio released meanwhile (the worker's
// session dropped while it ran) is answered as the hosted studio answers
// it: error protocol_violation and close 4002 (studio-protocol.md §3.1
// rule 8). The report is kept in LateReports; the job stays queued for
// another try and its state does not change.
func TestLateFinalFramesAreViolations(t *testing.T) {
	for name, send := range map[string]func(*client, string){
		"fail": func(c *client, id string) {
			c.send(studio.Fail{JobID: id, Error: "the worker stopped while running this job", Retryable: true})
		},
		"completeJson": func(c *client, id string) {
			c.send(studio.CompleteJSON{JobID: id, Result: json.RawMessage(`{"late":true}`)})
		},
	} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, nil)
			cp := caps([]engine.TaskKind{engine.KindImage}, 8)
			cl, st := h.droppedMidJob(cp)
			jobID := st.ID
			cl2 := h.connect(cl.id, cl.tok, cp)
			send(cl2, jobID)
			cl2.expectClose(studio.ErrCodeProtocolViolation, studio.CloseProtocolViolation)
			st = h.job(jobID)
			if st.State != JobQueued || st.Result != nil || len(st.LateReports) != 1 {
				t.Errorf("after the late %s: %+v", name, st)
			}
		})
	}
}

func multipartBody(t testing.TB, prompt, ext string, data []byte) (io.Reader, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	_ = mw.WriteField("prompt", prompt)
	_ = mw.WriteField("ext", ext)
	fw, err := mw.CreateFormFile("image", "x."+ext)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = fw.Write(data)
	_ = mw.Close()
	return &buf, mw.FormDataContentType()
}

func (h *harness) upload(workerID, jobID, token, ext string, data []byte) (int, string) {
	h.t.Helper()
	body, ct := multipartBody(h.t, "a lighthouse at dusk", ext, data)
	req, _ := http.NewRequest("POST", h.ts.URL+"/graphics/api/workers/"+workerID+"/jobs/"+jobID+"/complete", body)
	req.Header.Set("Content-Type", ct)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestMultipartComplete(t *testing.T) {
	h := newHarness(t, nil)
	cp := caps([]engine.TaskKind{engine.KindImage}, 8)
	cl := h.idleWorker(cp)
	jobID := h.enqueue(imageSpec(2))
	image := []byte("RIFF\x00\x00\x00\x00WEBPVP8 fake-but-real-bytes")

	// Not held yet (no offer accepted for another job id).
	if code, body := h.upload(cl.id, "job-other", cl.tok, "webp", image); code != http.StatusConflict {
		t.Fatalf("upload for a job not held: %d %s", code, body)
	}
	cl.accept(jobID)
	h.waitJob(jobID, JobRunning)

	if code, _ := h.upload(cl.id, jobID, "wrong-token", "webp", image); code != http.StatusUnauthorized {
		t.Fatalf("wrong token: %d", code)
	}
	h.srv.FailNextUploads(2)
	for i := 0; i < 2; i++ {
		if code, _ := h.upload(cl.id, jobID, cl.tok, "webp", image); code != http.StatusInternalServerError {
			t.Fatalf("injected failure %d: %d", i, code)
		}
	}
	if code, body := h.upload(cl.id, jobID, cl.tok, "bad/ext", image); code != http.StatusBadRequest {
		t.Fatalf("bad ext: %d %s", code, body)
	}
	if code, body := h.upload(cl.id, jobID, cl.tok, "webp", image); code != 200 {
		t.Fatalf("upload: %d %s", code, body)
	}
	st := h.waitJob(jobID)
	if st.State != JobDone || st.ResultFile != "results/"+jobID+".webp" || st.Prompt != "a lighthouse at dusk" {
		t.Fatalf("job: %+v", st)
	}
	stored, err := os.ReadFile(filepath.Join(h.dataDir, st.ResultFile))
	if err != nil || !bytes.Equal(stored, image) {
		t.Fatalf("stored: %q %v", stored, err)
	}
	// Done: a second upload finds nothing held.
	if code, _ := h.upload(cl.id, jobID, cl.tok, "webp", image); code != http.StatusConflict {
		t.Fatalf("second upload: %d", code)
	}
	// The stored result is served back.
	resp, err := http.Get(h.ts.URL + "/dev/results/" + jobID)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Equal(got, image) {
		t.Fatalf("GET result: %d %q", resp.StatusCode, got)
	}
}

func TestStaleSweep(t *testing.T) {
	h := newHarness(t, nil)
	cp := caps([]engine.TaskKind{engine.KindImage}, 8)
	cl := h.idleWorker(cp)
	jobID := h.enqueue(imageSpec(2))
	cl.accept(jobID)
	h.waitJob(jobID, JobRunning)

	h.clock.Advance(HeartbeatStaleAfter) // exactly 30 s: not older than 30 s yet
	h.srv.SweepNow()
	cl.heartbeat(cp, jobID) // still open; this heartbeat restarts the 30 s
	h.clock.Advance(HeartbeatStaleAfter + time.Second)
	h.srv.SweepNow()
	cl.expectClose("", studio.CloseNormal)
	st := h.waitJob(jobID, JobQueued)
	if st.Attempts != 1 {
		t.Fatalf("after sweep: %+v", st)
	}
}

func TestStaleSweepBeforeHello(t *testing.T) {
	h := newHarness(t, nil)
	id, tok := h.newWorker()
	cl, _, err := h.dial(id, tok)
	if err != nil {
		t.Fatal(err)
	}
	h.waitSessions(1) // the upgrade answer can reach the client before the studio files the socket
	h.clock.Advance(HeartbeatStaleAfter + time.Second)
	h.srv.SweepNow()
	cl.expectClose("", studio.CloseNormal)
}

func TestModelRange(t *testing.T) {
	models := t.TempDir()
	content := []byte("0123456789abcdefghij")
	if err := os.WriteFile(filepath.Join(models, "tiny.gguf"), content, 0o600); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, func(o *Options) { o.ModelsDir = models })
	mf, err := ModelFile(h.ts.URL, models, "tiny.gguf", engine.RoleModel)
	if err != nil {
		t.Fatal(err)
	}
	if mf.ApproxBytes != uint64(len(content)) || mf.SHA256 != sha256Hex(string(content)) || mf.Filename != "tiny.gguf" {
		t.Fatalf("model file: %+v", mf)
	}
	req, _ := http.NewRequest("GET", mf.URL, nil)
	req.Header.Set("Range", "bytes=12-")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || string(got) != "cdefghij" ||
		resp.Header.Get("Content-Range") != "bytes 12-19/20" {
		t.Fatalf("range: %d %q %q", resp.StatusCode, got, resp.Header.Get("Content-Range"))
	}
	req.Header.Set("Range", "bytes=99-")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
		t.Fatalf("range past the end: %d", resp.StatusCode)
	}
	for _, p := range []string{"/dev/models/missing.gguf", "/dev/models/..%2Fstate.json"} {
		resp, err := http.Get(h.ts.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode/100 != 4 {
			t.Fatalf("%s: %d", p, resp.StatusCode)
		}
	}
}

func TestRestartKeepsState(t *testing.T) {
	h := newHarness(t, nil)
	cp := caps([]engine.TaskKind{engine.KindImage}, 8)
	cl := h.idleWorker(cp)
	held := h.enqueue(imageSpec(2))
	cl.accept(held)
	h.waitJob(held, JobRunning)
	waiting := h.enqueue(imageSpec(2)) // stays queued: the only worker is busy

	// Stop the studio: the socket ends with 1001 (a plain disconnect).
	h.mu.Lock()
	h.clients = nil
	h.mu.Unlock()
	readErr := make(chan error, 1)
	go func() {
		for {
			if _, _, err := cl.c.Read(ctxT(t)); err != nil {
				readErr <- err
				return
			}
		}
	}()
	if err := h.srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-readErr; websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Fatalf("socket ended with %v, want 1001", err)
	}
	h.ts.Close()

	h.start()
	st := h.job(held)
	if st.State != JobQueued || st.Attempts != 1 {
		t.Fatalf("held job after restart: %+v", st)
	}
	if st := h.job(waiting); st.State != JobQueued || st.Attempts != 0 {
		t.Fatalf("queued job after restart: %+v", st)
	}
	// The approved worker's token still works.
	cl2 := h.connect(cl.id, cl.tok, cp)
	cl2.heartbeat(cp, held) // still running the old one: busy
	cl2.expectNoOffer(cp)   // now idle: offers follow this ack, oldest first
	cl2.expectOffer(held)
}

func TestRevokeAndDelete(t *testing.T) {
	h := newHarness(t, nil)
	cp := caps([]engine.TaskKind{engine.KindImage}, 8)
	id, tok := h.newWorker()
	cl := h.connect(id, tok, cp)
	var out map[string]string
	if code := h.do("POST", "/dev/workers/"+id+"/revoke", "", nil, &out); code != 200 {
		t.Fatalf("revoke: %d", code)
	}
	cl.expectClose("", studio.CloseNormal)
	if _, resp, err := h.dial(id, tok); err == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("upgrade after revoke: %v %v", err, resp)
	}

	cl2 := h.idleWorker(cp)
	jobID := h.enqueue(imageSpec(1))
	cl2.expectOffer(jobID)
	if err := h.srv.DeleteWorker(cl2.id); err != nil {
		t.Fatal(err)
	}
	cl2.expectClose(studio.ErrCodeWorkerDeleted, studio.CloseWorkerDeleted)
	if st := h.job(jobID); st.State != JobQueued || st.Attempts != 1 {
		t.Fatalf("job of a deleted worker: %+v", st)
	}
	if _, resp, err := h.dial(cl2.id, cl2.tok); err == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("upgrade after delete: %v %v", err, resp)
	}
}

func TestDevJobsAPI(t *testing.T) {
	h := newHarness(t, nil)
	good := map[string]any{
		"task":           map[string]any{"kind": "image", "prompt": "a red fox"},
		"model":          "m.gguf",
		"modelSource":    map[string]any{"engine": "sd-cpp", "files": []any{map[string]any{"role": "model", "url": "http://127.0.0.1/x", "filename": "x.gguf"}}},
		"vramGbEstimate": 3,
	}
	var created map[string]string
	if code := h.do("POST", "/dev/jobs", "", good, &created); code != http.StatusCreated || created["jobId"] == "" {
		t.Fatalf("create: %d %v", code, created)
	}
	var st JobStatus
	if code := h.do("GET", "/dev/jobs/"+created["jobId"], "", nil, &st); code != 200 || st.State != JobQueued || st.Kind != engine.KindImage || st.VRAMGBEstimate != 3 {
		t.Fatalf("get: %d %+v", code, st)
	}
	var all []JobStatus
	if code := h.do("GET", "/dev/jobs", "", nil, &all); code != 200 || len(all) != 1 {
		t.Fatalf("list: %d %+v", code, all)
	}

	bad := func(mut func(m map[string]any)) map[string]any {
		m := map[string]any{}
		for k, v := range good {
			m[k] = v
		}
		mut(m)
		return m
	}
	for name, body := range map[string]any{
		"no task":      bad(func(m map[string]any) { delete(m, "task") }),
		"unknown kind": bad(func(m map[string]any) { m["task"] = map[string]any{"kind": "poem"} }),
		"no prompt":    bad(func(m map[string]any) { m["task"] = map[string]any{"kind": "image"} }),
		"no model":     bad(func(m map[string]any) { delete(m, "model") }),
		"no source":    bad(func(m map[string]any) { delete(m, "modelSource") }),
		"no engine":    bad(func(m map[string]any) { m["modelSource"] = map[string]any{"files": []any{}} }),
		"path filename": bad(func(m map[string]any) {
			m["modelSource"] = map[string]any{"engine": "sd-cpp", "files": []any{map[string]any{"role": "model", "url": "u", "filename": "../x"}}}
		}),
		"no vram":        bad(func(m map[string]any) { delete(m, "vramGbEstimate") }),
		"negative vram":  bad(func(m map[string]any) { m["vramGbEstimate"] = -1 }),
		"vram as string": bad(func(m map[string]any) { m["vramGbEstimate"] = "4" }),
	} {
		var e apiError
		if code := h.do("POST", "/dev/jobs", "", body, &e); code != 400 || e.Error == "" {
			t.Errorf("%s: %d %+v", name, code, e)
		}
	}
	var e apiError
	if code := h.do("GET", "/dev/jobs/job-nope", "", nil, &e); code != 404 || e.Error == "" {
		t.Errorf("unknown job: %d %+v", code, e)
	}
	if code := h.do("DELETE", "/dev/jobs", "", nil, &e); code != 405 {
		t.Errorf("DELETE /dev/jobs: %d", code)
	}
}

func TestWorkerLogsAreKept(t *testing.T) {
	h := newHarness(t, nil)
	id, tok := h.newWorker()
	cp := caps([]engine.TaskKind{engine.KindImage}, 8)
	cl := h.connect(id, tok, cp)
	cl.send(studio.LogBatch{Entries: []studio.LogEntry{{TS: "2026-01-02T03:04:05.000Z", Level: "info", Category: "ws", Message: "offer received"}}})
	cl.heartbeat(cp, "") // frames are handled in order: the batch is in
	logs := h.srv.Logs(id)
	if len(logs) != 1 || logs[0].Message != "offer received" || logs[0].WorkerID != id {
		t.Fatalf("logs: %+v", logs)
	}
}

func TestNewRejectsBadFolders(t *testing.T) {
	if _, err := New(Options{}); err == nil {
		t.Fatal("New without a data folder succeeded")
	}
	if _, err := New(Options{DataDir: t.TempDir(), ModelsDir: filepath.Join(t.TempDir(), "absent")}); err == nil {
		t.Fatal("New with a missing models folder succeeded")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "state.json"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Options{DataDir: dir}); err == nil || !strings.Contains(err.Error(), "move it aside") {
		t.Fatalf("corrupt state: %v", err)
	}
}

func TestConnectNeedsUpgrade(t *testing.T) {
	h := newHarness(t, nil)
	id, tok := h.newWorker()
	var e apiError
	if code := h.do("GET", "/graphics/api/workers/"+id+"/connect", tok, nil, &e); code != http.StatusUpgradeRequired || e.Error == "" {
		t.Fatalf("plain GET on connect: %d %+v", code, e)
	}
}

func TestServeShutsDownCleanly(t *testing.T) {
	srv, err := New(Options{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	h := &harness{t: t, srv: srv, ts: &httptest.Server{URL: "http://" + ln.Addr().String()}}
	id, tok := h.newWorker()
	cl := h.connect(id, tok, caps([]engine.TaskKind{engine.KindImage}, 8))
	readErr := make(chan error, 1)
	go func() {
		for {
			if _, _, err := cl.c.Read(context.Background()); err != nil {
				readErr <- err
				return
			}
		}
	}()
	cancel()
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if err := <-readErr; websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Fatalf("socket ended with %v, want 1001", err)
	}
}

// BenchmarkOfferAcceptComplete measures one job's trip through the studio
// over loopback: enqueue -> offer on the socket -> accept -> completeJson ->
// completeAck.
func BenchmarkOfferAcceptComplete(b *testing.B) {
	h := newHarness(b, nil)
	cp := caps([]engine.TaskKind{engine.KindLLM}, 8)
	cl := h.idleWorker(cp)
	spec := llmSpec(1)
	result := json.RawMessage(`{"object":"chat.completion"}`)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		jobID := h.enqueue(spec)
		cl.expectOffer(jobID)
		cl.send(studio.Accept{JobID: jobID})
		cl.send(studio.CompleteJSON{JobID: jobID, Result: result, Prompt: "p"})
		if _, ok := cl.read().(*studio.CompleteAck); !ok {
			b.Fatal("want completeAck")
		}
	}
}

// BenchmarkOfferAccept measures enqueue -> offer on the socket -> accept
// seen by the studio (the job is then failed, untimed, to free the worker).
func BenchmarkOfferAccept(b *testing.B) {
	h := newHarness(b, nil)
	cp := caps([]engine.TaskKind{engine.KindImage}, 8)
	cl := h.idleWorker(cp)
	spec := imageSpec(1)
	ctx := ctxT(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		jobID := h.enqueue(spec)
		cl.expectOffer(jobID)
		cl.send(studio.Accept{JobID: jobID})
		if _, err := h.srv.WaitJob(ctx, jobID, JobRunning); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		cl.send(studio.Fail{JobID: jobID, Error: "benchmark", Retryable: false})
		if _, ok := cl.read().(*studio.FailAck); !ok {
			b.Fatal("want failAck")
		}
		b.StartTimer()
	}
}

// With studio's fake clock the background sweep runs on the clock's ticker:
// advancing past 30 s of silence closes the session with no SweepNow call.
func TestStaleSweepOnStudioFakeClock(t *testing.T) {
	fc := studio.NewFakeClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	h := newHarness(t, func(o *Options) { o.Clock = fc; o.SweepEvery = 0 })
	cp := caps([]engine.TaskKind{engine.KindImage}, 8)
	cl := h.idleWorker(cp)
	fc.Advance(HeartbeatStaleAfter + SweepInterval)
	cl.expectClose("", studio.CloseNormal)
	if _, err := h.srv.WaitWorker(ctxT(t), func(w WorkerStatus) bool { return w.ID == cl.id && !w.Connected }); err != nil {
		t.Fatal(err)
	}
}

// A heartbeat built before a result arrived still names the finished job;
// it must not keep the worker from its next offer.
func TestHeartbeatNamingFinishedJobIsNotBusy(t *testing.T) {
	h := newHarness(t, nil)
	cp := caps([]engine.TaskKind{engine.KindLLM}, 8)
	cl := h.idleWorker(cp)
	first := h.enqueue(llmSpec(1))
	cl.accept(first)
	cl.send(studio.CompleteJSON{JobID: first, Result: json.RawMessage(`{"ok":true}`), Prompt: "p"})
	if _, ok := cl.read().(*studio.CompleteAck); !ok {
		t.Fatal("want completeAck")
	}
	cl.heartbeat(cp, first) // late heartbeat naming the finished job
	second := h.enqueue(llmSpec(1))
	cl.expectOffer(second)
}
