package engine

import (
	"context"
	"errors"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type probeFunc func(ctx context.Context) VRAMInfo

func (f probeFunc) Probe(ctx context.Context) VRAMInfo { return f(ctx) }

func fixedVRAM(v VRAMInfo) GPUProbe { return probeFunc(func(context.Context) VRAMInfo { return v }) }

func gpu(totalGB, freeGB float64) VRAMInfo {
	return infoFrom([]GPUDevice{{Name: "GPU0", TotalBytes: gbToBytes(totalGB), FreeBytes: gbToBytes(freeGB), Source: "test"}}, "test")
}

func TestAdmit(t *testing.T) {
	llama := &fakeEngine{name: EngineLlamaCpp, kinds: []TaskKind{KindLLM}}
	sd := &fakeEngine{name: EngineSDCpp, kinds: []TaskKind{KindImage}}
	budget := 12.0
	probe := gpu(16, 6.5)
	var ticks atomic.Int64
	r := NewRunner(RunnerConfig{
		Store: newTestStore(t, StoreOptions{}), Engines: []Engine{llama, sd},
		BudgetGB: func() float64 { return budget },
		Probe:    probeFunc(func(context.Context) VRAMInfo { return probe }),
		// A clock that jumps past the cache time at every reading, so every
		// admission sees the probe as set just before it.
		Now: func() time.Time { ticks.Add(1); return time.Unix(ticks.Load()*3600, 0) },
	})

	err := r.Admit(Admission{Kind: KindLLM, Engine: EngineLlamaCpp, Model: "m", VRAMGB: 14})
	var ob *OverBudgetError
	if !errors.As(err, &ob) || err.Error() != "this job needs 14.0 GB, your budget is 12.0 GB" {
		t.Fatalf("over budget: %v", err)
	}
	if err := r.Admit(Admission{Kind: KindLLM, Engine: EngineLlamaCpp, Model: "m", VRAMGB: 12}); err == nil ||
		err.Error() != "this job needs 12.0 GB, only 6.5 GB of GPU memory is free" {
		t.Fatalf("not enough free: %v", err)
	}
	var nv *NotEnoughVRAMError
	if err := r.Admit(Admission{Kind: KindLLM, Engine: EngineLlamaCpp, Model: "m", VRAMGB: 10}); !errors.As(err, &nv) {
		t.Fatalf("not enough free: %v", err)
	}
	// Our own resident image model would give 4 GB back: 6.5 + 4 fits 10.
	sd.resident = gbToBytes(4)
	if err := r.Admit(Admission{Kind: KindLLM, Engine: EngineLlamaCpp, Model: "m", VRAMGB: 10}); err != nil {
		t.Fatalf("counting resident models: %v", err)
	}
	if err := r.Admit(Admission{Kind: KindLLM, Engine: EngineLlamaCpp, Model: "m", VRAMGB: 11}); err == nil ||
		!strings.Contains(err.Error(), "only 10.5 GB of GPU memory is free") {
		t.Fatalf("counting resident models: %v", err)
	}
	// Unknown VRAM: the budget alone decides.
	probe = VRAMInfo{}
	if err := r.Admit(Admission{Kind: KindLLM, Engine: EngineLlamaCpp, Model: "m", VRAMGB: 11.9}); err != nil {
		t.Fatalf("unknown VRAM: %v", err)
	}
	if err := r.Admit(Admission{Kind: KindLLM, Engine: EngineLlamaCpp, Model: "m", VRAMGB: 12.5}); !errors.As(err, &ob) {
		t.Fatalf("unknown VRAM over budget: %v", err)
	}
	// An engine that is not here: cannot serve, whatever the memory.
	err = r.Admit(Admission{Kind: KindImage, Engine: EngineONNX, Model: "m", VRAMGB: 1})
	if !IsCannotServe(err) || !strings.Contains(err.Error(), "no onnx engine is available on this worker") {
		t.Fatalf("unknown engine: %v", err)
	}
	if err := r.Admit(Admission{Kind: KindLLM, Engine: EngineLlamaCpp, Model: "m", VRAMGB: -1}); err == nil {
		t.Fatal("a negative estimate must be refused")
	}
}

func TestImageAdmissionUsesOneDevice(t *testing.T) {
	two := infoFrom([]GPUDevice{{Name: "a", TotalBytes: 8 << 30, FreeBytes: 6 << 30}, {Name: "b", TotalBytes: 8 << 30, FreeBytes: 6 << 30}}, "test")
	r := NewRunner(RunnerConfig{Store: newTestStore(t, StoreOptions{}), BudgetGB: func() float64 { return 24 }, Probe: fixedVRAM(two),
		Engines: []Engine{&fakeEngine{name: EngineSDCpp, kinds: []TaskKind{KindImage}}, &fakeEngine{name: EngineLlamaCpp, kinds: []TaskKind{KindLLM}}}})
	if err := r.Admit(Admission{Kind: KindImage, Engine: EngineSDCpp, VRAMGB: 10}); err == nil {
		t.Fatal("an image job cannot spread over two GPUs")
	}
	if err := r.Admit(Admission{Kind: KindLLM, Engine: EngineLlamaCpp, VRAMGB: 10}); err != nil {
		t.Fatalf("llama.cpp splits layers over GPUs: %v", err)
	}
}

func TestVRAMIsCachedBriefly(t *testing.T) {
	var probes atomic.Int32
	now := time.Unix(1000, 0)
	var mu sync.Mutex
	r := NewRunner(RunnerConfig{
		Store: newTestStore(t, StoreOptions{}), BudgetGB: func() float64 { return 12 },
		Probe: probeFunc(func(context.Context) VRAMInfo { probes.Add(1); return gpu(8, 8) }),
		Now:   func() time.Time { mu.Lock(); defer mu.Unlock(); return now },
	})
	for range 5 {
		if v := r.VRAM(); !v.Known || v.TotalGB() != 8 {
			t.Fatalf("VRAM = %+v", v)
		}
	}
	if probes.Load() != 1 {
		t.Fatalf("%d probes within the cache time, want 1", probes.Load())
	}
	mu.Lock()
	now = now.Add(DefaultVRAMCacheTTL)
	mu.Unlock()
	r.VRAM()
	if probes.Load() != 2 {
		t.Fatalf("%d probes after the cache time, want 2", probes.Load())
	}
}

func llmJob(srv string, b *blob, vramGB float64) Job {
	return Job{
		ID: "job-1", Model: "tiny-llama", VRAMGB: vramGB,
		Task: Task{Kind: KindLLM, LLM: &LLMParams{Messages: []ChatMessage{{Role: "user", Content: "hi"}}}},
		Source: ModelSource{Engine: EngineLlamaCpp, Files: []ModelFile{{
			Role: RoleModel, URL: srv + "/tiny.gguf", Filename: "tiny.gguf", ApproxBytes: uint64(len(b.data)), SHA256: b.sum}}},
	}
}

func TestRunDownloadsThenRoutes(t *testing.T) {
	b := newBlob(2<<20, 20)
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) { b.record(r); b.serve(w, r) })
	llama := &fakeEngine{name: EngineLlamaCpp, kinds: []TaskKind{KindLLM}, result: Result{JSON: []byte(`{"object":"chat.completion"}`)}}
	sd := &fakeEngine{name: EngineSDCpp, kinds: []TaskKind{KindImage}, resident: gbToBytes(3)}
	st := newTestStore(t, StoreOptions{})
	r := NewRunner(RunnerConfig{Store: st, Engines: []Engine{llama, sd}, BudgetGB: func() float64 { return 12 }, Probe: fixedVRAM(gpu(16, 14))})

	var mu sync.Mutex
	var phases []Phase
	res, err := r.Run(context.Background(), llmJob(srv.URL, b, 4), func(p Progress) {
		mu.Lock()
		defer mu.Unlock()
		if len(phases) == 0 || phases[len(phases)-1] != p.Phase {
			phases = append(phases, p.Phase)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if string(res.JSON) != `{"object":"chat.completion"}` {
		t.Fatalf("result %q", res.JSON)
	}
	if len(phases) != 2 || phases[0] != PhaseDownload || phases[1] != PhaseGenerate {
		t.Fatalf("phases %v", phases)
	}
	if len(llama.jobs) != 1 || len(sd.jobs) != 0 {
		t.Fatalf("llama ran %d, sd ran %d", len(llama.jobs), len(sd.jobs))
	}
	path := llama.jobs[0].Files[RoleModel]
	if got, err := os.ReadFile(path); err != nil || len(got) != len(b.data) {
		t.Fatalf("engine got %q: %v", path, err)
	}
	// 4 GB next to 3 GB resident fits 12 GB and 14 GB free: nothing released.
	if sd.releases != 0 {
		t.Fatal("a model that fits beside the job must stay resident")
	}
	if got := r.SupportedModels()[KindLLM]; strings.Join(got, ",") != "llama-cpp:*,tiny-llama" {
		t.Fatalf("SupportedModels after the download = %q", got)
	}

	// 10 GB beside 3 GB resident is over the 12 GB budget: the image model goes.
	if _, err := r.Run(context.Background(), llmJob(srv.URL, b, 10), nil); err != nil {
		t.Fatal(err)
	}
	if sd.releases != 1 {
		t.Fatalf("sd released %d times, want 1", sd.releases)
	}
	if n := len(b.requests()); n != 1 {
		t.Fatalf("the second job downloaded again (%d requests)", n)
	}
}

func TestRunEvictsForFreeMemory(t *testing.T) {
	b := newBlob(1000, 21)
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) { b.serve(w, r) })
	llama := &fakeEngine{name: EngineLlamaCpp, kinds: []TaskKind{KindLLM}}
	sd := &fakeEngine{name: EngineSDCpp, kinds: []TaskKind{KindImage}, resident: gbToBytes(5)}
	r := NewRunner(RunnerConfig{Store: newTestStore(t, StoreOptions{}), Engines: []Engine{llama, sd},
		BudgetGB: func() float64 { return 24 }, Probe: fixedVRAM(gpu(12, 3))})
	// Admit remembers the estimate when the job carries none.
	if err := r.Admit(Admission{Kind: KindLLM, Engine: EngineLlamaCpp, Model: "tiny-llama", VRAMGB: 6}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Run(context.Background(), llmJob(srv.URL, b, 0), nil); err != nil {
		t.Fatal(err)
	}
	if sd.releases != 1 {
		t.Fatalf("6 GB with 3 GB free needs the resident 5 GB back; sd released %d times", sd.releases)
	}
}

func TestRunFailures(t *testing.T) {
	b := newBlob(1000, 22)
	var requests atomic.Int32
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) { requests.Add(1); b.serve(w, r) })
	llama := &fakeEngine{name: EngineLlamaCpp, kinds: []TaskKind{KindLLM}}
	r := NewRunner(RunnerConfig{Store: newTestStore(t, StoreOptions{}), Engines: []Engine{llama}, BudgetGB: func() float64 { return 12 }, Probe: fixedVRAM(VRAMInfo{})})

	job := llmJob(srv.URL, b, 1)
	job.Source.Engine = EngineSDCpp
	if _, err := r.Run(context.Background(), job, nil); !IsCannotServe(err) {
		t.Fatalf("unknown engine: %v", err)
	}
	if requests.Load() != 0 || len(llama.jobs) != 0 {
		t.Fatal("a job no engine can serve must not download or run anything")
	}

	job = llmJob(srv.URL, b, 1)
	job.Source.Files[0].SHA256 = strings.Repeat("0", 64)
	if _, err := r.Run(context.Background(), job, nil); err == nil || IsCannotServe(err) || len(llama.jobs) != 0 {
		t.Fatalf("bad download must fail retryably before the engine runs: %v", err)
	}

	llama.panicMsg = "boom"
	_, err := r.Run(context.Background(), llmJob(srv.URL, b, 1), nil)
	if err == nil || !strings.Contains(err.Error(), "llama-cpp engine crashed: boom") || IsCannotServe(err) {
		t.Fatalf("panic: %v", err)
	}
	llama.panicMsg = ""

	job = llmJob(srv.URL, b, 1)
	job.Source.Files = nil
	if _, err := r.Run(context.Background(), job, nil); err == nil || !strings.Contains(err.Error(), "lists no model files") {
		t.Fatalf("no files: %v", err)
	}
}

func TestRunUsesLooseLocalGGUF(t *testing.T) {
	st := newTestStore(t, StoreOptions{})
	if err := os.MkdirAll(st.Root(), 0o755); err != nil {
		t.Fatal(err)
	}
	// A loose file that is not a usable GGUF is refused before any engine
	// sees it, and kept: it is the donor's.
	if err := os.WriteFile(st.Root()+"/mine.gguf", []byte("gguf"), 0o644); err != nil {
		t.Fatal(err)
	}
	llama := &fakeEngine{name: EngineLlamaCpp, kinds: []TaskKind{KindLLM}}
	r := NewRunner(RunnerConfig{Store: st, Engines: []Engine{llama}, BudgetGB: func() float64 { return 12 }, Probe: fixedVRAM(VRAMInfo{})})
	job := Job{ID: "j", Model: "mine.gguf", Task: Task{Kind: KindLLM, LLM: &LLMParams{Messages: []ChatMessage{{Role: "user", Content: "hi"}}}}, Source: ModelSource{Engine: EngineLlamaCpp}}
	if _, err := r.Run(context.Background(), job, nil); err == nil || IsRetryable(err) || len(llama.jobs) != 0 {
		t.Fatalf("a loose file that is not a GGUF: %v, %d engine runs", err, len(llama.jobs))
	}
	if err := os.WriteFile(st.Root()+"/mine.gguf", newBlob(1000, 1).data, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Run(context.Background(), job, nil); err != nil {
		t.Fatal(err)
	}
	if got := llama.jobs[0].Files[RoleModel]; got != st.Root()+"/mine.gguf" {
		t.Fatalf("model path %q", got)
	}
}

func TestEvictionPlan(t *testing.T) {
	a := &fakeEngine{name: "a", resident: gbToBytes(2)}
	b := &fakeEngine{name: "b", resident: gbToBytes(6)}
	c := &fakeEngine{name: "c"}
	names := func(es []Engine) string {
		var s []string
		for _, e := range es {
			s = append(s, string(e.Name()))
		}
		return strings.Join(s, ",")
	}
	for _, tc := range []struct {
		need, budget float64
		known        bool
		free, keep   float64
		want         string
	}{
		{4, 12, false, 0, 0, ""},       // 4+8 fits 12
		{5, 12, false, 0, 0, "b"},      // largest first
		{11, 12, false, 0, 0, "b,a"},   // everything
		{4, 24, true, 3, 0, "b"},       // free 3, +6 from b
		{4, 24, true, 3, 1, ""},        // the engine's own swap gives the 1 missing
		{30, 24, true, 100, 0, "b,a"},  // cannot fit: releases all it can
		{0, 0, true, 0, 0, "b,a"},      // a zero budget leaves nothing resident
		{0, 12, true, 0, 0, ""},        // an empty job needs nothing
		{12, 12, false, 0, 0, "b,a"},   // exactly the budget
		{3.9, 12, true, 4, 0, ""},      // fits free memory as it is
		{4.1, 12, true, 4, 0, "b"},     // just over: the largest goes
		{8, 8, true, 0.5, 7.5, "b,a"},  // budget forces both out
		{8, 16, true, 0.5, 7.5, ""},    // swapping its own model is enough
		{7, 16, false, 99, 99, ""},     // unknown VRAM: only the budget counts
		{9, 16, false, 0, 0, "b"},      // 9+8 > 16
		{14.5, 16, false, 0, 0, "b,a"}, // 14.5+2 > 16
	} {
		got := names(evictionPlan(tc.need, tc.budget, []Engine{a, b, c}, tc.known, gbToBytes(tc.free), gbToBytes(tc.keep)))
		if got != tc.want {
			t.Errorf("need %v budget %v known %v free %v keep %v: released %q, want %q", tc.need, tc.budget, tc.known, tc.free, tc.keep, got, tc.want)
		}
	}
}

// gatedEngine holds each job inside Run until the test lets it go.
type gatedEngine struct {
	fakeEngine
	started chan Job
	proceed chan struct{}
}

func (g *gatedEngine) Run(ctx context.Context, job Job, progress ProgressFunc) (Result, error) {
	g.started <- job
	select {
	case <-g.proceed:
	case <-ctx.Done():
		return Result{}, ctx.Err()
	}
	return g.fakeEngine.Run(ctx, job, progress)
}

func TestSetStoreLeavesARunningJobItsStore(t *testing.T) {
	b := newBlob(4096, 23)
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) { b.serve(w, r) })
	llama := &gatedEngine{fakeEngine: fakeEngine{name: EngineLlamaCpp, kinds: []TaskKind{KindLLM}},
		started: make(chan Job), proceed: make(chan struct{})}
	first, second := newTestStore(t, StoreOptions{}), newTestStore(t, StoreOptions{})
	r := NewRunner(RunnerConfig{Store: first, Engines: []Engine{llama}, BudgetGB: func() float64 { return 12 }, Probe: fixedVRAM(VRAMInfo{})})

	done := make(chan error, 1)
	go func() {
		_, err := r.Run(context.Background(), llmJob(srv.URL, b, 1), nil)
		done <- err
	}()
	running := <-llama.started
	if old := r.SetStore(second); old != first {
		t.Fatalf("SetStore returned %p, want the first store %p", old, first)
	}
	if r.Store() != second {
		t.Fatal("Store() does not report the new store")
	}
	// The running job still holds its model in the first folder.
	if err := first.Delete("tiny-llama"); !errors.Is(err, ErrModelInUse) {
		t.Fatalf("deleting the running job's model from its store: %v", err)
	}
	close(llama.proceed)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(running.Files[RoleModel], first.Root()) {
		t.Fatalf("the running job's file %q is not in its store %q", running.Files[RoleModel], first.Root())
	}

	go func() {
		_, err := r.Run(context.Background(), llmJob(srv.URL, b, 1), nil)
		done <- err
	}()
	next := <-llama.started
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(next.Files[RoleModel], second.Root()) {
		t.Fatalf("the next job's file %q is not in the new store %q", next.Files[RoleModel], second.Root())
	}
	if got := r.SupportedModels()[KindLLM]; strings.Join(got, ",") != "llama-cpp:*,tiny-llama" {
		t.Fatalf("the new folder's models are not advertised: %q", got)
	}
}

func TestResidentVRAMBytesSumsEngines(t *testing.T) {
	llama := &fakeEngine{name: EngineLlamaCpp, kinds: []TaskKind{KindLLM}, resident: 3 << 30}
	sd := &fakeEngine{name: EngineSDCpp, kinds: []TaskKind{KindImage}, resident: 2 << 30}
	r := NewRunner(RunnerConfig{Store: newTestStore(t, StoreOptions{}), Engines: []Engine{llama, sd}, Probe: fixedVRAM(VRAMInfo{})})
	if got := r.ResidentVRAMBytes(); got != 5<<30 {
		t.Fatalf("resident %d, want %d", got, uint64(5<<30))
	}
	if err := r.ReleaseAll(); err != nil {
		t.Fatal(err)
	}
	if got := r.ResidentVRAMBytes(); got != 0 {
		t.Fatalf("resident after ReleaseAll %d", got)
	}
}

// A job that can never succeed is refused before its model is downloaded,
// whichever engine it is for, and the refusal is not retryable.
func TestRunRefusesInvalidJobBeforeDownload(t *testing.T) {
	b := newBlob(1<<16, 3)
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) { b.record(r); b.serve(w, r) })
	llama := &fakeEngine{name: EngineLlamaCpp, kinds: []TaskKind{KindLLM}}
	sd := &fakeEngine{name: EngineSDCpp, kinds: []TaskKind{KindImage}}
	r := NewRunner(RunnerConfig{Store: newTestStore(t, StoreOptions{}), Engines: []Engine{llama, sd},
		BudgetGB: func() float64 { return 12 }, Probe: fixedVRAM(VRAMInfo{})})
	nul := llmJob(srv.URL, b, 1)
	nul.Task.LLM.Messages[0].Content = "Reply with BANANA.\x00 Ignore this"
	empty := llmJob(srv.URL, b, 1)
	empty.Task.LLM.Messages = nil
	img := llmJob(srv.URL, b, 1)
	img.Source.Engine = EngineSDCpp
	img.Task = Task{Kind: KindImage, Image: &ImageParams{Prompt: "a cat", NegativePrompt: "dog\x00"}}
	for name, c := range map[string]struct {
		job   Job
		field string
	}{"NUL in a message": {nul, "messages[0].content"}, "no messages": {empty, "messages"}, "NUL in a negative prompt": {img, "negativePrompt"}} {
		_, err := r.Run(context.Background(), c.job, nil)
		jobErr(t, name, err, c.field)
	}
	if got := b.requests(); len(got) != 0 {
		t.Fatalf("%d downloads for jobs refused up front", len(got))
	}
	if len(llama.jobs)+len(sd.jobs) != 0 {
		t.Fatal("an engine was handed a refused job")
	}
}

// TestPoisonRule: a job or a model file that crashed an engine's process
// twice fails for good, and the file is not used again until it is
// downloaded afresh and checked.
func TestPoisonRule(t *testing.T) {
	b := newBlob(64<<10, 21)
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) { b.record(r); b.serve(w, r) })
	crash := &CrashError{What: "the text engine", Model: "tiny-llama", Phase: PhaseLoad, Exit: "signal: aborted", Lines: "GGML_ASSERT(x) failed"}
	llama := &fakeEngine{name: EngineLlamaCpp, kinds: []TaskKind{KindLLM}, err: crash}
	r := NewRunner(RunnerConfig{Store: newTestStore(t, StoreOptions{}), Engines: []Engine{llama}, BudgetGB: func() float64 { return 12 }, Probe: fixedVRAM(VRAMInfo{})})

	job := llmJob(srv.URL, b, 1)
	_, err := r.Run(context.Background(), job, nil)
	if !errors.Is(err, crash) || !IsRetryable(err) {
		t.Fatalf("first crash: want the crash, retryable; got %v", err)
	}
	_, err = r.Run(context.Background(), job, nil)
	var je *JobError
	if !errors.As(err, &je) || IsRetryable(err) || !errors.Is(err, crash) {
		t.Fatalf("second crash of the same job: want a job error wrapping the crash; got %#v", err)
	}
	if want := "this job has crashed the text engine twice, so it is not tried again: the text engine crashed while loading model tiny-llama (signal: aborted): GGML_ASSERT(x) failed"; err.Error() != want {
		t.Errorf("got  %q\nwant %q", err, want)
	}
	path := llama.jobs[1].Files[RoleModel]
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the model file that crashed twice is still in use: %v", err)
	}
	if n := len(b.requests()); n != 1 {
		t.Fatalf("%d downloads before the set-aside, want 1", n)
	}

	// Another job with the same model: the file is downloaded afresh, and
	// its crash count starts again.
	job.ID = "another-job"
	llama.err = nil
	if _, err := r.Run(context.Background(), job, nil); err != nil {
		t.Fatal(err)
	}
	if n := len(b.requests()); n != 2 {
		t.Fatalf("%d downloads, want a fresh one after the set-aside", n)
	}
	llama.err = crash
	if _, err := r.Run(context.Background(), job, nil); !IsRetryable(err) {
		t.Fatalf("a fresh file's first crash must stay retryable: %v", err)
	}
}
