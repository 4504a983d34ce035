package studio_test

// End-to-end tests: the real worker (registrar, session, worker loop, result
// upload) against the real dev studio over loopback, and against a scripted
// raw studio for the frames the dev studio never sends (malformed frames,
// offers it would not make). Only the engine is a test double, and it lives
// here.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"

	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/logging"
	"github.com/minisgg/studio-worker/settings"
	"github.com/minisgg/studio-worker/studio"
	"github.com/minisgg/studio-worker/studio/devstudio"
)

// waitLimit bounds every wait; nothing here sleeps, the limit only turns a
// hang into a failure.
const waitLimit = 30 * time.Second

func waitCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	return ctx
}

// ---- the engine double ----

// stubRunner answers llm jobs with a chat.completion and image jobs with a
// small PNG. While hold is set, each job waits for a value on it.
type stubRunner struct {
	mu      sync.Mutex
	hold    chan struct{}
	started chan string
}

func newStubRunner() *stubRunner { return &stubRunner{started: make(chan string, 64)} }

func (r *stubRunner) Kinds() []engine.TaskKind {
	return []engine.TaskKind{engine.KindImage, engine.KindLLM}
}

func (r *stubRunner) SupportedModels() map[engine.TaskKind][]string {
	return map[engine.TaskKind][]string{engine.KindImage: {"sd-cpp:*"}, engine.KindLLM: {"llama-cpp:*"}}
}

func (r *stubRunner) Admit(engine.Admission) error { return nil }

func (r *stubRunner) VRAM() engine.VRAMInfo {
	return engine.VRAMInfo{Known: true, TotalBytes: 16 << 30, FreeBytes: 16 << 30, Source: "test"}
}

func (r *stubRunner) setHold(ch chan struct{}) {
	r.mu.Lock()
	r.hold = ch
	r.mu.Unlock()
}

func (r *stubRunner) Run(ctx context.Context, job engine.Job, p engine.ProgressFunc) (engine.Result, error) {
	select {
	case r.started <- job.ID:
	default: // nobody is counting (benchmarks run thousands of jobs)
	}
	r.mu.Lock()
	hold := r.hold
	r.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return engine.Result{}, ctx.Err()
		}
	}
	p(engine.Progress{Phase: engine.PhaseGenerate, Done: 1, Total: 1})
	switch job.Task.Kind {
	case engine.KindLLM:
		body, _ := json.Marshal(map[string]any{
			"object": "chat.completion", "model": job.Model,
			"choices": []any{map[string]any{"index": 0, "finish_reason": "stop",
				"message": map[string]any{"role": "assistant", "content": fmt.Sprintf("%d chars heard", len(job.Task.Prompt()))}}},
		})
		return engine.Result{JSON: body}, nil
	case engine.KindImage:
		return engine.Result{Bytes: tinyPNG(), Ext: "png", Stats: engine.Stats{Images: 1}}, nil
	}
	return engine.Result{}, &engine.CannotServeError{Engine: "stub", Kind: job.Task.Kind}
}

func tinyPNG() []byte {
	img := image.NewNRGBA(image.Rect(0, 0, 4, 4))
	img.SetNRGBA(1, 1, color.NRGBA{R: 200, A: 255})
	var buf bytes.Buffer
	_ = png.Encode(&buf, img)
	return buf.Bytes()
}

// ---- a dev studio on loopback that can be stopped and started again ----

type liveStudio struct {
	srv    *devstudio.Server
	addr   string
	data   string
	cancel context.CancelFunc
	done   chan error
}

func startStudio(t testing.TB, data, addr string, autoApprove bool) *liveStudio {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	srv, err := devstudio.New(devstudio.Options{DataDir: data, AutoApprove: autoApprove})
	if err != nil {
		t.Fatalf("devstudio: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ls := &liveStudio{srv: srv, addr: ln.Addr().String(), data: data, cancel: cancel, done: make(chan error, 1)}
	go func() { ls.done <- srv.Serve(ctx, ln) }()
	t.Cleanup(ls.stop)
	return ls
}

func (ls *liveStudio) url() string { return "http://" + ls.addr + "/" }

func (ls *liveStudio) stop() {
	if ls.cancel == nil {
		return
	}
	ls.cancel()
	ls.cancel = nil
	<-ls.done
}

// ---- the worker under test ----

type testWorker struct {
	w      *studio.Worker
	creds  settings.CredentialStore
	runErr chan error
	logs   *studio.LogQueue // the worker's lines not yet shipped
	mu     sync.Mutex
	set    settings.Settings
}

func newTestWorker(t testing.TB, studioURL string, runner studio.JobRunner, creds settings.CredentialStore, opts ...func(*studio.WorkerConfig)) *testWorker {
	t.Helper()
	if creds == nil {
		creds = settings.NewFileCredentialStore(t.TempDir())
	}
	tw := &testWorker{creds: creds, runErr: make(chan error, 1)}
	tw.set = settings.Default()
	tw.set.StudioURL = studioURL
	tw.set.VRAMBudgetGB = 8
	tw.set.InstallID = uuid.NewString()
	tw.set.ModelsDir = t.TempDir()
	logger, err := logging.New(logging.Options{Stderr: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	queue := studio.NewLogQueue(0)
	logger.AddSink(queue)
	tw.logs = queue
	t.Cleanup(func() { _ = logger.Close() })
	cfg := studio.WorkerConfig{
		Settings:             tw.settings,
		Runner:               runner,
		Creds:                creds,
		Log:                  logger.Slog(),
		Logs:                 queue,
		RegisterPollInterval: 20 * time.Millisecond,
		MachineName:          "it-box",
		Username:             "it",
	}
	for _, o := range opts {
		o(&cfg)
	}
	tw.w = studio.NewWorker(cfg)
	return tw
}

func (tw *testWorker) settings() settings.Settings {
	tw.mu.Lock()
	defer tw.mu.Unlock()
	return tw.set
}

func (tw *testWorker) start(t testing.TB) {
	t.Helper()
	go func() { tw.runErr <- tw.w.Run(context.Background()) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		if err := tw.w.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
}

// waitSnap waits until the worker publishes a snapshot that satisfies pred.
func waitSnap(t testing.TB, w *studio.Worker, what string, pred func(studio.Snapshot) bool) studio.Snapshot {
	t.Helper()
	ch, cancel := w.Subscribe()
	defer cancel()
	ctx, stop := context.WithTimeout(context.Background(), waitLimit)
	defer stop()
	var last studio.Snapshot
	for {
		select {
		case s := <-ch:
			if pred(s) {
				return s
			}
			last = s
		case <-ctx.Done():
			t.Fatalf("worker never reached %s; last snapshot: state %s, session %s (%s), idle %q, last reject %q",
				what, last.State, last.Session, last.SessionDetail, last.IdleReason, last.LastReject)
		}
	}
}

func llmSpec(prompt string) devstudio.JobSpec {
	return devstudio.JobSpec{
		Task: engine.Task{Kind: engine.KindLLM, LLM: &engine.LLMParams{Messages: []engine.ChatMessage{
			{Role: "user", Content: "earlier turn"}, {Role: "user", Content: prompt}}}},
		Model:          "tiny.gguf",
		ModelSource:    engine.ModelSource{Engine: engine.EngineLlamaCpp},
		VRAMGBEstimate: 1,
		GameID:         "game-1",
		AssetName:      "game/dialogue/1",
	}
}

func imageSpec(prompt string) devstudio.JobSpec {
	return devstudio.JobSpec{
		Task:           engine.Task{Kind: engine.KindImage, Image: &engine.ImageParams{Prompt: prompt, Ext: "png"}},
		Model:          "z-image",
		ModelSource:    engine.ModelSource{Engine: engine.EngineSDCpp},
		VRAMGBEstimate: 4,
		GameID:         "game-1",
		AssetName:      "game/creatures/fox",
	}
}

func enqueue(t testing.TB, ls *liveStudio, spec devstudio.JobSpec) string {
	t.Helper()
	id, err := ls.srv.EnqueueJob(spec)
	if err != nil {
		t.Fatalf("enqueue: %v", err)
	}
	return id
}

func waitJob(t testing.TB, ls *liveStudio, id string, states ...devstudio.JobState) devstudio.JobStatus {
	t.Helper()
	st, err := ls.srv.WaitJob(waitCtx(t), id, states...)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// connectedWorker starts a worker against ls, approves it when it asks and
// waits until its session is welcomed.
func connectedWorker(t testing.TB, ls *liveStudio, runner studio.JobRunner, opts ...func(*studio.WorkerConfig)) (*testWorker, string) {
	t.Helper()
	tw := newTestWorker(t, ls.url(), runner, nil, opts...)
	tw.start(t)
	ctx := waitCtx(t)
	req, err := ls.srv.WaitRegisterRequest(ctx, func(r devstudio.RegisterRequest) bool { return r.Status != "" })
	if err != nil {
		t.Fatal(err)
	}
	if req.Status == "pending" {
		if err := ls.srv.Approve(req.ID); err != nil {
			t.Fatal(err)
		}
	}
	ws, err := ls.srv.WaitWorker(ctx, func(w devstudio.WorkerStatus) bool { return w.Connected && w.RequestID == req.ID })
	if err != nil {
		t.Fatal(err)
	}
	waitSnap(t, tw.w, "connected", func(s studio.Snapshot) bool { return s.Session == studio.SessionConnected })
	return tw, ws.ID
}

// ---- the proofs ----

func TestIntegrationRegisterApproveOfferResultAck(t *testing.T) {
	ls := startStudio(t, t.TempDir(), "", false)
	tw := newTestWorker(t, ls.url(), newStubRunner(), nil)
	tw.start(t)

	ctx := waitCtx(t)
	req, err := ls.srv.WaitRegisterRequest(ctx, func(r devstudio.RegisterRequest) bool { return r.Status == "pending" })
	if err != nil {
		t.Fatal(err)
	}
	snap := waitSnap(t, tw.w, "waiting for approval", func(s studio.Snapshot) bool { return s.State == studio.StateWaitingApproval })
	if snap.Registration.RequestID != req.ID || snap.IdleReason != "waiting for approval" {
		t.Errorf("pending snapshot: %+v", snap.Registration)
	}
	if req.Capabilities == nil || req.Capabilities.Engine != "multi" || len(req.Capabilities.TaskKinds) != 2 {
		t.Errorf("register-request capabilities: %+v", req.Capabilities)
	}
	if err := ls.srv.Approve(req.ID); err != nil {
		t.Fatal(err)
	}
	snap = waitSnap(t, tw.w, "idle and connected", func(s studio.Snapshot) bool {
		return s.Session == studio.SessionConnected && s.State == studio.StateIdle
	})
	if snap.IdleReason != "no jobs for your models yet" {
		t.Errorf("idle reason %q", snap.IdleReason)
	}
	creds, err := tw.creds.Load()
	if err != nil || !creds.Registered() || creds.RegistrationSecret != "" {
		t.Fatalf("stored credentials after approval: %v, %v", creds, err)
	}

	long := strings.Repeat("Describe the dragon's hoard in loving detail. ", 80)
	llmID := enqueue(t, ls, llmSpec(long))
	st := waitJob(t, ls, llmID)
	if st.State != devstudio.JobDone || st.Prompt != long || !strings.Contains(string(st.Result), `"chat.completion"`) {
		t.Fatalf("llm job: state %s, prompt %d chars (want %d), result %s, error %q", st.State, len(st.Prompt), len(long), st.Result, st.Error)
	}

	imgID := enqueue(t, ls, imageSpec("a red fox in the snow"))
	st = waitJob(t, ls, imgID)
	if st.State != devstudio.JobDone || st.ResultFile == "" || st.Prompt != "a red fox in the snow" {
		t.Fatalf("image job: %+v", st)
	}
	data, err := os.ReadFile(filepath.Join(ls.data, filepath.FromSlash(st.ResultFile)))
	if err != nil || !bytes.Equal(data, tinyPNG()) {
		t.Fatalf("stored image differs from what the engine made (%v)", err)
	}

	snap = waitSnap(t, tw.w, "two jobs done", func(s studio.Snapshot) bool { return s.Counters.Done == 2 && s.Current == nil })
	if snap.Recent[0].ID != imgID || snap.Recent[1].ID != llmID || snap.Recent[0].Thumbnail == nil {
		t.Errorf("recent jobs: %+v", snap.Recent)
	}
	// The worker's log lines reach the studio as logBatch frames, job lines
	// tagged with their job id.
	deadline := waitCtx(t)
	if _, err := ls.srv.WaitLogs(deadline, creds.WorkerID, func(l []devstudio.WorkerLog) bool {
		return hasLog(l, "offer received "+llmID, llmID)
	}); err != nil {
		// Still queued means slow; an empty queue on a connected worker
		// means the line was shipped and lost.
		t.Fatalf("the worker's 'offer received' line never reached the studio: %v (worker: session %s, %d lines still queued)",
			err, tw.w.Snapshot().Session, tw.logs.Len())
	}
	// The studio confirmed the JSON result with completeAck, which the
	// worker logs.
	if _, err := ls.srv.WaitLogs(deadline, creds.WorkerID, func(l []devstudio.WorkerLog) bool {
		return hasLog(l, "studio confirmed completion of job "+llmID, llmID)
	}); err != nil {
		t.Fatalf("the completeAck was never acknowledged in the logs: %v", err)
	}
}

func hasLog(logs []devstudio.WorkerLog, prefix, job string) bool {
	for _, l := range logs {
		if strings.HasPrefix(l.Message, prefix) && l.JobID == job {
			return true
		}
	}
	return false
}

func TestIntegrationUpload500TwiceThenSuccess(t *testing.T) {
	ls := startStudio(t, t.TempDir(), "", true)
	tw, _ := connectedWorker(t, ls, newStubRunner())
	ls.srv.FailNextUploads(2)
	id := enqueue(t, ls, imageSpec("retry me"))
	st := waitJob(t, ls, id)
	if st.State != devstudio.JobDone || st.Attempts > 1 {
		t.Fatalf("job %+v", st)
	}
	snap := waitSnap(t, tw.w, "done", func(s studio.Snapshot) bool { return s.Counters.Done == 1 })
	if snap.Counters.Failed != 0 {
		t.Errorf("counters %+v", snap.Counters)
	}
}

// failOnceRunner fails the first run of each job retryably, then runs it.
type failOnceRunner struct {
	*stubRunner
	mu     sync.Mutex
	failed map[string]bool
}

func (r *failOnceRunner) Run(ctx context.Context, job engine.Job, p engine.ProgressFunc) (engine.Result, error) {
	r.mu.Lock()
	first := !r.failed[job.ID]
	r.failed[job.ID] = true
	r.mu.Unlock()
	if first {
		return engine.Result{}, errors.New("the GPU ran out of memory mid-job")
	}
	return r.stubRunner.Run(ctx, job, p)
}

// The dev studio offers a retryably failed job again as soon as it reads
// the fail; the worker has given its one-job gate back by then, so the
// offer is accepted at once instead of being turned down as busy (which
// would park the job until the next heartbeat).
func TestIntegrationRetryableFailureIsReofferedWithoutABusyReject(t *testing.T) {
	ls := startStudio(t, t.TempDir(), "", true)
	tw, _ := connectedWorker(t, ls, &failOnceRunner{stubRunner: newStubRunner(), failed: map[string]bool{}})
	id := enqueue(t, ls, llmSpec("try me twice"))
	st := waitJob(t, ls, id, devstudio.JobDone, devstudio.JobFailed)
	if st.State != devstudio.JobDone || st.Attempts != 1 {
		t.Fatalf("job %+v, want done after one failed attempt", st)
	}
	snap := waitSnap(t, tw.w, "the job recorded twice", func(s studio.Snapshot) bool {
		return s.Counters.Done == 1 && s.Counters.Failed == 1 && s.Current == nil
	})
	if c := snap.Counters; c.Offered != 2 || c.Accepted != 2 || c.Rejected != 0 {
		t.Errorf("counters %+v (last reject %q): the re-offer should be accepted straight away", c, snap.LastReject)
	}
}

func TestIntegrationPauseStopsOffersAndResumeBringsThemBack(t *testing.T) {
	ls := startStudio(t, t.TempDir(), "", true)
	tw, id := connectedWorker(t, ls, newStubRunner())
	ctx := waitCtx(t)
	tw.w.Pause()
	// The next heartbeat says autoEnabled:false.
	if _, err := ls.srv.WaitWorker(ctx, func(w devstudio.WorkerStatus) bool { return w.ID == id && w.Paused }); err != nil {
		t.Fatal(err)
	}
	job := enqueue(t, ls, llmSpec("wait for me"))
	if st, _ := ls.srv.Job(job); st.State != devstudio.JobQueued {
		t.Fatalf("a paused worker was offered the job: %+v", st)
	}
	tw.w.Resume()
	st := waitJob(t, ls, job)
	if st.State != devstudio.JobDone {
		t.Fatalf("after resume: %+v", st)
	}
}

// restartMidJob restarts the studio (same data, same address) while tw
// works on a job, and returns the new studio once tw is connected to it
// again, still working.
func restartMidJob(t *testing.T, ls *liveStudio, tw *testWorker) *liveStudio {
	t.Helper()
	waitSnap(t, tw.w, "working", func(s studio.Snapshot) bool { return s.State == studio.StateWorking })
	ls.stop()
	waitSnap(t, tw.w, "retrying", func(s studio.Snapshot) bool { return s.Session == studio.SessionRetrying })
	ls2 := startStudio(t, ls.data, ls.addr, true)
	waitSnap(t, tw.w, "reconnected while still working", func(s studio.Snapshot) bool {
		return s.Session == studio.SessionConnected && s.State == studio.StateWorking
	})
	return ls2
}

func TestIntegrationStudioRestartMidJob(t *testing.T) {
	data := t.TempDir()
	ls := startStudio(t, data, "", true)
	runner := newStubRunner()
	hold := make(chan struct{})
	runner.setHold(hold)
	tw, _ := connectedWorker(t, ls, runner)
	id := enqueue(t, ls, llmSpec("survive a restart"))
	<-runner.started
	ls2 := restartMidJob(t, ls, tw)
	// The job finishes after its session is gone: its result can only go on
	// the old socket, so it is lost, and the restarted studio, which
	// released the claim, offers the job again.
	runner.setHold(nil)
	close(hold)
	snap := waitSnap(t, tw.w, "the first run recorded as lost", func(s studio.Snapshot) bool {
		return len(s.Recent) > 0 && s.Recent[len(s.Recent)-1].Outcome == studio.OutcomeLost
	})
	if got := snap.Recent[len(snap.Recent)-1].Error; got != "the studio connection dropped before the result could be sent" {
		t.Errorf("lost job error %q", got)
	}
	st := waitJob(t, ls2, id)
	if st.State != devstudio.JobDone {
		t.Fatalf("after the restart: %+v", st)
	}
	waitSnap(t, tw.w, "the re-offered job done", func(s studio.Snapshot) bool { return s.Counters.Done == 1 })
}

func TestIntegrationRevokedTokenStopsTheWorker(t *testing.T) {
	ls := startStudio(t, t.TempDir(), "", true)
	tw, id := connectedWorker(t, ls, newStubRunner())
	if err := ls.srv.RevokeWorker(id); err != nil {
		t.Fatal(err)
	}
	var err error
	select {
	case err = <-tw.runErr:
	case <-waitCtx(t).Done():
		t.Fatal("Run did not return after the token was revoked")
	}
	var stop *studio.StoppedError
	if !errors.As(err, &stop) || stop.Code != "401" {
		t.Fatalf("Run returned %v, want a StoppedError with code 401", err)
	}
	snap := tw.w.Snapshot()
	if snap.State != studio.StateStopped || snap.IdleReason == "" {
		t.Errorf("snapshot after revoke: state %s, reason %q", snap.State, snap.IdleReason)
	}
	// Logging out forgets the dead credentials, and a new Run registers
	// again from scratch.
	if err := tw.w.Logout(); err != nil {
		t.Fatal(err)
	}
	if c, _ := tw.creds.Load(); c.Registered() {
		t.Fatal("credentials survived the logout")
	}
	go func() { tw.runErr <- tw.w.Run(context.Background()) }()
	if _, err := ls.srv.WaitWorker(waitCtx(t), func(w devstudio.WorkerStatus) bool { return w.Connected && w.ID != id }); err != nil {
		t.Fatal(err)
	}
}

// registerRaw gets credentials for a client that is not a studio.Worker.
func registerRaw(t testing.TB, ls *liveStudio) settings.Credentials {
	t.Helper()
	r := studio.NewRegistrar(studio.RegistrarConfig{
		BaseURL: ls.url(), Store: settings.NewFileCredentialStore(t.TempDir()), InstallID: uuid.NewString(),
		Capabilities: func() studio.Capabilities { return studio.Capabilities{Engine: "multi"} },
		PollInterval: 20 * time.Millisecond,
	})
	creds, err := r.Run(waitCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	return creds
}

func dialRaw(t testing.TB, ls *liveStudio, c settings.Credentials) *websocket.Conn {
	t.Helper()
	u, err := studio.ConnectURL(ls.url(), c.WorkerID)
	if err != nil {
		t.Fatal(err)
	}
	ws, _, err := websocket.Dial(waitCtx(t), u, &websocket.DialOptions{
		HTTPHeader:   http.Header{"Authorization": {"Bearer " + c.AuthToken}},
		Subprotocols: []string{studio.Subprotocol},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ws.CloseNow() })
	return ws
}

func sendRaw(t testing.TB, ws *websocket.Conn, frame any) {
	t.Helper()
	data, err := studio.Encode(frame)
	if err != nil {
		t.Fatal(err)
	}
	if err := ws.Write(waitCtx(t), websocket.MessageText, data); err != nil {
		t.Fatal(err)
	}
}

// readUntilClose returns the frames a raw client got and the close status.
func readUntilClose(t testing.TB, ws *websocket.Conn) ([]any, websocket.StatusCode) {
	t.Helper()
	ctx := waitCtx(t)
	var frames []any
	for {
		_, data, err := ws.Read(ctx)
		if err != nil {
			return frames, websocket.CloseStatus(err)
		}
		f, err := studio.DecodeServerFrame(data)
		if err != nil {
			t.Fatalf("studio sent an undecodable frame %s: %v", data, err)
		}
		frames = append(frames, f)
	}
}

func TestIntegrationFrameBeforeWelcomeIsAViolation(t *testing.T) {
	ls := startStudio(t, t.TempDir(), "", true)
	creds := registerRaw(t, ls)
	ws := dialRaw(t, ls, creds)
	sendRaw(t, ws, studio.Heartbeat{Capabilities: studio.Capabilities{Engine: "multi"}})
	frames, code := readUntilClose(t, ws)
	if code != studio.CloseProtocolViolation {
		t.Errorf("close code %d, want %d", code, studio.CloseProtocolViolation)
	}
	if len(frames) == 0 {
		t.Fatal("no error frame before the close")
	}
	if ef, ok := frames[len(frames)-1].(*studio.ErrorFrame); !ok || ef.Code != studio.ErrCodeProtocolViolation {
		t.Errorf("frames %#v", frames)
	}
	// The same credentials still work for a worker that follows the rules.
	store := settings.NewFileCredentialStore(t.TempDir())
	if err := store.Save(creds); err != nil {
		t.Fatal(err)
	}
	tw := newTestWorker(t, ls.url(), newStubRunner(), store)
	tw.start(t)
	waitSnap(t, tw.w, "connected", func(s studio.Snapshot) bool { return s.Session == studio.SessionConnected })
	id := enqueue(t, ls, llmSpec("after the violation"))
	if st := waitJob(t, ls, id); st.State != devstudio.JobDone {
		t.Fatalf("%+v", st)
	}
}

func TestIntegrationDuplicateWorkerStopsTheOlder(t *testing.T) {
	ls := startStudio(t, t.TempDir(), "", true)
	tw, _ := connectedWorker(t, ls, newStubRunner())
	creds, err := tw.creds.Load()
	if err != nil {
		t.Fatal(err)
	}
	ws := dialRaw(t, ls, creds)
	sendRaw(t, ws, studio.Hello{AuthToken: creds.AuthToken, Capabilities: studio.Capabilities{Engine: "multi"}})
	var runErr error
	select {
	case runErr = <-tw.runErr:
	case <-waitCtx(t).Done():
		t.Fatal("the older worker kept running after a duplicate connected")
	}
	var stop *studio.StoppedError
	if !errors.As(runErr, &stop) {
		t.Fatalf("Run returned %v, want a StoppedError", runErr)
	}
	if snap := tw.w.Snapshot(); snap.State != studio.StateStopped || !strings.Contains(strings.ToLower(snap.IdleReason), "duplicate") && !strings.Contains(snap.IdleReason, "another") {
		t.Errorf("snapshot: state %s, reason %q", snap.State, snap.IdleReason)
	}
}

// ---- a scripted raw studio, for frames the dev studio never sends ----

type rawStudio struct {
	srv   *httptest.Server
	conns chan *rawConn
}

type rawConn struct {
	ws     *websocket.Conn
	frames chan any // worker frames other than heartbeats and log batches
	done   chan struct{}
}

func startRawStudio(t testing.TB) *rawStudio {
	t.Helper()
	rs := &rawStudio{conns: make(chan *rawConn, 16)}
	rs.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/connect") || r.Header.Get("Authorization") != "Bearer raw-token" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{studio.Subprotocol}})
		if err != nil {
			return
		}
		ws.SetReadLimit(16 << 20)
		ctx := r.Context()
		_, data, err := ws.Read(ctx)
		if err != nil {
			return
		}
		if f, err := studio.DecodeWorkerFrame(data); err != nil {
			_ = ws.Close(websocket.StatusCode(studio.CloseProtocolViolation), "want hello")
			return
		} else if _, ok := f.(*studio.Hello); !ok {
			_ = ws.Close(websocket.StatusCode(studio.CloseProtocolViolation), "want hello")
			return
		}
		rc := &rawConn{ws: ws, frames: make(chan any, 64), done: make(chan struct{})}
		if err := rc.send(ctx, studio.Welcome{WorkerID: "w-raw", ServerTime: time.Now().UTC().Format(time.RFC3339)}); err != nil {
			return
		}
		rs.conns <- rc
		defer close(rc.done)
		for {
			_, data, err := ws.Read(ctx)
			if err != nil {
				return
			}
			f, err := studio.DecodeWorkerFrame(data)
			if err != nil {
				continue
			}
			switch f.(type) {
			case *studio.Heartbeat:
				_ = rc.send(ctx, studio.HeartbeatAck{})
			case *studio.LogBatch:
			default:
				rc.frames <- f
			}
		}
	}))
	t.Cleanup(rs.srv.Close)
	return rs
}

func (rc *rawConn) send(ctx context.Context, frame any) error {
	data, err := studio.Encode(frame)
	if err != nil {
		return err
	}
	return rc.ws.Write(ctx, websocket.MessageText, data)
}

func (rc *rawConn) sendText(t testing.TB, text string) {
	t.Helper()
	if err := rc.ws.Write(waitCtx(t), websocket.MessageText, []byte(text)); err != nil {
		t.Fatal(err)
	}
}

func (rc *rawConn) offer(t testing.TB, claim studio.JobOfferClaim) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := rc.send(ctx, studio.Offer{Claim: claim}); err != nil {
		t.Fatal(err)
	}
}

func (rc *rawConn) next(t testing.TB) any {
	t.Helper()
	timer := time.NewTimer(waitLimit)
	defer timer.Stop()
	select {
	case f := <-rc.frames:
		return f
	case <-timer.C:
		t.Fatal("the worker sent nothing")
		return nil
	}
}

func (rs *rawStudio) nextConn(t testing.TB) *rawConn {
	t.Helper()
	select {
	case rc := <-rs.conns:
		return rc
	case <-waitCtx(t).Done():
		t.Fatal("the worker did not (re)connect")
		return nil
	}
}

func rawWorker(t testing.TB, rs *rawStudio, runner studio.JobRunner) *testWorker {
	t.Helper()
	store := settings.NewFileCredentialStore(t.TempDir())
	if err := store.Save(settings.Credentials{WorkerID: "w-raw", AuthToken: "raw-token"}); err != nil {
		t.Fatal(err)
	}
	tw := newTestWorker(t, rs.srv.URL+"/", runner, store)
	tw.start(t)
	return tw
}

func rawClaim(id string, vram float64) studio.JobOfferClaim {
	spec := llmSpec("raw " + id)
	return studio.JobOfferClaim{JobID: id, GameID: "g", AssetName: "a", Model: spec.Model, VRAMGBEstimate: vram,
		Task: &spec.Task, ModelSource: &spec.ModelSource}
}

// TestIntegrationMalformedFramesReconnect: an offer that names its job but
// carries a field the worker cannot use is failed for that job alone, not
// retryable and naming the field, on the same session (issue 10, item 6);
// a frame the worker cannot read at all drops the session, and it comes
// back with backoff.
func TestIntegrationMalformedFramesReconnect(t *testing.T) {
	rs := startRawStudio(t)
	tw := rawWorker(t, rs, newStubRunner())
	rc := rs.nextConn(t)
	for _, tc := range []struct{ offer, field string }{
		{`{"type":"offer","claim":{"jobId":"j1","gameId":"g","assetName":"a","model":"m","vramGbEstimate":1,"modelSource":{"engine":"llama-cpp","files":[]}}}`, "task"},
		{`{"type":"offer","claim":{"jobId":"j2","gameId":"g","assetName":"a","model":"m","vramGbEstimate":1,"task":{"kind":"llm","messages":[]}}}`, "modelSource"},
		{`{"type":"offer","claim":{"jobId":"j3","gameId":"g","assetName":"a","model":"m","vramGbEstimate":1,"modelSource":{"engine":"llama-cpp","files":[]},` +
			`"task":{"kind":"llm","messages":[{"role":"user","content":{"parts":"x"}}]}}}`, "task"},
	} {
		rc.sendText(t, tc.offer)
		f, ok := rc.next(t).(*studio.Fail)
		if !ok || f.Retryable || !strings.Contains(f.Error, tc.field) {
			t.Fatalf("offer %s: want a not-retryable fail naming %s, got %#v", tc.offer, tc.field, f)
		}
	}
	for _, bad := range []string{`this is not json`, `{"type":"teleport","to":"mars"}`} {
		rc.sendText(t, bad)
		select {
		case <-rc.done:
		case <-waitCtx(t).Done():
			t.Fatalf("the worker kept the session after %s", bad)
		}
		rc = rs.nextConn(t)
	}
	// Still running: the next session takes a job.
	rc.offer(t, rawClaim("good", 1))
	if a, ok := rc.next(t).(*studio.Accept); !ok || a.JobID != "good" {
		t.Fatalf("want accept, got %#v", a)
	}
	if c, ok := rc.next(t).(*studio.CompleteJSON); !ok || c.JobID != "good" || c.Prompt != "raw good" {
		t.Fatalf("want completeJson, got %#v", c)
	}
	if s := tw.w.Snapshot(); s.State == studio.StateStopped {
		t.Fatalf("worker stopped: %q", s.StopReason)
	}
}

func TestIntegrationOffersTheWorkerTurnsDown(t *testing.T) {
	rs := startRawStudio(t)
	runner := newStubRunner()
	hold := make(chan struct{})
	runner.setHold(hold)
	tw := rawWorker(t, rs, runner)
	rc := rs.nextConn(t)

	// Above the VRAM budget (8 GB).
	rc.offer(t, rawClaim("big", 12))
	r, ok := rc.next(t).(*studio.Reject)
	if !ok || r.JobID != "big" || r.Code != "" || r.Reason != "needs 12 GB, your budget is 8 GB" {
		t.Fatalf("over budget: %#v", r)
	}
	waitSnap(t, tw.w, "idle with the budget reason", func(s studio.Snapshot) bool {
		return s.IdleReason == "last offer needed 12 GB, your budget is 8 GB"
	})

	// A second offer while busy.
	rc.offer(t, rawClaim("first", 1))
	if a, ok := rc.next(t).(*studio.Accept); !ok || a.JobID != "first" {
		t.Fatalf("want accept, got %#v", a)
	}
	<-runner.started
	rc.offer(t, rawClaim("second", 1))
	r, ok = rc.next(t).(*studio.Reject)
	if !ok || r.JobID != "second" || r.Code != studio.RejectBusy || r.Reason != studio.ReasonBusy {
		t.Fatalf("while busy: %#v", r)
	}
	close(hold)
	if c, ok := rc.next(t).(*studio.CompleteJSON); !ok || c.JobID != "first" {
		t.Fatalf("want completeJson, got %#v", c)
	}

	// An offer while paused.
	waitSnap(t, tw.w, "idle", func(s studio.Snapshot) bool { return s.Current == nil })
	tw.w.Pause()
	rc.offer(t, rawClaim("paused", 1))
	r, ok = rc.next(t).(*studio.Reject)
	if !ok || r.JobID != "paused" || r.Code != studio.RejectPaused || r.Reason != studio.ReasonPaused {
		t.Fatalf("while paused: %#v", r)
	}
	c := tw.w.Snapshot().Counters
	if c.Offered != 4 || c.Accepted != 1 || c.Rejected != 3 || c.Done != 1 {
		t.Errorf("counters %+v", c)
	}
}

// BenchmarkOfferToAccept measures offer → accept over loopback through the
// real session: the studio writes an offer, the worker decides, and its
// accept comes back. Each op also waits for the job's result so the next
// offer finds the gate free; "offer-accept-µs" is the figure that matters.
func BenchmarkOfferToAccept(b *testing.B) {
	rs := startRawStudio(b)
	tw := rawWorker(b, rs, newStubRunner())
	rc := rs.nextConn(b)
	waitSnap(b, tw.w, "connected", func(s studio.Snapshot) bool { return s.Session == studio.SessionConnected })
	claim := rawClaim("bench", 1)
	var total time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		claim.JobID = fmt.Sprintf("bench-%d", i)
		start := time.Now()
		rc.offer(b, claim)
		if _, ok := rc.next(b).(*studio.Accept); !ok {
			b.Fatal("want accept")
		}
		total += time.Since(start)
		if _, ok := rc.next(b).(*studio.CompleteJSON); !ok {
			b.Fatal("want completeJson")
		}
		waitSnap(b, tw.w, "idle", func(s studio.Snapshot) bool { return s.Current == nil })
	}
	b.ReportMetric(float64(total.Microseconds())/float64(b.N), "offer-accept-µs")
}

// TestIntegrationInternalErrorReconnects is issue 10's item 13 on the whole
// worker: one internal_error frame used to end Run (headless `run` exited 1
// and the window asked to log out). Now the worker reconnects, shows the
// reason, and takes the next job.
func TestIntegrationInternalErrorReconnects(t *testing.T) {
	rs := startRawStudio(t)
	tw := rawWorker(t, rs, newStubRunner())
	rc := rs.nextConn(t)
	rc.sendText(t, `{"type":"error","code":"internal_error","message":"the studio cannot store the result"}`)
	select {
	case <-rc.done:
	case <-waitCtx(t).Done():
		t.Fatal("the worker kept the session after the error frame")
	}
	snap := waitSnap(t, tw.w, "retrying", func(s studio.Snapshot) bool { return s.Session == studio.SessionRetrying })
	if !strings.Contains(snap.IdleReason, "internal_error: the studio cannot store the result") {
		t.Errorf("the reason is not shown: %q", snap.IdleReason)
	}
	rc = rs.nextConn(t)
	rc.offer(t, rawClaim("after", 1))
	if a, ok := rc.next(t).(*studio.Accept); !ok || a.JobID != "after" {
		t.Fatalf("want accept, got %#v", a)
	}
	select {
	case err := <-tw.runErr:
		t.Fatalf("Run returned %v after a transient error frame", err)
	default:
	}
}

// TestIntegrationLateResultIsAViolationAndTheWorkerCopes: the studio
// restarts while a job runs and releases it; the worker finishes the job
// with no session to send it on, keeps the result in its journal and sends
// it on the next session. Like the hosted studio, the dev studio answers
// that late frame with protocol_violation and close 4002. The worker is
// not stopped by it: it reconnects, the studio offers the job again, the
// worker answers from the result it made (the job does not run twice),
// and its journal ends empty.
func TestIntegrationLateResultIsAViolationAndTheWorkerCopes(t *testing.T) {
	data := t.TempDir()
	ls := startStudio(t, data, "", true)
	runner := newStubRunner()
	hold := make(chan struct{})
	runner.setHold(hold)
	journal, err := studio.OpenJournal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tw, workerID := connectedWorker(t, ls, runner, func(c *studio.WorkerConfig) { c.Journal = journal })
	id := enqueue(t, ls, llmSpec("outlive a restart"))
	<-runner.started
	ls2 := restartMidJob(t, ls, tw)
	runner.setHold(nil)
	close(hold)

	st := waitJob(t, ls2, id, devstudio.JobDone)
	if !strings.Contains(string(st.Result), "chars heard") {
		t.Fatalf("job %+v", st)
	}
	// The late frame closed a session with 4002; the worker said so in
	// its log (shipped to the studio on the next session).
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if _, err := ls2.srv.WaitLogs(ctx, workerID, func(ls []devstudio.WorkerLog) bool {
		for _, l := range ls {
			if strings.Contains(l.Message, "protocol_violation: completeJson for unknown jobId "+id) {
				return true
			}
		}
		return false
	}); err != nil {
		t.Fatalf("no protocol violation for the late result in the worker's log: %v", err)
	}
	snap := waitSnap(t, tw.w, "connected and idle", func(s studio.Snapshot) bool {
		return s.Session == studio.SessionConnected && s.State == studio.StateIdle
	})
	if snap.State == studio.StateStopped || len(tw.runErr) != 0 {
		t.Fatalf("the worker stopped: %+v", snap)
	}
	select {
	case again := <-runner.started:
		t.Fatalf("job %s ran a second time", again)
	default:
	}
	if e := journal.Entries(); len(e) != 0 {
		t.Errorf("journal still holds %+v", e)
	}
}
