package engine

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
)

// fakeEngine is a test double: it records what it was asked and returns a
// fixed result. It lives only in tests.
type fakeEngine struct {
	name     EngineName
	kinds    []TaskKind
	resident uint64
	result   Result
	err      error
	panicMsg string

	mu       sync.Mutex
	jobs     []Job
	releases int
}

func (f *fakeEngine) Name() EngineName  { return f.name }
func (f *fakeEngine) Kinds() []TaskKind { return f.kinds }
func (f *fakeEngine) Run(ctx context.Context, job Job, progress ProgressFunc) (Result, error) {
	f.mu.Lock()
	f.jobs = append(f.jobs, job)
	f.mu.Unlock()
	if f.panicMsg != "" {
		panic(f.panicMsg)
	}
	progress(Progress{Phase: PhaseGenerate, Done: 1, Total: 1})
	return f.result, f.err
}
func (f *fakeEngine) Release() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.releases++
	f.resident = 0
	return nil
}
func (f *fakeEngine) ResidentVRAMBytes() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.resident
}

func TestRouteStrictlyByEngine(t *testing.T) {
	llama := &fakeEngine{name: EngineLlamaCpp, kinds: []TaskKind{KindLLM}}
	sdUnloaded := &fakeEngine{name: EngineSDCpp}
	r := NewRouter(llama, sdUnloaded)

	if e, err := r.Route(EngineLlamaCpp, KindLLM); err != nil || e != llama {
		t.Fatalf("Route(llama, llm) = %v, %v", e, err)
	}
	for _, tc := range []struct {
		engine EngineName
		kind   TaskKind
		words  string
	}{
		{EngineSynthetic, KindLLM, "no synthetic engine is available on this worker"},
		{EngineONNX, KindImage, "no onnx engine is available on this worker"},
		{"whatever", KindImage, "no whatever engine is available"},
		{"", KindLLM, "names no engine"},
		{EngineSDCpp, KindImage, "sd-cpp engine is not loaded"},
		{EngineLlamaCpp, KindImage, "llama-cpp engine cannot serve image tasks"},
	} {
		e, err := r.Route(tc.engine, tc.kind)
		var cs *CannotServeError
		if e != nil || !errors.As(err, &cs) || !IsCannotServe(err) {
			t.Errorf("Route(%q, %q) = %v, %v; want a CannotServeError", tc.engine, tc.kind, e, err)
			continue
		}
		if !strings.Contains(err.Error(), tc.words) || !strings.Contains(err.Error(), "cannot serve") {
			t.Errorf("Route(%q, %q) error %q lacks %q", tc.engine, tc.kind, err, tc.words)
		}
	}
	// No engine other than the named one is ever asked.
	if len(llama.jobs) != 0 {
		t.Fatal("routing must not run anything")
	}
}

func TestRouterKindsAndSupportedModels(t *testing.T) {
	r := NewRouter(
		&fakeEngine{name: EngineSDCpp}, // library missing: advertises nothing
		&fakeEngine{name: EngineLlamaCpp, kinds: []TaskKind{KindLLM}},
	)
	if got := r.Kinds(); !reflect.DeepEqual(got, []TaskKind{KindLLM}) {
		t.Fatalf("Kinds = %v", got)
	}
	got := r.SupportedModels([]string{"b.gguf", "a/model"})
	want := map[TaskKind][]string{KindLLM: {"a/model", "b.gguf", "llama-cpp:*"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("SupportedModels = %v, want %v", got, want)
	}

	r = NewRouter(&fakeEngine{name: EngineLlamaCpp, kinds: []TaskKind{KindLLM}}, &fakeEngine{name: EngineSDCpp, kinds: []TaskKind{KindImage}})
	if got := r.Kinds(); !reflect.DeepEqual(got, []TaskKind{KindImage, KindLLM}) {
		t.Fatalf("Kinds in protocol order = %v", got)
	}
	got = r.SupportedModels(nil)
	want = map[TaskKind][]string{KindLLM: {"llama-cpp:*"}, KindImage: {"sd-cpp:*"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("SupportedModels = %v, want %v", got, want)
	}
}

func TestIsRetryable(t *testing.T) {
	base := errors.New("disk gone")
	cases := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"machine fault", fmt.Errorf("loading: %w", base), true},
		{"job fault", Invalid("maxTokens", "must be at least 1, got %d", 0), false},
		{"job fault wrapped", fmt.Errorf("llama: %w", Invalid("messages", "no messages")), false},
		{"cannot serve", &CannotServeError{Engine: "x", Kind: KindImage}, false},
	}
	for _, c := range cases {
		if got := IsRetryable(c.err); got != c.want {
			t.Errorf("%s: IsRetryable(%v) = %v, want %v", c.name, c.err, got, c.want)
		}
	}
	err := Invalid("initImageUrl", "cannot download it: %w", base)
	if got, want := err.Error(), "initImageUrl: cannot download it: disk gone"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if !errors.Is(err, base) {
		t.Error("Invalid with %w does not unwrap to its operand")
	}
}
