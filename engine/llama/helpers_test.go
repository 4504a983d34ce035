package llama

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/engine/gguf"
	"github.com/minisgg/studio-worker/internal/benchratio"
)

// needLibs skips a test when the llama.cpp libraries are absent.
func needLibs(tb testing.TB) string {
	tb.Helper()
	dir, err := FindLibDir("")
	if err != nil {
		tb.Skipf("needs the llama.cpp libraries: run `make runtime` and set %s (%v)", LibEnv, err)
	}
	return dir
}

// recorder is a slog handler that keeps every record for assertions.
type recorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }

// LLAMA_TEST_LOG=1 also prints every record (llama.cpp's included) to stderr.
var echo = func() slog.Handler {
	if os.Getenv("LLAMA_TEST_LOG") == "" {
		return nil
	}
	return slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})
}()

func (r *recorder) Handle(ctx context.Context, rec slog.Record) error {
	if echo != nil {
		echo.Handle(ctx, rec)
	}
	r.mu.Lock()
	r.recs = append(r.recs, rec.Clone())
	r.mu.Unlock()
	return nil
}
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }

// find returns the messages containing sub, with their string attributes.
func (r *recorder) find(sub string) []map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []map[string]string
	for _, rec := range r.recs {
		if !strings.Contains(rec.Message, sub) {
			continue
		}
		m := map[string]string{"msg": rec.Message, "level": rec.Level.String()}
		rec.Attrs(func(a slog.Attr) bool {
			m[a.Key] = a.Value.String()
			return true
		})
		out = append(out, m)
	}
	return out
}

// newTestEngine makes an engine on 1 thread (more threads than free cores
// makes llama.cpp collapse on a busy machine) with a recording logger.
func newTestEngine(t *testing.T) (*Engine, *recorder) {
	t.Helper()
	needLibs(t)
	rec := &recorder{}
	e := New(Config{Threads: 1, Log: slog.New(rec)})
	if err := e.LibError(); err != nil {
		t.Fatalf("libraries found but not loaded: %v", err)
	}
	t.Cleanup(func() { e.Release() })
	return e, rec
}

func modelFile(tb testing.TB, s gguf.Spec) string {
	tb.Helper()
	p, err := gguf.Ensure(s)
	if err != nil {
		tb.Fatalf("generating %s: %v", s.Name, err)
	}
	return p
}

func ptr[T any](v T) *T { return &v }

// llmJob builds a job for the model at path.
func llmJob(path string, p engine.LLMParams, cli *engine.CliDefaults) engine.Job {
	return engine.Job{
		ID:    "job-1",
		Model: "tiny-llama.gguf",
		Task:  engine.Task{Kind: engine.KindLLM, LLM: &p},
		Source: engine.ModelSource{Engine: engine.EngineLlamaCpp, CliDefaults: cli,
			Files: []engine.ModelFile{{Role: engine.RoleModel, URL: "https://example.invalid/m.gguf", Filename: "m.gguf"}}},
		Files: map[engine.FileRole]string{engine.RoleModel: path},
	}
}

// parsed is the chat.completion document as a test reads it.
type parsed struct {
	Object  string `json:"object"`
	Model   string `json:"model"`
	Choices []struct {
		Index   int `json:"index"`
		Message struct {
			Role             string  `json:"role"`
			Content          string  `json:"content"`
			ReasoningContent *string `json:"reasoning_content"`
		} `json:"message"`
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
	Usage struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
		TotalTokens      int `json:"total_tokens"`
	} `json:"usage"`
	ElapsedMS *uint64 `json:"elapsed_ms"`
}

func parse(t *testing.T, res engine.Result) parsed {
	t.Helper()
	var p parsed
	dec := json.NewDecoder(strings.NewReader(string(res.JSON)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		t.Fatalf("result JSON %s: %v", res.JSON, err)
	}
	if len(p.Choices) != 1 {
		t.Fatalf("want 1 choice, got %d: %s", len(p.Choices), res.JSON)
	}
	return p
}

func TestMain(m *testing.M) {
	// The test binary stands in for `studio-worker runtime-check <dir>`
	// when a test starts it as a child (see check_test.go).
	if mode := os.Getenv(childEnv); mode != "" && len(os.Args) == 3 && os.Args[1] == "runtime-check" {
		os.Exit(runAsChild(mode, os.Args[2]))
	}
	code := m.Run()
	benchratio.Print()
	os.Exit(code)
}
