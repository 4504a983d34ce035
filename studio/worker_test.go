package studio

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/settings"
)

// The engine side's runner is what the worker is wired to in main.
var _ JobRunner = (*engine.Runner)(nil)

// ---- test doubles (they exist only here) ----

// nextTimer waits until the code under test arms a timer on c and returns
// the duration it asked for.
func nextTimer(t *testing.T, c *FakeClock) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal("no timer was armed")
	}
	return c.Pending()[0]
}

// workerT0 is where the worker tests' fake clock starts.
var workerT0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// fakeRunner is the engine side as the worker sees it. Run calls runFn,
// which the test supplies; started reports each job handed to it.
type fakeRunner struct {
	mu       sync.Mutex
	kinds    []engine.TaskKind
	models   map[engine.TaskKind][]string
	admitErr error
	admitted []engine.Admission
	vram     engine.VRAMInfo
	runFn    func(ctx context.Context, job engine.Job, p engine.ProgressFunc) (engine.Result, error)
	started  chan engine.Job
}

func newFakeRunner() *fakeRunner {
	return &fakeRunner{
		kinds: []engine.TaskKind{engine.KindLLM, engine.KindImage},
		models: map[engine.TaskKind][]string{
			engine.KindLLM:   {"llama-cpp:*", "tiny.gguf"},
			engine.KindImage: {"sd-cpp:*"},
		},
		vram:    engine.VRAMInfo{Known: true, TotalBytes: 8 << 30, FreeBytes: 6 << 30, Source: "test"},
		started: make(chan engine.Job, 256),
		runFn: func(ctx context.Context, job engine.Job, p engine.ProgressFunc) (engine.Result, error) {
			return engine.Result{JSON: json.RawMessage(`{"object":"chat.completion"}`)}, nil
		},
	}
}

func (r *fakeRunner) Kinds() []engine.TaskKind {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]engine.TaskKind(nil), r.kinds...)
}

func (r *fakeRunner) SupportedModels() map[engine.TaskKind][]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[engine.TaskKind][]string{}
	for k, v := range r.models {
		out[k] = append([]string(nil), v...)
	}
	return out
}

func (r *fakeRunner) Admit(a engine.Admission) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.admitted = append(r.admitted, a)
	return r.admitErr
}

func (r *fakeRunner) Run(ctx context.Context, job engine.Job, p engine.ProgressFunc) (engine.Result, error) {
	// Take runFn before saying the job started: a test that swaps runFn
	// for the next job once it sees this one start must not change what
	// this one runs.
	r.mu.Lock()
	fn := r.runFn
	r.mu.Unlock()
	r.started <- job
	return fn(ctx, job, p)
}

// releasingRunner also frees resident models, like engine.Runner.
type releasingRunner struct {
	*fakeRunner
	released chan struct{}
}

func (r releasingRunner) ReleaseAll() error {
	r.released <- struct{}{}
	return nil
}

func (r *fakeRunner) VRAM() engine.VRAMInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.vram
}

// fakeSender records frames; failOn makes Send fail for frames it matches.
// onWire, when set, runs after a frame is recorded but before Send returns:
// it plays a studio that reads the frame off the wire and answers while the
// worker is still inside Send.
type fakeSender struct {
	frames chan any
	mu     sync.Mutex
	failOn func(frame any) error
	onWire func(frame any)
}

func newFakeSender() *fakeSender { return &fakeSender{frames: make(chan any, 32)} }

func (s *fakeSender) Send(ctx context.Context, f any) error {
	s.mu.Lock()
	fail, onWire := s.failOn, s.onWire
	s.mu.Unlock()
	if fail != nil {
		if err := fail(f); err != nil {
			return err
		}
	}
	s.frames <- f
	if onWire != nil {
		onWire(f)
	}
	return nil
}

func (s *fakeSender) WorkerID() string  { return "w-test" }
func (s *fakeSender) AuthToken() string { return "tok-test" }

func (s *fakeSender) next(t *testing.T) any {
	t.Helper()
	select {
	case f := <-s.frames:
		return f
	case <-time.After(10 * time.Second):
		t.Fatal("no frame was sent")
		return nil
	}
}

func (s *fakeSender) none(t *testing.T) {
	t.Helper()
	select {
	case f := <-s.frames:
		t.Fatalf("unexpected frame %#v", f)
	default:
	}
}

type harness struct {
	w      *Worker
	runner *fakeRunner
	clock  *FakeClock
	mu     sync.Mutex
	set    settings.Settings
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{runner: newFakeRunner(), clock: NewFakeClock(workerT0)}
	h.set = settings.Default()
	h.set.VRAMBudgetGB = 8
	h.w = NewWorker(WorkerConfig{
		Settings:    h.settings,
		Runner:      h.runner,
		Creds:       settings.NewFileCredentialStore(t.TempDir()),
		Version:     "9.9.9",
		Clock:       h.clock,
		MachineName: "test-box",
		Username:    "tester",
	})
	t.Cleanup(func() {
		h.w.lifeCancel()
		done := make(chan struct{})
		go func() { h.w.jobs.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("a job goroutine outlived its test")
		}
	})
	return h
}

func (h *harness) settings() settings.Settings {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.set
}

func llmClaim(id string, vram float64, msgs ...string) JobOfferClaim {
	p := &engine.LLMParams{}
	for _, m := range msgs {
		p.Messages = append(p.Messages, engine.ChatMessage{Role: "user", Content: m})
	}
	return JobOfferClaim{
		JobID: id, GameID: "g1", AssetName: "game/x", Model: "tiny.gguf", VRAMGBEstimate: vram,
		Task:        &engine.Task{Kind: engine.KindLLM, LLM: p},
		ModelSource: &engine.ModelSource{Engine: engine.EngineLlamaCpp},
	}
}

func imageClaim(id string) JobOfferClaim {
	return JobOfferClaim{
		JobID: id, GameID: "g1", AssetName: "game/creatures/x", Model: "z-image", VRAMGBEstimate: 4,
		Task:        &engine.Task{Kind: engine.KindImage, Image: &engine.ImageParams{Prompt: "a red fox", Ext: "png"}},
		ModelSource: &engine.ModelSource{Engine: engine.EngineSDCpp},
	}
}

func wantReject(t *testing.T, f any, job, reason, code string) {
	t.Helper()
	r, ok := f.(Reject)
	if !ok {
		t.Fatalf("frame %#v, want a reject", f)
	}
	if r.JobID != job || r.Reason != reason || r.Code != code {
		t.Fatalf("reject %+v, want job %s reason %q code %q", r, job, reason, code)
	}
}

// blockingRun makes the runner hold the job until release is closed; it
// honours cancellation when honour is set.
func blockingRun(release chan struct{}, honour bool) func(context.Context, engine.Job, engine.ProgressFunc) (engine.Result, error) {
	return func(ctx context.Context, job engine.Job, p engine.ProgressFunc) (engine.Result, error) {
		if honour {
			select {
			case <-release:
			case <-ctx.Done():
				return engine.Result{}, ctx.Err()
			}
		} else {
			<-release
		}
		return engine.Result{JSON: json.RawMessage(`{"ok":true}`)}, nil
	}
}

// runBlocked offers llm job "j1" on s to a runner held in
// blockingRun(release, honour), and returns once the job runs (its accept
// read from s).
func (h *harness) runBlocked(t *testing.T, s *fakeSender, release chan struct{}, honour bool) {
	t.Helper()
	h.runner.runFn = blockingRun(release, honour)
	h.w.HandleOffer(s, llmClaim("j1", 1, "hi"))
	s.next(t)
	<-h.runner.started
}

// shutdownAsync starts w.Shutdown and hands back its result.
func shutdownAsync(w *Worker) <-chan error {
	done := make(chan error, 1)
	go func() { done <- w.Shutdown(context.Background()) }()
	return done
}

// waitSnap reads snapshots until pred holds.
func waitSnap(t *testing.T, ch <-chan Snapshot, pred func(Snapshot) bool) Snapshot {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case s := <-ch:
			if pred(s) {
				return s
			}
		case <-deadline:
			t.Fatal("the snapshot never reached the expected state")
		}
	}
}

// ---- admission ----

func TestWorkerOfferWhilePausedIsRejected(t *testing.T) {
	h := newHarness(t)
	s := newFakeSender()
	h.w.Pause()
	h.w.HandleOffer(s, llmClaim("j1", 1, "hi"))
	wantReject(t, s.next(t), "j1", "worker paused by operator", "paused")
	snap := h.w.Snapshot()
	if snap.State != StatePaused || snap.IdleReason != "paused" || snap.LastReject != ReasonPaused {
		t.Errorf("snapshot %+v", snap)
	}
	if snap.Counters.Offered != 1 || snap.Counters.Rejected != 1 || snap.Counters.Accepted != 0 {
		t.Errorf("counters %+v", snap.Counters)
	}
	if caps := h.w.Capabilities(); caps.AutoEnabled {
		t.Error("a paused worker must advertise autoEnabled:false")
	}
	h.w.Resume()
	if caps := h.w.Capabilities(); !caps.AutoEnabled {
		t.Error("resumed worker must advertise autoEnabled:true")
	}
	h.w.HandleOffer(s, llmClaim("j2", 1, "hi"))
	if a, ok := s.next(t).(Accept); !ok || a.JobID != "j2" {
		t.Fatalf("after resume: %#v", a)
	}
	if _, ok := s.next(t).(CompleteJSON); !ok {
		t.Fatal("want completeJson")
	}
}

func TestWorkerSecondOfferWhileBusyIsRejected(t *testing.T) {
	h := newHarness(t)
	release := make(chan struct{})
	h.runner.runFn = blockingRun(release, true)
	s := newFakeSender()
	h.w.HandleOffer(s, llmClaim("j1", 1, "hi"))
	if a, ok := s.next(t).(Accept); !ok || a.JobID != "j1" {
		t.Fatalf("first offer: %#v", a)
	}
	<-h.runner.started
	if got := h.w.currentJobID(); got != "j1" {
		t.Errorf("heartbeat currentJobId = %q", got)
	}
	h.w.HandleOffer(s, llmClaim("j2", 1, "hi"))
	wantReject(t, s.next(t), "j2", "worker already has an in-flight job", "busy")
	if snap := h.w.Snapshot(); snap.State != StateWorking || snap.Current == nil || snap.Current.ID != "j1" {
		t.Errorf("while busy: %+v", snap)
	}
	close(release)
	if c, ok := s.next(t).(CompleteJSON); !ok || c.JobID != "j1" {
		t.Fatalf("want completeJson for j1, got %#v", c)
	}
	waitIdle(t, h.w)
	if got := h.w.currentJobID(); got != "" {
		t.Errorf("currentJobId after the job = %q", got)
	}
	c := h.w.Snapshot().Counters
	if c.Offered != 2 || c.Accepted != 1 || c.Rejected != 1 || c.Done != 1 {
		t.Errorf("counters %+v", c)
	}
}

func waitIdle(t *testing.T, w *Worker) {
	t.Helper()
	ch, cancel := w.Subscribe()
	defer cancel()
	waitSnap(t, ch, func(s Snapshot) bool { return s.Current == nil })
}

func TestWorkerRejectsWhatItDoesNotServe(t *testing.T) {
	cases := []struct {
		name   string
		claim  func() JobOfferClaim
		prep   func(h *harness)
		reason string
	}{
		{
			name: "kind not served",
			claim: func() JobOfferClaim {
				c := llmClaim("j", 1, "hi")
				c.Task = &engine.Task{Kind: engine.KindAudioTTS, TTS: &engine.AudioTTSParams{Text: "hello"}}
				return c
			},
			reason: "this worker does not run audio_tts jobs (it runs image, llm)",
		},
		{
			name: "no engine ready at all",
			prep: func(h *harness) { h.runner.kinds = nil },
			claim: func() JobOfferClaim {
				return llmClaim("j", 1, "hi")
			},
			reason: "this worker does not run llm jobs (no engine is ready)",
		},
		{
			name: "engine not served",
			claim: func() JobOfferClaim {
				c := llmClaim("j", 1, "hi")
				c.ModelSource = &engine.ModelSource{Engine: engine.EngineSynthetic}
				return c
			},
			reason: "model tiny.gguf needs the synthetic engine, which this worker does not have for llm jobs",
		},
		{
			name: "over budget",
			claim: func() JobOfferClaim {
				return llmClaim("j", 12, "hi")
			},
			reason: "needs 12 GB, your budget is 8 GB",
		},
		{
			name: "runner admission",
			prep: func(h *harness) {
				h.runner.admitErr = errors.New("insufficient memory: needs 6 GiB, 3 GiB free (1 GiB kept in reserve)")
			},
			claim:  func() JobOfferClaim { return llmClaim("j", 6, "hi") },
			reason: "insufficient memory: needs 6 GiB, 3 GiB free (1 GiB kept in reserve)",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			if tc.prep != nil {
				tc.prep(h)
			}
			s := newFakeSender()
			h.w.HandleOffer(s, tc.claim())
			wantReject(t, s.next(t), "j", tc.reason, "")
			select {
			case j := <-h.runner.started:
				t.Fatalf("job %s ran although rejected", j.ID)
			default:
			}
			snap := h.w.Snapshot()
			if snap.LastReject != tc.reason || snap.Current != nil {
				t.Errorf("snapshot: last reject %q, current %v", snap.LastReject, snap.Current)
			}
			// The gate is free again: a fitting offer is taken.
			h.runner.mu.Lock()
			h.runner.admitErr = nil
			h.runner.kinds = []engine.TaskKind{engine.KindLLM}
			h.runner.mu.Unlock()
			h.w.HandleOffer(s, llmClaim("ok", 1, "hi"))
			if a, ok := s.next(t).(Accept); !ok || a.JobID != "ok" {
				t.Fatalf("next fitting offer: %#v", a)
			}
			s.next(t)
		})
	}
}

func TestWorkerAdmissionPassesTheClaimToTheRunner(t *testing.T) {
	h := newHarness(t)
	s := newFakeSender()
	claim := llmClaim("j1", 2.5, "hi")
	claim.ModelSource.Files = []engine.ModelFile{{Role: engine.RoleModel, URL: "https://models.example/tiny.gguf", Filename: "tiny.gguf", ApproxBytes: 1234}}
	h.w.HandleOffer(s, claim)
	s.next(t) // accept
	s.next(t) // result
	h.runner.mu.Lock()
	defer h.runner.mu.Unlock()
	// The files go along for the models folder's disk budget.
	want := engine.Admission{Kind: engine.KindLLM, Engine: engine.EngineLlamaCpp, Model: "tiny.gguf", VRAMGB: 2.5, Files: claim.ModelSource.Files}
	if len(h.runner.admitted) != 1 || !reflect.DeepEqual(h.runner.admitted[0], want) {
		t.Errorf("admitted %+v, want %+v", h.runner.admitted, want)
	}
}

func TestWorkerOverBudgetExplainsIdleness(t *testing.T) {
	h := newHarness(t)
	h.w.onSessionStatus(SessionStatus{State: SessionConnected})
	if got := h.w.Snapshot().IdleReason; got != "no jobs for your models yet" {
		t.Errorf("fresh idle reason %q", got)
	}
	s := newFakeSender()
	h.w.HandleOffer(s, llmClaim("big", 12, "hi"))
	s.next(t)
	snap := h.w.Snapshot()
	if snap.State != StateIdle || snap.IdleReason != "last offer needed 12 GB, your budget is 8 GB" {
		t.Errorf("state %s, idle reason %q", snap.State, snap.IdleReason)
	}
	// Raising the budget clears the stale explanation.
	h.mu.Lock()
	h.set.VRAMBudgetGB = 16
	h.mu.Unlock()
	h.w.ApplySettings()
	if got := h.w.Snapshot().IdleReason; got != "no jobs for your models yet" {
		t.Errorf("after a bigger budget: %q", got)
	}
	if caps := h.w.Capabilities(); caps.VRAMThresholdGB != 16 || caps.VRAMTotalGB != 8 {
		t.Errorf("capabilities threshold %v total %v", caps.VRAMThresholdGB, caps.VRAMTotalGB)
	}
}

// ---- delivery ----

func TestWorkerJSONResultCarriesTheFullPrompt(t *testing.T) {
	h := newHarness(t)
	long := strings.Repeat("tell me about dragons and their hoards. ", 100)
	var gotJob engine.Job
	h.runner.runFn = func(ctx context.Context, job engine.Job, p engine.ProgressFunc) (engine.Result, error) {
		gotJob = job
		p(engine.Progress{Phase: engine.PhaseGenerate, Done: 3, Total: 10})
		return engine.Result{JSON: json.RawMessage(`{"object":"chat.completion","choices":[]}`),
			Stats: engine.Stats{CompletionTokens: 10, TokensPerSecond: 42}}, nil
	}
	s := newFakeSender()
	h.w.HandleOffer(s, llmClaim("j1", 1, "first turn", long))
	s.next(t)
	c, ok := s.next(t).(CompleteJSON)
	if !ok {
		t.Fatalf("want completeJson, got %#v", c)
	}
	if c.JobID != "j1" || c.Prompt != long || string(c.Result) != `{"object":"chat.completion","choices":[]}` {
		t.Errorf("completeJson: job %s, prompt %d chars (want %d), result %s", c.JobID, len(c.Prompt), len(long), c.Result)
	}
	if gotJob.ID != "j1" || gotJob.Model != "tiny.gguf" || gotJob.Task.LLM == nil || gotJob.Source.Engine != engine.EngineLlamaCpp {
		t.Errorf("engine job %+v", gotJob)
	}
	waitIdle(t, h.w)
	snap := h.w.Snapshot()
	if len(snap.Recent) != 1 || snap.Recent[0].Outcome != OutcomeDone || snap.Recent[0].Stats.TokensPerSecond != 42 {
		t.Errorf("recent %+v", snap.Recent)
	}
}

func TestWorkerFailureRetryableRules(t *testing.T) {
	cases := []struct {
		name      string
		err       error
		panicWith any
		retryable bool
		text      string
		crashed   bool
	}{
		{name: "cannot serve", err: fmt.Errorf("routing: %w", &engine.CannotServeError{Engine: "llama-cpp", Kind: engine.KindLLM}), retryable: false, text: "cannot serve llm tasks"},
		{name: "cannot serve by words", err: errors.New("whisper engine cannot serve audio_tts tasks"), retryable: false, text: "cannot serve"},
		{name: "generic", err: errors.New("download failed: sha256 mismatch"), retryable: true, text: "sha256 mismatch"},
		{name: "panic", panicWith: "index out of range", retryable: true, text: "the engine crashed: index out of range", crashed: true},
		{name: "child crashed", err: fmt.Errorf("run: %w", &engine.CrashError{What: "the text engine", Model: "m", Phase: engine.PhaseGenerate, Exit: "signal: killed"}),
			retryable: true, text: "the text engine crashed while generating with model m (signal: killed)", crashed: true},
		// Issue 10 item 14: a signed URL's query string and user info never
		// leave the worker, in the fail frame or on the Jobs page.
		{name: "signed URL", err: fmt.Errorf(`could not reach the model server: Get "https://u:PASS-SECRET@models.example/x.gguf?X-Amz-Signature=SIG-SECRET&X-Amz-Credential=CRED-SECRET": EOF`),
			retryable: true, text: `Get "https://models.example/x.gguf": EOF`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.runner.runFn = func(context.Context, engine.Job, engine.ProgressFunc) (engine.Result, error) {
				if tc.panicWith != nil {
					panic(tc.panicWith)
				}
				return engine.Result{}, tc.err
			}
			s := newFakeSender()
			h.w.HandleOffer(s, llmClaim("j1", 1, "hi"))
			s.next(t)
			f, ok := s.next(t).(Fail)
			if !ok || f.JobID != "j1" || f.Retryable != tc.retryable || !strings.Contains(f.Error, tc.text) || strings.Contains(f.Error, "SECRET") {
				t.Fatalf("fail frame %+v, want retryable=%t containing %q", f, tc.retryable, tc.text)
			}
			waitIdle(t, h.w)
			snap := h.w.Snapshot()
			if snap.Counters.Failed != 1 || snap.Recent[0].Outcome != OutcomeFailed || !strings.Contains(snap.Recent[0].Error, tc.text) ||
				strings.Contains(snap.Recent[0].Error, "SECRET") || snap.Recent[0].EngineCrashed != tc.crashed {
				t.Errorf("snapshot %+v", snap.Recent)
			}
		})
	}
}

func TestWorkerResultOnDroppedConnectionIsLost(t *testing.T) {
	h := newHarness(t)
	s := newFakeSender()
	s.failOn = func(f any) error {
		if _, ok := f.(CompleteJSON); ok {
			return errors.New("websocket: connection closed")
		}
		return nil
	}
	h.w.HandleOffer(s, llmClaim("j1", 1, "hi"))
	s.next(t) // accept
	waitIdle(t, h.w)
	s.none(t)
	r := h.w.Snapshot().Recent
	if len(r) != 1 || r[0].Outcome != OutcomeLost || r[0].Error != "the studio connection dropped before the result could be sent" {
		t.Errorf("recent %+v", r)
	}
}

func TestWorkerAcceptSendFailureReleasesTheGate(t *testing.T) {
	h := newHarness(t)
	bad := newFakeSender()
	bad.failOn = func(any) error { return errors.New("closed") }
	h.w.HandleOffer(bad, llmClaim("j1", 1, "hi"))
	waitIdle(t, h.w)
	select {
	case <-h.runner.started:
		t.Fatal("a job whose accept never went out must not run")
	default:
	}
	s := newFakeSender()
	h.w.HandleOffer(s, llmClaim("j2", 1, "hi"))
	if a, ok := s.next(t).(Accept); !ok || a.JobID != "j2" {
		t.Fatalf("%#v", a)
	}
	s.next(t)
}

// uploadStudio is an httptest /complete endpoint answering the statuses
// given in turn (the last repeats).
func uploadStudio(t *testing.T, statuses ...int) (*httptest.Server, func() int) {
	t.Helper()
	var mu sync.Mutex
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		mu.Lock()
		n++
		st := statuses[min(n, len(statuses))-1]
		mu.Unlock()
		if r.URL.Path != "/graphics/api/workers/w-test/jobs/img1/complete" || r.Header.Get("Authorization") != "Bearer tok-test" {
			st = http.StatusTeapot
		}
		w.WriteHeader(st)
	}))
	t.Cleanup(srv.Close)
	return srv, func() int { mu.Lock(); defer mu.Unlock(); return n }
}

func TestWorkerBinaryUpload500TwiceThenSuccess(t *testing.T) {
	h := newHarness(t)
	srv, calls := uploadStudio(t, 500, 502, 200)
	h.w.apiBase = srv.URL + "/graphics/api"
	h.runner.runFn = func(context.Context, engine.Job, engine.ProgressFunc) (engine.Result, error) {
		return engine.Result{Bytes: []byte("not really a png"), Ext: "png", Stats: engine.Stats{Images: 1}}, nil
	}
	s := newFakeSender()
	h.w.HandleOffer(s, imageClaim("img1"))
	s.next(t) // accept
	if d := nextTimer(t, h.clock); d != time.Second {
		t.Fatalf("first retry pause %v, want 1 s", d)
	}
	h.clock.Advance(time.Second)
	if d := nextTimer(t, h.clock); d != 2*time.Second {
		t.Fatalf("second retry pause %v, want 2 s", d)
	}
	h.clock.Advance(2 * time.Second)
	waitIdle(t, h.w)
	s.none(t) // a binary success sends no frame
	if calls() != 3 {
		t.Errorf("upload attempts %d, want 3", calls())
	}
	r := h.w.Snapshot().Recent
	if len(r) != 1 || r[0].Outcome != OutcomeDone || r[0].Ext != "png" {
		t.Errorf("recent %+v", r)
	}
}

func TestWorkerUpload4xxFailsRetryableWithoutRetry(t *testing.T) {
	h := newHarness(t)
	srv, calls := uploadStudio(t, 409)
	h.w.apiBase = srv.URL + "/graphics/api"
	h.runner.runFn = func(context.Context, engine.Job, engine.ProgressFunc) (engine.Result, error) {
		return engine.Result{Bytes: []byte("img"), Ext: "png"}, nil
	}
	s := newFakeSender()
	h.w.HandleOffer(s, imageClaim("img1"))
	s.next(t)
	f, ok := s.next(t).(Fail)
	if !ok || !f.Retryable || !strings.Contains(f.Error, "HTTP 409") {
		t.Fatalf("fail %+v", f)
	}
	if calls() != 1 {
		t.Errorf("attempts %d, want 1", calls())
	}
}

// ---- pause after current, shutdown ----

func TestWorkerPauseAfterCurrent(t *testing.T) {
	h := newHarness(t)
	release := make(chan struct{})
	s := newFakeSender()
	h.runBlocked(t, s, release, true)
	h.w.PauseAfterCurrent()
	snap := h.w.Snapshot()
	if snap.Paused || !snap.PauseAfterJob || snap.State != StateWorking {
		t.Fatalf("armed: %+v", snap)
	}
	if caps := h.w.Capabilities(); !caps.AutoEnabled {
		t.Error("still taking work until the job ends")
	}
	close(release)
	s.next(t) // completeJson
	waitIdle(t, h.w)
	snap = h.w.Snapshot()
	if !snap.Paused || snap.PauseAfterJob || snap.State != StatePaused {
		t.Fatalf("after the job: %+v", snap)
	}
	h.w.HandleOffer(s, llmClaim("j2", 1, "hi"))
	wantReject(t, s.next(t), "j2", ReasonPaused, RejectPaused)

	// With no job running it pauses at once.
	h.w.Resume()
	h.w.PauseAfterCurrent()
	if snap := h.w.Snapshot(); !snap.Paused {
		t.Error("PauseAfterCurrent with no job should pause now")
	}
}

func TestWorkerShutdownCancelsAndFailsRetryable(t *testing.T) {
	h := newHarness(t)
	s := newFakeSender()
	h.runBlocked(t, s, make(chan struct{}), true)
	done := shutdownAsync(h.w)
	if d := nextTimer(t, h.clock); d != DefaultShutdownGrace {
		t.Fatalf("grace %v", d)
	}
	h.w.HandleOffer(s, llmClaim("late", 1, "hi"))
	wantReject(t, s.next(t), "late", "worker is shutting down", RejectPaused)
	h.clock.Advance(DefaultShutdownGrace)
	f, ok := s.next(t).(Fail)
	if !ok || !f.Retryable || f.Error != "the worker was shut down before the job finished" {
		t.Fatalf("fail %+v", f)
	}
	if err := <-done; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
}

func TestWorkerShutdownFailsAJobWhoseEngineIgnoresCancel(t *testing.T) {
	h := newHarness(t)
	stuck := make(chan struct{})
	defer close(stuck)
	s := newFakeSender()
	h.runBlocked(t, s, stuck, false)
	done := shutdownAsync(h.w)
	nextTimer(t, h.clock)
	h.clock.Advance(DefaultShutdownGrace)
	if d := nextTimer(t, h.clock); d != shutdownCancelWait {
		t.Fatalf("cancel wait %v", d)
	}
	h.clock.Advance(shutdownCancelWait)
	f, ok := s.next(t).(Fail)
	if !ok || !f.Retryable {
		t.Fatalf("fail %+v", f)
	}
	if err := <-done; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if snap := h.w.Snapshot(); snap.Current != nil || snap.Recent[0].Outcome != OutcomeFailed {
		t.Errorf("snapshot %+v", snap)
	}
}

func TestWorkerShutdownWaitsForAJobThatFinishes(t *testing.T) {
	h := newHarness(t)
	release := make(chan struct{})
	s := newFakeSender()
	h.runBlocked(t, s, release, true)
	done := shutdownAsync(h.w)
	nextTimer(t, h.clock)
	close(release)
	if c, ok := s.next(t).(CompleteJSON); !ok || c.JobID != "j1" {
		t.Fatalf("want the real result, got %#v", c)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// ---- snapshots ----

func TestWorkerSnapshotsFollowTheJob(t *testing.T) {
	h := newHarness(t)
	ch, cancel := h.w.Subscribe()
	defer cancel()
	first := <-ch
	if first.Version != "9.9.9" || !first.VRAM.Known || first.VRAM.BudgetGB != 8 || len(first.Kinds) != 2 {
		t.Errorf("first snapshot %+v", first)
	}
	step := make(chan struct{})
	h.runner.runFn = func(ctx context.Context, job engine.Job, p engine.ProgressFunc) (engine.Result, error) {
		p(engine.Progress{Phase: engine.PhaseDownload, Done: 50, Total: 100})
		<-step
		p(engine.Progress{Phase: engine.PhaseGenerate, Done: 7, Total: 0})
		<-step
		return engine.Result{JSON: json.RawMessage(`{}`)}, nil
	}
	s := newFakeSender()
	h.w.HandleOffer(s, llmClaim("j1", 1, "hi"))
	snap := waitSnap(t, ch, func(s Snapshot) bool { return s.Current != nil && s.Current.Phase == engine.PhaseDownload })
	if snap.State != StateWorking || snap.Current.Done != 50 || snap.Current.Total != 100 || snap.Current.Kind != engine.KindLLM {
		t.Errorf("download snapshot %+v", snap.Current)
	}
	step <- struct{}{}
	waitSnap(t, ch, func(s Snapshot) bool {
		return s.Current != nil && s.Current.Phase == engine.PhaseGenerate && s.Current.Done == 7
	})
	step <- struct{}{}
	snap = waitSnap(t, ch, func(s Snapshot) bool { return s.Current == nil && len(s.Recent) == 1 })
	if snap.Recent[0].ID != "j1" || snap.Recent[0].Finished.IsZero() {
		t.Errorf("recent %+v", snap.Recent[0])
	}
}

func TestWorkerSubscribeKeepsOnlyTheLatest(t *testing.T) {
	h := newHarness(t)
	ch, cancel := h.w.Subscribe()
	<-ch
	// Many changes while nobody reads: the reader then sees one snapshot,
	// the newest, and the worker never blocked.
	for i := 0; i < 20; i++ {
		h.w.Pause()
		h.w.Resume()
	}
	h.w.Pause()
	if s := <-ch; !s.Paused {
		t.Error("the buffered snapshot is stale")
	}
	select {
	case s := <-ch:
		t.Errorf("a second snapshot was queued: %+v", s)
	default:
	}
	cancel()
	if _, ok := <-ch; ok {
		t.Error("cancel must close the channel")
	}
	cancel() // twice is harmless
	h.w.Resume()
}

func TestWorkerRecentIsBoundedNewestFirst(t *testing.T) {
	h := newHarness(t)
	s := newFakeSender()
	for i := 0; i < RecentJobs+5; i++ {
		id := fmt.Sprintf("j%02d", i)
		h.w.HandleOffer(s, llmClaim(id, 1, "hi"))
		s.next(t)
		s.next(t)
		waitIdle(t, h.w)
	}
	r := h.w.Snapshot().Recent
	if len(r) != RecentJobs || r[0].ID != fmt.Sprintf("j%02d", RecentJobs+4) || r[RecentJobs-1].ID != "j05" {
		t.Errorf("recent: %d entries, first %s, last %s", len(r), r[0].ID, r[len(r)-1].ID)
	}
}

func TestWorkerIdleReasons(t *testing.T) {
	h := newHarness(t)
	h.w.onRegistration(Registration{State: "pending", RequestID: "rr-1"})
	if s := h.w.Snapshot(); s.State != StateWaitingApproval || s.IdleReason != "waiting for approval" {
		t.Errorf("pending: %s %q", s.State, s.IdleReason)
	}
	h.w.onRegistration(Registration{State: "approved", WorkerID: "w1"})
	h.w.onSessionStatus(SessionStatus{State: SessionRetrying, RetryIn: 8 * time.Second})
	if s := h.w.Snapshot(); s.State != StateConnecting || s.IdleReason != "studio unreachable, retrying in 8 s" {
		t.Errorf("retrying: %s %q", s.State, s.IdleReason)
	}
	h.w.onSessionStatus(SessionStatus{State: SessionStopped, StopReason: "another worker with the same id connected"})
	if s := h.w.Snapshot(); s.State != StateStopped || s.IdleReason != "another worker with the same id connected" {
		t.Errorf("stopped: %s %q", s.State, s.IdleReason)
	}
	h.w.onRegistration(Registration{State: "rejected", Reason: "unknown machine"})
	if s := h.w.Snapshot(); s.State != StateRejected || !strings.Contains(s.IdleReason, "unknown machine") {
		t.Errorf("rejected: %s %q", s.State, s.IdleReason)
	}
}

func TestWorkerPauseReleasesResidentModelsWhenIdle(t *testing.T) {
	runner := releasingRunner{fakeRunner: newFakeRunner(), released: make(chan struct{}, 4)}
	set := settings.Default()
	w := NewWorker(WorkerConfig{Settings: func() settings.Settings { return set }, Runner: runner,
		Creds: settings.NewFileCredentialStore(t.TempDir()), Clock: NewFakeClock(workerT0)})
	defer w.lifeCancel()

	release := make(chan struct{})
	runner.runFn = blockingRun(release, true)
	s := newFakeSender()
	w.HandleOffer(s, llmClaim("j1", 1, "hi"))
	s.next(t)
	<-runner.started
	w.PauseAfterCurrent()
	select {
	case <-runner.released:
		t.Fatal("released the model under a running job")
	default:
	}
	close(release)
	s.next(t)
	select {
	case <-runner.released:
	case <-time.After(10 * time.Second):
		t.Fatal("pausing after the job did not release the resident model")
	}
	w.Resume()
	w.Pause()
	select {
	case <-runner.released:
	case <-time.After(10 * time.Second):
		t.Fatal("pausing an idle worker did not release the resident model")
	}
}

func TestWorkerShutdownStopsAHangingUploadAndFailsRetryable(t *testing.T) {
	h := newHarness(t)
	arrived := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		arrived <- struct{}{}
		<-r.Context().Done() // a studio that never answers
	}))
	defer srv.Close()
	h.w.apiBase = srv.URL + "/graphics/api"
	h.runner.runFn = func(context.Context, engine.Job, engine.ProgressFunc) (engine.Result, error) {
		return engine.Result{Bytes: []byte("img"), Ext: "png"}, nil
	}
	s := newFakeSender()
	h.w.HandleOffer(s, imageClaim("img1"))
	s.next(t)
	<-arrived
	done := shutdownAsync(h.w)
	if d := nextTimer(t, h.clock); d != DefaultShutdownGrace {
		t.Fatalf("grace %v", d)
	}
	h.clock.Advance(DefaultShutdownGrace)
	f, ok := s.next(t).(Fail)
	if !ok || !f.Retryable || f.Error != "the worker was shut down before the job finished" {
		t.Fatalf("fail %+v", f)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// ---- the gate goes back before the final frame ----

// The studio re-offers a retryably failed job as soon as it reads the fail.
// The sender here plays that studio at its fastest: the re-offer arrives
// while the fail is still being sent. It must be accepted, not turned down
// as busy.
func TestWorkerReleasesTheGateBeforeTheFinalFrame(t *testing.T) {
	h := newHarness(t)
	// The re-run waits until the first attempt is recorded as failed: that
	// happens once the fail's Send returns, and a studio answering inside
	// Send (below) could otherwise see the re-run finish first and the
	// counters and Recent checked here in the wrong order.
	firstRecorded := make(chan struct{})
	snaps, unsubscribe := h.w.Subscribe()
	defer unsubscribe()
	go func() {
		for s := range snaps {
			if s.Counters.Failed > 0 {
				close(firstRecorded)
				return
			}
		}
	}()
	var mu sync.Mutex
	runs := 0
	h.runner.runFn = func(ctx context.Context, _ engine.Job, _ engine.ProgressFunc) (engine.Result, error) {
		mu.Lock()
		runs++
		n := runs
		mu.Unlock()
		if n == 1 {
			return engine.Result{}, errors.New("the GPU driver reset")
		}
		select {
		case <-firstRecorded:
		case <-ctx.Done():
			return engine.Result{}, ctx.Err()
		}
		return engine.Result{JSON: json.RawMessage(`{"ok":true}`)}, nil
	}
	s := newFakeSender()
	type during struct {
		heartbeatJob string
		snap         Snapshot
	}
	seen := make(chan during, 1)
	var once sync.Once
	// The re-offer comes once the fail is on the wire (recorded), while the
	// worker is still inside Send: re-offering before the fail is recorded
	// would let the re-run's result overtake it in the record, which no
	// studio can see (it re-offers only after reading the fail).
	s.onWire = func(f any) {
		if _, ok := f.(Fail); ok {
			once.Do(func() {
				seen <- during{h.w.currentJobID(), h.w.Snapshot()}
				h.w.HandleOffer(s, llmClaim("j1", 1, "hi"))
			})
		}
	}
	h.w.HandleOffer(s, llmClaim("j1", 1, "hi"))
	if a, ok := s.next(t).(Accept); !ok || a.JobID != "j1" {
		t.Fatalf("first offer: %#v", a)
	}
	var got []string
	for range 3 { // the fail, the accept of the re-offer and the result
		switch f := s.next(t).(type) {
		case Fail:
			got = append(got, "fail")
		case Accept:
			got = append(got, "accept")
		case CompleteJSON:
			got = append(got, "complete")
		default:
			t.Fatalf("unexpected frame %#v (so far %v)", f, got)
		}
	}
	if !slices.Equal(got, []string{"fail", "accept", "complete"}) {
		t.Errorf("frames %v, want the fail, the re-offer's accept, then the result", got)
	}
	d := <-seen
	if d.heartbeatJob != "" {
		t.Errorf("heartbeat currentJobId while the fail goes out = %q, want none", d.heartbeatJob)
	}
	if d.snap.State != StateWorking || d.snap.Current == nil || d.snap.Current.ID != "j1" {
		t.Errorf("while the fail goes out the job should still show: %+v", d.snap)
	}
	waitIdle(t, h.w)
	snap := h.w.Snapshot()
	c := snap.Counters
	if c.Offered != 2 || c.Accepted != 2 || c.Rejected != 0 || c.Failed != 1 || c.Done != 1 {
		t.Errorf("counters %+v", c)
	}
	if len(snap.Recent) != 2 || snap.Recent[0].Outcome != OutcomeDone || snap.Recent[1].Outcome != OutcomeFailed {
		t.Errorf("recent %+v", snap.Recent)
	}
}

// "Pause after this job" takes effect when the gate goes back, so an offer
// that races the result is turned down as paused.
func TestWorkerPauseAfterCurrentHoldsBeforeTheFinalFrame(t *testing.T) {
	h := newHarness(t)
	release := make(chan struct{})
	s := newFakeSender()
	var once sync.Once
	s.failOn = func(f any) error {
		if _, ok := f.(CompleteJSON); ok {
			once.Do(func() { h.w.HandleOffer(s, llmClaim("j2", 1, "hi")) })
		}
		return nil
	}
	h.runBlocked(t, s, release, true)
	h.w.PauseAfterCurrent()
	close(release)
	var reject Reject
	var completed bool
	for range 2 {
		switch f := s.next(t).(type) {
		case Reject:
			reject = f
		case CompleteJSON:
			completed = f.JobID == "j1"
		default:
			t.Fatalf("unexpected frame %#v", f)
		}
	}
	if !completed || reject.JobID != "j2" || reject.Code != RejectPaused {
		t.Fatalf("completed %t, reject %+v", completed, reject)
	}
	waitIdle(t, h.w)
	if snap := h.w.Snapshot(); snap.State != StatePaused || snap.Counters.Accepted != 1 {
		t.Errorf("after the job: %+v", snap)
	}
}

// A Run that starts after Shutdown returns at once instead of registering
// and holding a session nobody will stop.
func TestWorkerRunAfterShutdownReturnsAtOnce(t *testing.T) {
	h := newHarness(t)
	if err := h.w.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- h.w.Run(context.Background()) }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrShutDown) {
			t.Fatalf("Run after Shutdown = %v, want ErrShutDown", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run after Shutdown kept running")
	}
	if snap := h.w.Snapshot(); snap.Registration.State != "none" || snap.Session != SessionOffline {
		t.Errorf("Run after Shutdown still started something: %+v", snap)
	}
}

// ---- offers answered without a run (issue 10, items 6 and 15) ----

// TestWorkerRepeatOfferIsNotRunAgain: with the model cached, repeated
// offers for one job id ran the job four times. A job finished within
// FinishedJobMemory is not run again; its kept result is delivered again.
func TestWorkerRepeatOfferIsNotRunAgain(t *testing.T) {
	h := newHarness(t)
	s := newFakeSender()
	h.w.HandleOffer(s, llmClaim("j1", 1, "hi"))
	s.next(t) // accept
	first, ok := s.next(t).(CompleteJSON)
	if !ok {
		t.Fatal("want completeJson")
	}
	<-h.runner.started
	waitIdle(t, h.w)
	for i := range 3 {
		h.w.HandleOffer(s, llmClaim("j1", 1, "hi"))
		if a, ok := s.next(t).(Accept); !ok || a.JobID != "j1" {
			t.Fatalf("repeat %d: want accept, got %#v", i+1, a)
		}
		again, ok := s.next(t).(CompleteJSON)
		if !ok || again.JobID != "j1" || string(again.Result) != string(first.Result) || again.Prompt != "hi" {
			t.Fatalf("repeat %d: %#v, want the same result again", i+1, again)
		}
		waitIdle(t, h.w)
	}
	select {
	case j := <-h.runner.started:
		t.Fatalf("job %s ran again", j.ID)
	default:
	}
	// An hour later it is forgotten and runs as a new job.
	h.clock.Advance(FinishedJobMemory)
	h.w.HandleOffer(s, llmClaim("j1", 1, "hi"))
	s.next(t)
	s.next(t)
	if j := <-h.runner.started; j.ID != "j1" {
		t.Fatalf("ran %s", j.ID)
	}
}

func TestWorkerOfferForTheRunningJobIsRejected(t *testing.T) {
	h := newHarness(t)
	s := newFakeSender()
	release := make(chan struct{})
	h.runBlocked(t, s, release, true)
	h.w.HandleOffer(s, llmClaim("j1", 1, "hi"))
	wantReject(t, s.next(t), "j1", "job j1 is already running on this worker", RejectBusy)
	close(release)
	if _, ok := s.next(t).(CompleteJSON); !ok {
		t.Fatal("the running job did not finish")
	}
	waitIdle(t, h.w)
	select {
	case j := <-h.runner.started:
		t.Fatalf("job %s ran twice", j.ID)
	default:
	}
}

func TestWorkerRepeatOfferAfterAFailure(t *testing.T) {
	for _, tc := range []struct {
		name      string
		retryable bool
	}{{"not retryable: the same failure again", false}, {"retryable: run again", true}} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.runner.runFn = func(context.Context, engine.Job, engine.ProgressFunc) (engine.Result, error) {
				if tc.retryable {
					return engine.Result{}, errors.New("download failed: connection reset")
				}
				return engine.Result{}, engine.Invalid("maxTokens", "must be at least 1")
			}
			s := newFakeSender()
			h.w.HandleOffer(s, llmClaim("j1", 1, "hi"))
			s.next(t)
			f1 := s.next(t).(Fail)
			<-h.runner.started
			waitIdle(t, h.w)
			h.w.HandleOffer(s, llmClaim("j1", 1, "hi"))
			if tc.retryable {
				if a, ok := s.next(t).(Accept); !ok || a.JobID != "j1" {
					t.Fatalf("want accept, got %#v", a)
				}
				<-h.runner.started
				s.next(t)
				return
			}
			f2, ok := s.next(t).(Fail)
			if !ok || f2 != f1 || f2.Retryable {
				t.Fatalf("repeat answered %#v, want %#v again", f2, f1)
			}
			select {
			case j := <-h.runner.started:
				t.Fatalf("job %s ran again", j.ID)
			default:
			}
		})
	}
}

// TestWorkerLostResultIsDeliveredOnTheRepeatOffer: a result made while the
// connection dropped is sent when the studio offers the job again.
func TestWorkerLostResultIsDeliveredOnTheRepeatOffer(t *testing.T) {
	h := newHarness(t)
	gone := newFakeSender()
	gone.failOn = func(f any) error {
		if _, ok := f.(CompleteJSON); ok {
			return ErrConnClosed
		}
		return nil
	}
	h.w.HandleOffer(gone, llmClaim("j1", 1, "hi"))
	gone.next(t) // accept
	<-h.runner.started
	waitIdle(t, h.w)
	s := newFakeSender()
	h.w.HandleOffer(s, llmClaim("j1", 1, "hi"))
	s.next(t) // accept
	if c, ok := s.next(t).(CompleteJSON); !ok || c.JobID != "j1" {
		t.Fatalf("want the kept result, got %#v", c)
	}
	waitIdle(t, h.w)
	if r := h.w.Snapshot().Recent; r[0].Outcome != OutcomeDone || r[1].Outcome != OutcomeLost {
		t.Fatalf("recent %+v", r)
	}
	select {
	case j := <-h.runner.started:
		t.Fatalf("job %s ran again", j.ID)
	default:
	}
}

// TestWorkerFailedUploadIsUploadedAgainOnTheRepeatOffer: an image whose
// upload failed is uploaded again, not made again.
func TestWorkerFailedUploadIsUploadedAgainOnTheRepeatOffer(t *testing.T) {
	h := newHarness(t)
	srv, calls := uploadStudio(t, 409, 200)
	h.w.apiBase = srv.URL + "/graphics/api"
	h.runner.runFn = func(context.Context, engine.Job, engine.ProgressFunc) (engine.Result, error) {
		return engine.Result{Bytes: []byte("not really a png"), Ext: "png"}, nil
	}
	s := newFakeSender()
	h.w.HandleOffer(s, imageClaim("img1"))
	s.next(t) // accept
	if f, ok := s.next(t).(Fail); !ok || !f.Retryable {
		t.Fatalf("want a retryable fail, got %#v", f)
	}
	<-h.runner.started
	waitIdle(t, h.w)
	h.w.HandleOffer(s, imageClaim("img1"))
	s.next(t) // accept
	waitIdle(t, h.w)
	s.none(t)
	if calls() != 2 {
		t.Fatalf("%d uploads, want 2", calls())
	}
	if r := h.w.Snapshot().Recent; r[0].Outcome != OutcomeDone {
		t.Fatalf("recent %+v", r)
	}
	select {
	case j := <-h.runner.started:
		t.Fatalf("job %s ran again", j.ID)
	default:
	}
}

func TestWorkerRepeatOfferWithoutAKeptResultIsRejected(t *testing.T) {
	h := newHarness(t)
	s := newFakeSender()
	h.w.mu.Lock()
	h.w.pruneFinishedLocked(h.clock.Now())
	h.w.finished["j1"] = finishedJob{at: h.clock.Now()} // its result was dropped for room
	h.w.mu.Unlock()
	h.w.HandleOffer(s, llmClaim("j1", 1, "hi"))
	wantReject(t, s.next(t), "j1", "job j1 already ran on this worker at 03:04:05 and its result is no longer kept", "")
}

func TestWorkerKeptResultsAreBounded(t *testing.T) {
	h := newHarness(t)
	h.w.mu.Lock()
	h.w.pruneFinishedLocked(h.clock.Now())
	big := make([]byte, keptResultBytes/2)
	for i, id := range []string{"a", "b", "c"} {
		h.w.finished[id] = finishedJob{at: h.clock.Now().Add(time.Duration(i) * time.Second), res: engine.Result{Bytes: big}}
	}
	h.w.capKeptResultsLocked()
	kept := h.w.finished["a"].hasResult()
	rest := h.w.finished["b"].hasResult() && h.w.finished["c"].hasResult()
	h.w.mu.Unlock()
	if kept || !rest {
		t.Fatalf("the oldest result should go first: a kept %v, b and c kept %v", kept, rest)
	}
}

// TestWorkerUnusableOfferFailsThatJobAlone: an offer with a field the
// worker cannot use is failed as not retryable, naming the field.
func TestWorkerUnusableOfferFailsThatJobAlone(t *testing.T) {
	h := newHarness(t)
	s := newFakeSender()
	f, err := DecodeServerFrame([]byte(`{"type":"offer","claim":{"jobId":"j9","model":"tiny.gguf",` +
		`"task":{"kind":"llm","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]},` +
		`"modelSource":{"engine":"llama-cpp","files":[]}}}`))
	if err != nil {
		t.Fatal(err)
	}
	h.w.HandleUnusableOffer(s, f.(*UnusableOffer))
	fail, ok := s.next(t).(Fail)
	if !ok || fail.JobID != "j9" || fail.Retryable || !strings.Contains(fail.Error, "task") {
		t.Fatalf("want a not-retryable fail naming the field, got %#v", fail)
	}
	snap := h.w.Snapshot()
	if snap.Counters.Offered != 1 || snap.Counters.Failed != 1 || snap.Recent[0].ID != "j9" || snap.Recent[0].Outcome != OutcomeFailed {
		t.Fatalf("snapshot %+v %+v", snap.Counters, snap.Recent)
	}
	// The worker still takes the next offer.
	h.w.HandleOffer(s, llmClaim("j10", 1, "hi"))
	if a, ok := s.next(t).(Accept); !ok || a.JobID != "j10" {
		t.Fatalf("want accept, got %#v", a)
	}
	s.next(t)
	t.Logf("fail: %s", fail.Error)
}

// stoppingRunner can also end its engines' processes, like engine.Runner
// with engine/host clients.
type stoppingRunner struct {
	*fakeRunner
	stops chan struct{}
}

func (r stoppingRunner) StopEngines() error {
	r.stops <- struct{}{}
	return nil
}

func TestWorkerPauseNowFailsTheJobAndStopsTheEngines(t *testing.T) {
	h := newHarness(t)
	r := stoppingRunner{fakeRunner: h.runner, stops: make(chan struct{}, 4)}
	h.w.runner = r
	s := newFakeSender()
	h.runBlocked(t, s, make(chan struct{}), true)

	h.w.PauseNow()
	f, ok := s.next(t).(Fail)
	if !ok || f.JobID != "j1" || f.Error != "paused by the donor" || !f.Retryable {
		t.Fatalf("want a retryable fail \"paused by the donor\", got %#v", f)
	}
	select {
	case <-r.stops:
	case <-time.After(10 * time.Second):
		t.Fatal("the engines were not stopped")
	}
	// The fail goes out before the job is recorded (the gate is given
	// back first): wait for the record.
	snaps, unsub := h.w.Subscribe()
	defer unsub()
	snap := waitSnap(t, snaps, func(s Snapshot) bool { return len(s.Recent) == 1 && s.Current == nil })
	if !snap.Paused || snap.State != StatePaused {
		t.Errorf("snapshot paused %t state %s", snap.Paused, snap.State)
	}
	if len(snap.Recent) != 1 || snap.Recent[0].Outcome != OutcomeFailed || snap.Recent[0].Error != "paused by the donor" {
		t.Errorf("history %+v", snap.Recent)
	}
	// Paused: the next offer is turned down as such.
	h.w.HandleOffer(s, llmClaim("j2", 1, "hi"))
	wantReject(t, s.next(t), "j2", ReasonPaused, RejectPaused)
}

func TestWorkerPauseForResumesByItself(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h.w.PauseFor(time.Hour)
	snap := h.w.Snapshot()
	if !snap.Paused || !snap.ResumeAt.Equal(workerT0.Add(time.Hour)) {
		t.Fatalf("after PauseFor: paused %t resumeAt %s", snap.Paused, snap.ResumeAt)
	}
	if err := h.clock.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal("no snooze timer")
	}
	ch, stop := h.w.Subscribe()
	defer stop()
	<-ch
	h.clock.Advance(time.Hour)
	for s := range ch {
		if !s.Paused {
			if !s.ResumeAt.IsZero() {
				t.Errorf("resumed with resumeAt %s", s.ResumeAt)
			}
			break
		}
	}

	// A pause pressed during a snooze is the donor's own: the snooze's
	// end does not undo it.
	h.w.PauseFor(time.Hour)
	if err := h.clock.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal("no snooze timer")
	}
	h.w.Pause()
	if !h.w.Snapshot().ResumeAt.IsZero() {
		t.Error("a plain pause kept the snooze's end")
	}
	h.clock.Advance(time.Hour)
	// The old timer fired and found itself replaced; a Resume it made
	// would publish an unpaused snapshot, so look once it has run.
	h.w.PauseAfterCurrent() // a no-op on a paused idle worker that publishes
	if !h.w.Snapshot().Paused {
		t.Error("the snooze's end undid a later pause")
	}
}
