package sd_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/minisgg/studio-worker/app/stack"
	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/engine/gguf"
	"github.com/minisgg/studio-worker/engine/sd"
	"github.com/minisgg/studio-worker/studio/devstudio"
)

// benchWorker is a dev studio and the whole worker (session, download and
// verification, runner, the image engine in this process on one thread,
// encoding, multipart upload) on loopback.
func benchWorker(b *testing.B) (*stack.Stack, *sd.Engine) {
	b.Helper()
	eng := sd.New(sd.Config{Threads: 1, Log: slog.New(slog.DiscardHandler)})
	if err := eng.LoadError(); err != nil {
		b.Skipf("needs %s (stable-diffusion.cpp %s; make runtime): %v", sd.LibFile(), sd.PinnedVersion, err)
	}
	dir := b.TempDir()
	b.Setenv("HOME", dir)
	st, err := stack.New(stack.Options{
		ConfigDir: filepath.Join(dir, "config"), DevDir: filepath.Join(dir, "dev"), StateDir: filepath.Join(dir, "state"),
		LogPath: "-", Stderr: io.Discard, Level: slog.LevelError, Engines: []engine.Engine{eng},
		DevStudio: true, Headless: true, RegisterPoll: 20 * time.Millisecond, ShutdownGrace: time.Second,
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	st.Start(ctx)
	b.Cleanup(func() {
		cancel()
		st.Shutdown(10 * time.Second)
		eng.Release()
	})
	return st, eng
}

var benchImage = engine.ImageParams{Prompt: "a lighthouse at dusk", Width: 64, Height: 64, Steps: 4, Ext: "png"}

// runJob queues one image job and waits until the studio has its result.
func runJob(b *testing.B, st *stack.Stack, p engine.ImageParams) time.Duration {
	b.Helper()
	seed := uint64(11)
	p.Seed = &seed
	spec, err := st.Dev.ImageJobSpec(p)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	id, err := st.Dev.Server.EnqueueJob(spec)
	if err != nil {
		b.Fatal(err)
	}
	js, err := st.Dev.Server.WaitJob(ctx, id, devstudio.JobDone, devstudio.JobFailed)
	if err != nil || js.State != devstudio.JobDone {
		b.Fatalf("job %s: %v %s", id, err, js.Error)
	}
	return time.Since(start)
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// BenchmarkImageJobWholeWorkerVsBare: a warm image job through the whole
// worker (queued at the dev studio until its PNG is stored there) against a
// bare generate_image on the same model, size, steps, seed and thread count,
// alternating which runs first, median of max(3, b.N) rounds each. ratio =
// bare / whole (1 = the worker adds nothing). It also reports the cold job
// (download, check and load included) against the warm one:
// ratio image-warm-vs-cold = warm / cold.
func BenchmarkImageJobWholeWorkerVsBare(b *testing.B) {
	st, eng := benchWorker(b)
	cold := runJob(b, st, benchImage) // downloads, checks and loads the model
	model, err := gguf.EnsureSDXSIn(filepath.Join(b.TempDir(), "bare"), gguf.TinySDXS())
	if err != nil {
		b.Fatal(err)
	}
	gen, free, err := sd.BareGenerator(eng, model, 1, benchImage)
	if err != nil {
		b.Fatal(err)
	}
	defer free()
	if err := gen(); err != nil { // warm the bare context too
		b.Fatal(err)
	}
	var whole, bare []time.Duration
	round := func(i int) {
		timeBare := func() {
			t0 := time.Now()
			if err := gen(); err != nil {
				b.Fatal(err)
			}
			bare = append(bare, time.Since(t0))
		}
		if i%2 == 0 {
			whole = append(whole, runJob(b, st, benchImage))
			timeBare()
		} else {
			timeBare()
			whole = append(whole, runJob(b, st, benchImage))
		}
	}
	rounds := 0
	for b.Loop() { // one round is longer than the default -benchtime
		round(rounds)
		rounds++
	}
	for ; rounds < 3; rounds++ {
		round(rounds)
	}
	mw, mb := median(whole), median(bare)
	b.ReportMetric(float64(mb)/float64(mw), "ratio")
	b.ReportMetric(mw.Seconds(), "whole-s")
	b.ReportMetric(mb.Seconds(), "bare-s")
	b.Logf("whole worker %v, bare generate_image %v (medians of %d), cold job %v", mw, mb, rounds, cold)
	// The cold-vs-warm figure as its own ratio line.
	fmtRatio(b, "BenchmarkImageJobWarmVsCold", float64(mw)/float64(cold))
}

// BenchmarkImageJobRSS: the process's resident memory after 30 warm image
// jobs against after the first (ratio = after 30 / after 1; 1 = no growth).
func BenchmarkImageJobRSS(b *testing.B) {
	if runtime.GOOS != "linux" {
		b.Skip("reads /proc/self/status")
	}
	st, _ := benchWorker(b)
	runJob(b, st, benchImage)
	first := rss(b)
	done := false
	for b.Loop() { // 30 jobs are longer than the default -benchtime
		if !done {
			for range 30 {
				runJob(b, st, benchImage)
			}
			done = true
		}
	}
	after := rss(b)
	b.ReportMetric(float64(after)/float64(first), "ratio")
	b.ReportMetric(float64(first)/(1<<20), "rss1-MiB")
	b.ReportMetric(float64(after)/(1<<20), "rss31-MiB")
}

func rss(b *testing.B) uint64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err == nil {
				return kb << 10
			}
		}
	}
	b.Fatal("no VmRSS in /proc/self/status")
	return 0
}

// fmtRatio prints a ratio line for a figure measured inside another
// benchmark (scripts/bench-ratios.awk passes `ratio ...` lines through).
func fmtRatio(b *testing.B, name string, v float64) {
	b.Helper()
	os.Stdout.WriteString("ratio " + strings.TrimPrefix(name, "Benchmark") + " " + strconv.FormatFloat(v, 'f', 3, 64) + "\n")
}
