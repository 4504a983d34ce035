package hosted_test

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/engine/gguf"
	"github.com/minisgg/studio-worker/engine/host/hosted"
	"github.com/minisgg/studio-worker/engine/llama"
	"github.com/minisgg/studio-worker/engine/sd"
	"github.com/minisgg/studio-worker/internal/benchmodel"
	"github.com/minisgg/studio-worker/internal/benchratio"
)

// benchRounds: each figure is the median of this many rounds, the child
// and the in-process engine taking turns to go first.
const benchRounds = 3

// rounds runs job once on each engine to load it (outside the timing),
// then benchRounds rounds per b.N, the child and the in-process engine
// taking turns to go first, passing each run to got (inChild says which
// engine ran it).
func rounds(b *testing.B, child, inproc engine.Engine, job engine.Job, got func(inChild bool, res engine.Result, d time.Duration)) {
	timed(b, child, job)
	timed(b, inproc, job)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for r := 0; r < benchRounds; r++ {
			order := []engine.Engine{child, inproc}
			if r%2 == 1 {
				order = []engine.Engine{inproc, child}
			}
			for _, e := range order {
				res, d := timed(b, e, job)
				got(e == child, res, d)
			}
		}
	}
	b.StopTimer()
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
	path := benchmodel.SmolQ4(b)
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
	var tpsChild, tpsIn, wallChild, wallIn []float64
	rounds(b, child, inproc, job, func(inChild bool, res engine.Result, d time.Duration) {
		if inChild {
			tpsChild, wallChild = append(tpsChild, res.Stats.TokensPerSecond), append(wallChild, d.Seconds())
		} else {
			tpsIn, wallIn = append(tpsIn, res.Stats.TokensPerSecond), append(wallIn, d.Seconds())
		}
	})
	b.ReportMetric(benchratio.Median(tpsChild), "child_tok/s")
	b.ReportMetric(benchratio.Median(tpsIn), "inprocess_tok/s")
	b.ReportMetric(benchratio.Median(wallChild)*1000, "child_warm_job_ms")
	b.ReportMetric(benchratio.Median(wallIn)*1000, "inprocess_warm_job_ms")
	b.ReportMetric(benchratio.Median(tpsChild)/benchratio.Median(tpsIn), "ratio")
	// A second figure: the warm job's speed, child against in-process.
	b.Logf("warm job: child %.1f ms, in-process %.1f ms", benchratio.Median(wallChild)*1000, benchratio.Median(wallIn)*1000)
	benchratio.Record("HostWarmJob", benchratio.Median(wallIn)/benchratio.Median(wallChild))
}

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
	b.ReportMetric(benchratio.Median(ms), "cold_start_ms")
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
	var inChild, inProc []float64
	rounds(b, child, inproc, job, func(c bool, _ engine.Result, d time.Duration) {
		if c {
			inChild = append(inChild, d.Seconds())
		} else {
			inProc = append(inProc, d.Seconds())
		}
	})
	b.ReportMetric(benchratio.Median(inChild)*1000, "child_ms")
	b.ReportMetric(benchratio.Median(inProc)*1000, "inprocess_ms")
	b.ReportMetric(benchratio.Median(inProc)/benchratio.Median(inChild), "ratio")
}
