package api_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/engine/gguf"
	"github.com/minisgg/studio-worker/engine/llama"
)

// Ratios measured by the benchmarks, printed as `ratio NAME VALUE` lines
// after them (make bench collects them).
var ratios struct {
	sync.Mutex
	m map[string]float64
}

func recordRatio(name string, v float64) {
	ratios.Lock()
	defer ratios.Unlock()
	if ratios.m == nil {
		ratios.m = map[string]float64{}
	}
	ratios.m[name] = v
}

func printRatios() {
	ratios.Lock()
	defer ratios.Unlock()
	names := make([]string, 0, len(ratios.m))
	for n := range ratios.m {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		fmt.Printf("ratio %s %.3f\n", n, ratios.m[n])
	}
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// benchModel is the SmolLM2-135M-shaped model quantised to Q4_K_M, as the
// llama and engine-host benchmarks use it (shared through the cache).
func benchModel(b *testing.B) string {
	b.Helper()
	if _, err := llama.FindLibDir(""); err != nil {
		b.Skipf("needs the llama.cpp libraries: run `make runtime` (%v)", err)
	}
	spec := gguf.SmolLM2Shaped()
	dir, err := gguf.CacheDir()
	if err != nil {
		b.Fatal(err)
	}
	dst := filepath.Join(dir, strings.TrimSuffix(spec.FileName(), ".gguf")+"-q4_k_m.gguf")
	if _, err := os.Stat(dst); err == nil {
		return dst
	}
	src, err := gguf.EnsureIn(dir, spec)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := llama.LoadRuntime("", nil); err != nil {
		b.Fatal(err)
	}
	if err := llama.QuantizeQ4KM(src, dst, 1); err != nil {
		b.Fatal(err)
	}
	os.Remove(src)
	return dst
}

const (
	benchRounds = 3
	benchTokens = 64
)

// BenchmarkAPIStream compares a streamed chat through the local API (the
// official client, SSE over loopback, the worker's gate, the llama.cpp
// child) with the same job handed straight to the same llama.cpp child:
// time to the first token (ratio engine/API: 1 means the API adds
// nothing) and tokens per second (the client's, between its first and
// last piece of text, against the engine's own figure). Same model, same
// 1 thread, warm, alternating which goes first, median of the rounds.
func BenchmarkAPIStream(b *testing.B) {
	e := newEnv(b, envOptions{chat: benchModel(b)})
	c := e.client(e.srv.Token())
	ctx := context.Background()
	params := chatParams("Tell me a story about the cat and the dog", benchTokens)
	m, err := e.runner.LocalModel(chatModel, engine.KindLLM)
	if err != nil {
		b.Fatal(err)
	}
	task := engine.Task{Kind: engine.KindLLM, LLM: &engine.LLMParams{
		Messages:    []engine.ChatMessage{{Role: "user", Content: "Tell me a story about the cat and the dog"}},
		MaxTokens:   new(int(benchTokens)),
		Temperature: new(0.0),
		Seed:        new(uint64(7)),
	}}
	job := m.Job("bench", task)

	direct := func() (ttft time.Duration, tps float64) {
		t0 := time.Now()
		var first time.Duration
		res, err := e.llm.Run(ctx, job, func(p engine.Progress) {
			if p.Text != "" && first == 0 {
				first = time.Since(t0)
			}
		})
		if err != nil {
			b.Fatal(err)
		}
		return first, res.Stats.TokensPerSecond
	}
	viaAPI := func() (ttft time.Duration, tps float64) {
		t0 := time.Now()
		s := c.Chat.Completions.NewStreaming(ctx, params)
		defer s.Close()
		var first, last time.Time
		var tokens int64
		for s.Next() {
			ch := s.Current()
			if len(ch.Choices) > 0 && ch.Choices[0].Delta.Content != "" {
				last = time.Now()
				if first.IsZero() {
					first = last
				}
			}
			if ch.Usage.CompletionTokens > 0 {
				tokens = ch.Usage.CompletionTokens
			}
		}
		if err := s.Err(); err != nil {
			b.Fatal(err)
		}
		if tokens < 2 || !last.After(first) {
			b.Fatalf("a stream of %d tokens says nothing about speed", tokens)
		}
		return first.Sub(t0), float64(tokens-1) / last.Sub(first).Seconds()
	}
	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	direct() // load the model, outside the timing
	viaAPI()
	var ttftAPI, ttftEng, tpsAPI, tpsEng []float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for r := 0; r < benchRounds; r++ {
			order := []bool{true, false}
			if r%2 == 1 {
				order = []bool{false, true}
			}
			for _, api := range order {
				if api {
					t, s := viaAPI()
					ttftAPI, tpsAPI = append(ttftAPI, t.Seconds()*1000), append(tpsAPI, s)
				} else {
					t, s := direct()
					ttftEng, tpsEng = append(ttftEng, t.Seconds()*1000), append(tpsEng, s)
				}
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(median(ttftAPI), "api_first_token_ms")
	b.ReportMetric(median(ttftEng), "engine_first_token_ms")
	b.ReportMetric(median(tpsAPI), "api_tok/s")
	b.ReportMetric(median(tpsEng), "engine_tok/s")
	recordRatio("api_first_token_engine_vs_api", median(ttftEng)/median(ttftAPI))
	recordRatio("api_stream_tokens_per_s_vs_engine", median(tpsAPI)/median(tpsEng))
}
