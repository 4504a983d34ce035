package llama

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	yz "github.com/hybridgroup/yzma/pkg/llama"

	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/engine/gguf"
	"github.com/minisgg/studio-worker/internal/benchratio"
)

// benchThreads: one thread, as in tests — on a shared 2-core machine more
// threads than free cores makes llama.cpp collapse (see design.md).
const benchThreads = 1

// smolQ4 returns the SmolLM2-135M-shaped model quantised to Q4_K_M by
// llama.cpp, making it on first use (EnsureQ4KM).
func smolQ4(b *testing.B) string {
	b.Helper()
	needLibs(b)
	t0 := time.Now()
	p, made, err := EnsureQ4KM(gguf.SmolLM2Shaped(), benchThreads)
	if err != nil {
		b.Fatal(err)
	}
	if made {
		st, _ := os.Stat(p)
		b.Logf("generated and quantised %s (%d bytes) in %v", filepath.Base(p), st.Size(), time.Since(t0).Round(time.Millisecond))
	}
	return p
}

const benchTokens = 64

func benchParams() engine.LLMParams {
	return engine.LLMParams{
		Messages:  []engine.ChatMessage{{Role: "user", Content: "Tell me a story about the cat and the dog"}},
		MaxTokens: ptr(benchTokens),
		Seed:      ptr(uint64(1)),
	}
}

var benchCli = &engine.CliDefaults{ContextSize: 1024}

// BenchmarkLLMTokensPerSecond compares generation through the engine with a
// bare yzma decode loop on the same model, prompt, sampler and threads. Both
// are warmed up first and then alternate, so that a busy machine slows both.
func BenchmarkLLMTokensPerSecond(b *testing.B) {
	path := smolQ4(b)
	e := New(Config{Threads: benchThreads, Log: slog.New(slog.DiscardHandler)})
	defer e.Release()
	job := llmJob(path, benchParams(), benchCli)
	job.Model = filepath.Base(path)
	if _, err := e.Run(context.Background(), job, nil); err != nil { // load outside the timing
		b.Fatal(err)
	}
	bare := newBareLoop(b, e)
	defer bare.close()
	bare.run(b, job.Task.LLM)
	var engTok, bareTok int
	var engTime, bareTime time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for round := 0; round < 3; round++ {
			res, err := e.Run(context.Background(), job, nil)
			if err != nil {
				b.Fatal(err)
			}
			engTok += res.Stats.CompletionTokens
			engTime += time.Duration(float64(res.Stats.CompletionTokens) / res.Stats.TokensPerSecond * float64(time.Second))

			n, d := bare.run(b, job.Task.LLM)
			bareTok += n
			bareTime += d
		}
	}
	b.StopTimer()
	eng := float64(engTok) / engTime.Seconds()
	bareTPS := float64(bareTok) / bareTime.Seconds()
	b.ReportMetric(eng, "tok/s")
	b.ReportMetric(bareTPS, "bare_tok/s")
	benchratio.Record("llm_tokens_per_s_engine_vs_bare", eng/bareTPS)
}

// bareLoop is the plain llama.cpp generation loop on the engine's resident
// model, with a context of its own made like the engine's.
type bareLoop struct {
	e *Engine
	c yz.Context
}

func newBareLoop(b *testing.B, e *Engine) *bareLoop {
	e.mu.Lock()
	defer e.mu.Unlock()
	r := e.res
	cp := yz.ContextDefaultParams()
	cp.NCtx, cp.NBatch, cp.NUbatch, cp.NSeqMax = uint32(r.wantCtx), uint32(r.nBatch), uint32(r.nBatch), 1
	cp.NThreads, cp.NThreadsBatch = benchThreads, benchThreads
	c, err := yz.InitFromModel(r.model, cp)
	if err != nil {
		b.Fatal(err)
	}
	return &bareLoop{e: e, c: c}
}

func (l *bareLoop) close() { yz.Free(l.c) }

// run generates benchTokens tokens, timing generation only (as the
// engine's tokens/s does).
func (l *bareLoop) run(b *testing.B, p *engine.LLMParams) (int, time.Duration) {
	l.e.mu.Lock()
	defer l.e.mu.Unlock()
	r := l.e.res
	mem, _ := yz.GetMemory(l.c)
	yz.MemoryClear(mem, true)
	o, _ := genOptions(p, benchCli)
	smp, err := newSampler(o, r.vocab)
	if err != nil {
		b.Fatal(err)
	}
	defer yz.SamplerFree(smp)
	toks, _, err := l.e.promptLocked(p, o)
	if err != nil {
		b.Fatal(err)
	}
	if rc, _ := yz.Decode(l.c, yz.BatchGetOne(toks)); rc != 0 {
		b.Fatalf("decode rc %d", rc)
	}
	runtime.KeepAlive(toks)
	start := time.Now()
	one := make([]yz.Token, 1)
	piece := make([]byte, 256)
	n := 0
	for n < benchTokens {
		tok := yz.SamplerSample(smp, l.c, -1)
		if yz.VocabIsEOG(r.vocab, tok) {
			break
		}
		n++
		yz.TokenToPiece(r.vocab, tok, piece, 0, false)
		if n == benchTokens {
			break
		}
		one[0] = tok
		if rc, _ := yz.Decode(l.c, yz.BatchGetOne(one)); rc != 0 {
			b.Fatalf("decode rc %d", rc)
		}
	}
	return n, time.Since(start)
}

// BenchmarkLLMColdVsWarm times a one-token job on a released engine (the
// model is loaded again, from the page cache) against the same job warm.
func BenchmarkLLMColdVsWarm(b *testing.B) {
	path := smolQ4(b)
	e := New(Config{Threads: benchThreads, Log: slog.New(slog.DiscardHandler)})
	defer e.Release()
	p := benchParams()
	p.MaxTokens = ptr(1)
	job := llmJob(path, p, benchCli)
	job.Model = filepath.Base(path)
	var cold, warm time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e.Release()
		t0 := time.Now()
		if _, err := e.Run(context.Background(), job, nil); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if _, err := e.Run(context.Background(), job, nil); err != nil {
			b.Fatal(err)
		}
		cold += t1.Sub(t0)
		warm += time.Since(t1)
	}
	b.StopTimer()
	b.ReportMetric(float64(cold.Milliseconds())/float64(b.N), "cold_ms")
	b.ReportMetric(float64(warm.Milliseconds())/float64(b.N), "warm_ms")
	benchratio.Record("llm_warm_vs_cold_job_time", warm.Seconds()/cold.Seconds())
}

// BenchmarkTinyChat is the whole engine path on the tiny test model.
func BenchmarkTinyChat(b *testing.B) {
	needLibs(b)
	path := modelFile(b, gguf.Tiny())
	e := New(Config{Threads: benchThreads, Log: slog.New(slog.DiscardHandler)})
	defer e.Release()
	job := llmJob(path, benchParams(), nil)
	var tps float64
	for i := 0; i < b.N; i++ {
		res, err := e.Run(context.Background(), job, nil)
		if err != nil {
			b.Fatal(err)
		}
		tps += res.Stats.TokensPerSecond
	}
	b.ReportMetric(tps/float64(b.N), "tok/s")
}

// BenchmarkPromptBuild compares the engine's way from a chat to prompt
// tokens (the model's Jinja template rendered in Go, caller text searched
// for control-token text, the prompt tokenized) with the way before it
// (llama.cpp's built-in template, one tokenize with special-token parsing),
// on a 16-turn chat of about 6 KB. Rounds alternate; the ratio is the
// median of the per-round ratios.
func BenchmarkPromptBuild(b *testing.B) {
	needLibs(b)
	e := New(Config{Threads: benchThreads, Log: slog.New(slog.DiscardHandler)})
	defer e.Release()
	spec := gguf.Tiny()
	spec.Name, spec.Context = "tiny-llama-8k", 8192
	cli := &engine.CliDefaults{ContextSize: 8192}
	if _, err := e.Run(context.Background(), llmJob(modelFile(b, spec), benchParams(), cli), nil); err != nil {
		b.Fatal(err)
	}
	p := benchParams()
	p.Messages = nil
	for i := 0; i < 16; i++ {
		role := []string{"user", "assistant"}[i%2]
		p.Messages = append(p.Messages, engine.ChatMessage{Role: role,
			Content: strings.Repeat(fmt.Sprintf("Turn %d: tell me about the cat, the dog and <b>the world</b>. ", i), 6)})
	}
	o, err := genOptions(&p, cli)
	if err != nil {
		b.Fatal(err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	r := e.res
	ours := func() int {
		toks, _, err := e.promptLocked(&p, o)
		if err != nil {
			b.Fatal(err)
		}
		return len(toks)
	}
	before := func() int {
		text, ok := renderBuiltin(r.tmpl.source, chatMessages(&p), &protector{vf: &vocabFacts{}, index: map[string]rune{}})
		if !ok {
			b.Fatal("no built-in template")
		}
		return len(yz.Tokenize(r.vocab, text, true, true))
	}
	if a, c := ours(), before(); a != c {
		b.Fatalf("%d tokens against %d before", a, c)
	}
	const reps = 20
	var rs []float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for round := 0; round < 5; round++ {
			var tOurs, tBefore time.Duration
			for k := 0; k < 2; k++ { // alternate the order
				first, second := ours, before
				if (round+k)%2 == 1 {
					first, second = before, ours
				}
				t0 := time.Now()
				for j := 0; j < reps; j++ {
					first()
				}
				t1 := time.Now()
				for j := 0; j < reps; j++ {
					second()
				}
				if (round+k)%2 == 1 {
					tBefore += t1.Sub(t0)
					tOurs += time.Since(t1)
				} else {
					tOurs += t1.Sub(t0)
					tBefore += time.Since(t1)
				}
			}
			rs = append(rs, tOurs.Seconds()/tBefore.Seconds())
		}
	}
	b.StopTimer()
	sort.Float64s(rs)
	benchratio.Record("llm_prompt_build_jinja_vs_builtin_time", rs[len(rs)/2])
}
