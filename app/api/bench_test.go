package api_test

import (
	"context"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/internal/benchmodel"
	"github.com/minisgg/studio-worker/internal/benchratio"
)

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
	e := newEnv(b, envOptions{chat: benchmodel.SmolQ4(b)})
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
	b.ReportMetric(benchratio.Median(ttftAPI), "api_first_token_ms")
	b.ReportMetric(benchratio.Median(ttftEng), "engine_first_token_ms")
	b.ReportMetric(benchratio.Median(tpsAPI), "api_tok/s")
	b.ReportMetric(benchratio.Median(tpsEng), "engine_tok/s")
	benchratio.Record("api_first_token_engine_vs_api", benchratio.Median(ttftEng)/benchratio.Median(ttftAPI))
	benchratio.Record("api_stream_tokens_per_s_vs_engine", benchratio.Median(tpsAPI)/benchratio.Median(tpsEng))
}
