package hosted_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/engine/gguf"
	"github.com/minisgg/studio-worker/engine/host/hosted"
	"github.com/minisgg/studio-worker/engine/llama"
	"github.com/minisgg/studio-worker/engine/sd"
)

// benchRounds: each figure is the median of this many rounds, the child
// and the in-process engine taking turns to go first.
const benchRounds = 3

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// benchModel is the SmolLM2-135M-shaped model quantised to Q4_K_M, as the
// llama benchmarks use it (made on first use, shared through the cache).
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

// timed runs one job and returns its result and wall time as the caller
// sees it (IPC included for the child).
func timed(b *testing.B, e engine.Engine, job engine.Job) (engine.Result, time.Duration) {
	t0 := time.Now()
	res, err := e.Run(context.Background(), job, nil)
	if err != nil {
		b.Fatal(err)
	}
	return res, time.Since(t0)
}

// BenchmarkHostChat compares chat through the llama.cpp child with the
// same engine in this process, both warm (model loaded), 64 tokens on one
// thread: the engine's own tokens per second (generation inside the
// engine) and the whole warm job as the caller sees it.
func BenchmarkHostChat(b *testing.B) {
	path := benchModel(b)
	child := hosted.Client(hosted.Llama, hosted.Options{Exe: os.Args[0], Threads: 1, Log: slog.New(slog.DiscardHandler), KeepAlive: -1})
	defer child.Close()
	if err := child.LoadError(); err != nil {
		b.Fatal(err)
	}
	inproc := llama.New(llama.Config{Threads: 1, Log: slog.New(slog.DiscardHandler)})
	defer inproc.Release()
	job := chat(path, "Tell me a story about the cat and the dog", 64)
	seed := uint64(1)
	job.Task.LLM.Seed = &seed
	timed(b, child, job) // loads, outside the timing
	timed(b, inproc, job)
	var tpsChild, tpsIn, wallChild, wallIn []float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for r := 0; r < benchRounds; r++ {
			order := []engine.Engine{child, inproc}
			if r%2 == 1 {
				order = []engine.Engine{inproc, child}
			}
			for _, e := range order {
				res, d := timed(b, e, job)
				if e == engine.Engine(child) {
					tpsChild, wallChild = append(tpsChild, res.Stats.TokensPerSecond), append(wallChild, d.Seconds())
				} else {
					tpsIn, wallIn = append(tpsIn, res.Stats.TokensPerSecond), append(wallIn, d.Seconds())
				}
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(median(tpsChild), "child_tok/s")
	b.ReportMetric(median(tpsIn), "inprocess_tok/s")
	b.ReportMetric(median(wallChild)*1000, "child_warm_job_ms")
	b.ReportMetric(median(wallIn)*1000, "inprocess_warm_job_ms")
	b.ReportMetric(median(tpsChild)/median(tpsIn), "ratio")
	// A second figure: the warm job's speed, child against in-process.
	b.Logf("warm job: child %.1f ms, in-process %.1f ms", median(wallChild)*1000, median(wallIn)*1000)
	recordWarm(b, median(wallIn)/median(wallChild))
}

// recordWarm prints the warm-job ratio as its own ratio line.
func recordWarm(b *testing.B, v float64) {
	b.Helper()
	warmRatio = v
}

var warmRatio float64

// BenchmarkHostColdStart is the time from starting a llama.cpp child to its
// hello (library loaded, kinds known), median of three starts.
func BenchmarkHostColdStart(b *testing.B) {
	if _, err := llama.FindLibDir(""); err != nil {
		b.Skipf("needs the llama.cpp libraries: run `make runtime` (%v)", err)
	}
	var ms []float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for r := 0; r < benchRounds; r++ {
			t0 := time.Now()
			c := hosted.Client(hosted.Llama, hosted.Options{Exe: os.Args[0], Threads: 1, Log: slog.New(slog.DiscardHandler), KeepAlive: -1})
			d := time.Since(t0)
			if err := c.LoadError(); err != nil {
				b.Fatal(err)
			}
			c.Close()
			ms = append(ms, float64(d.Microseconds())/1000)
		}
	}
	b.StopTimer()
	b.ReportMetric(median(ms), "cold_start_ms")
}

// BenchmarkHostImage compares a 64x64 one-step image job through the
// stable-diffusion.cpp child with the same engine in this process (whose
// own cost against a bare generate_image engine/sd's benchmarks measure),
// both warm.
func BenchmarkHostImage(b *testing.B) {
	if os.Getenv(sd.EnvLib) == "" {
		b.Skip("needs " + sd.LibFile() + ": run `make runtime`, or set " + sd.EnvLib)
	}
	model, err := gguf.EnsureSDXS(gguf.TinySDXS())
	if err != nil {
		b.Fatal(err)
	}
	child := hosted.Client(hosted.SD, hosted.Options{Exe: os.Args[0], Threads: 1, Log: slog.New(slog.DiscardHandler), KeepAlive: -1})
	defer child.Close()
	if err := child.LoadError(); err != nil {
		b.Fatal(err)
	}
	inproc := sd.New(sd.Config{Threads: 1, Log: slog.New(slog.DiscardHandler)})
	if err := inproc.LoadError(); err != nil {
		b.Fatal(err)
	}
	defer inproc.Release()
	job := imageJob("bench", model)
	timed(b, child, job)
	timed(b, inproc, job)
	var inChild, inProc []float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for r := 0; r < benchRounds; r++ {
			order := []engine.Engine{child, inproc}
			if r%2 == 1 {
				order = []engine.Engine{inproc, child}
			}
			for _, e := range order {
				_, d := timed(b, e, job)
				if e == engine.Engine(child) {
					inChild = append(inChild, d.Seconds())
				} else {
					inProc = append(inProc, d.Seconds())
				}
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(median(inChild)*1000, "child_ms")
	b.ReportMetric(median(inProc)*1000, "inprocess_ms")
	b.ReportMetric(median(inProc)/median(inChild), "ratio")
}
