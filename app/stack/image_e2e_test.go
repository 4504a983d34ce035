package stack

import (
	"bytes"
	"context"
	"image"
	"image/png"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gen2brain/webp"

	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/engine/sd"
	"github.com/minisgg/studio-worker/studio"
	"github.com/minisgg/studio-worker/studio/devstudio"
)

// progressLog wraps the real image engine and keeps every progress report
// of every job, so the test can see what the worker was told.
type progressLog struct {
	*sd.Engine
	mu     sync.Mutex
	byJob  map[string][]engine.Progress
	onStep func(job string, p engine.Progress)
}

func (p *progressLog) Run(ctx context.Context, job engine.Job, progress engine.ProgressFunc) (engine.Result, error) {
	return p.Engine.Run(ctx, job, func(pr engine.Progress) {
		p.mu.Lock()
		p.byJob[job.ID] = append(p.byJob[job.ID], pr)
		hook := p.onStep
		p.mu.Unlock()
		if hook != nil {
			hook(job.ID, pr)
		}
		if progress != nil {
			progress(pr)
		}
	})
}

func (p *progressLog) of(job string) []engine.Progress {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]engine.Progress(nil), p.byJob[job]...)
}

// imageStack is a dev studio and a worker with the real stable-diffusion.cpp
// engine (one thread), running until the test ends.
func imageStack(t *testing.T, grace time.Duration) (*Stack, *progressLog) {
	t.Helper()
	img := sd.New(sd.Config{Threads: 1, Log: slog.New(slog.DiscardHandler)})
	if err := img.LoadError(); err != nil {
		t.Skipf("needs %s (stable-diffusion.cpp %s; make runtime): %v", sd.LibFile(), sd.PinnedVersion, err)
	}
	rec := &progressLog{Engine: img, byJob: map[string][]engine.Progress{}}
	opts := testOptions(t)
	opts.DevStudio = true
	opts.Engines = []engine.Engine{rec}
	opts.RegisterPoll = 20 * time.Millisecond
	opts.ShutdownGrace = grace
	st, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() {
		cancel()
		st.Shutdown(5 * time.Second)
		img.Release()
	})
	st.Start(ctx)
	return st, rec
}

func waitJob(t *testing.T, st *Stack, id string) devstudio.JobStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	js, err := st.Dev.Server.WaitJob(ctx, id, devstudio.JobDone, devstudio.JobFailed)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func resultImage(t *testing.T, st *Stack, js devstudio.JobStatus) image.Image {
	t.Helper()
	if js.State != devstudio.JobDone {
		t.Fatalf("job %s: %s: %s", js.ID, js.State, js.Error)
	}
	data, err := os.ReadFile(filepath.Join(st.Dev.DataDir(), filepath.FromSlash(js.ResultFile)))
	if err != nil {
		t.Fatal(err)
	}
	var img image.Image
	switch filepath.Ext(js.ResultFile) {
	case ".png":
		img, err = png.Decode(bytes.NewReader(data))
	case ".webp":
		img, err = webp.Decode(bytes.NewReader(data))
	default:
		t.Fatalf("result file %s is neither PNG nor WebP", js.ResultFile)
	}
	if err != nil {
		t.Fatalf("%s does not decode: %v", js.ResultFile, err)
	}
	return img
}

func pixels(img image.Image) []byte {
	b := img.Bounds()
	var out []byte
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			out = append(out, byte(r>>8), byte(g>>8), byte(bl>>8))
		}
	}
	return out
}

func distinct(p []byte) int {
	seen := map[[3]byte]bool{}
	for i := 0; i+2 < len(p); i += 3 {
		seen[[3]byte{p[i], p[i+1], p[i+2]}] = true
	}
	return len(seen)
}

func enqueueImage(t *testing.T, st *Stack, p engine.ImageParams) string {
	t.Helper()
	spec, err := st.Dev.ImageJobSpec(p)
	if err != nil {
		t.Fatal(err)
	}
	id, err := st.Dev.Server.EnqueueJob(spec)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// Dev studio → worker → stable-diffusion.cpp → multipart upload, for PNG and
// WebP: the results decode, have exactly the requested size, are not flat;
// the same seed gives the same pixels; the second job does not load the
// model again; progress shows loading, then exactly the sampling steps.
// Bad input fails its job, not retried, and the worker takes the next one.
func TestImageJobsEndToEnd(t *testing.T) {
	st, rec := imageStack(t, time.Second)
	q, err := st.Dev.EnqueueImageDemoJobs(3, st.Runner.Kinds())
	if err != nil {
		t.Fatal(err)
	}
	var imgs [][]byte
	for i, id := range q.IDs {
		js := waitJob(t, st, id)
		img := resultImage(t, st, js)
		if b := img.Bounds(); b.Dx() != DemoImageSide || b.Dy() != DemoImageSide {
			t.Fatalf("job %d: %v, want %dx%d", i, b, DemoImageSide, DemoImageSide)
		}
		wantExt := []string{".png", ".webp", ".png"}[i]
		if filepath.Ext(js.ResultFile) != wantExt {
			t.Errorf("job %d stored as %s, want %s", i, js.ResultFile, wantExt)
		}
		p := pixels(img)
		if n := distinct(p); n < 100 {
			t.Errorf("job %d: a flat image (%d colours)", i, n)
		}
		imgs = append(imgs, p)

		prog := rec.of(id)
		loads, steps := 0, int64(-1)
		for _, pr := range prog {
			switch pr.Phase {
			case engine.PhaseLoad:
				loads++
				if steps >= 0 {
					t.Errorf("job %d: loading reported after sampling began: %+v", i, prog)
				}
			case engine.PhaseGenerate:
				if pr.Total != DemoImageSteps || pr.Done < steps {
					t.Errorf("job %d: generation progress is not the %d steps in order: %+v", i, DemoImageSteps, prog)
				}
				steps = pr.Done
			}
		}
		if steps != DemoImageSteps {
			t.Errorf("job %d: sampling ended at step %d of %d: %+v", i, steps, DemoImageSteps, prog)
		}
		if (i == 0) != (loads > 0) {
			t.Errorf("job %d: %d load reports; only the first job loads the model", i, loads)
		}
	}
	// The Jobs page shows each image as a thumbnail.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	until(ctx, t, st.Worker, func(s studio.Snapshot) bool {
		n := 0
		for _, j := range s.Recent {
			for _, id := range q.IDs {
				if j.ID == id && len(j.Thumbnail) > 0 {
					n++
				}
			}
		}
		return n == len(q.IDs)
	}, nil)

	// The demo's seeds are 1000+i, so queue job 1's seed again.
	seed := uint64(1000)
	again := pixels(resultImage(t, st, waitJob(t, st, enqueueImage(t, st, engine.ImageParams{
		Prompt: imageDemoPrompts[0], Width: DemoImageSide, Height: DemoImageSide, Steps: DemoImageSteps, Seed: &seed, Ext: "png"}))))
	if !bytes.Equal(again, imgs[0]) {
		t.Error("the same seed gave other pixels")
	}
	if bytes.Equal(imgs[0], imgs[2]) {
		t.Error("different seeds gave the same pixels")
	}

	// Bad input: each fails once, for good, saying why; the worker goes on.
	page := filepath.Join(st.Dev.modelsDir, "not-an-image.png")
	if err := os.WriteFile(page, []byte("<!DOCTYPE html><html><body>Sign in</body></html>"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := []struct {
		p     engine.ImageParams
		words string
	}{
		{engine.ImageParams{Prompt: "p", Width: 72, Height: 64, Steps: 1}, "multiples of 64"},
		{engine.ImageParams{Prompt: "p", Width: 64, Height: 64, Steps: 1000}, "1000 steps"},
		{engine.ImageParams{Prompt: " ", Width: 64, Height: 64, Steps: 1}, "prompt is empty"},
		{engine.ImageParams{Prompt: "p", Steps: 1, InitImageURL: devstudio.ModelURL(st.Dev.URL, "not-an-image.png")}, "web page (HTML)"},
	}
	for _, b := range bad {
		js := waitJob(t, st, enqueueImage(t, st, b.p))
		if js.State != devstudio.JobFailed || js.Attempts != 1 || !strings.Contains(js.Error, b.words) {
			t.Errorf("%+v: %s after %d attempts: %q (want a failure naming %q, not retried)", b.p, js.State, js.Attempts, js.Error, b.words)
		}
	}
	q3, err := st.Dev.EnqueueImageDemoJobs(1, st.Runner.Kinds())
	if err != nil {
		t.Fatal(err)
	}
	if js := waitJob(t, st, q3.IDs[0]); js.State != devstudio.JobDone {
		t.Fatalf("the worker did not go on after bad jobs: %s %s", js.State, js.Error)
	}
}

// A shutdown or a pause-now during sampling stops the image within one
// sampling step.
func TestImageJobStopsWithinOneStep(t *testing.T) {
	for _, how := range []string{"pause-now", "shutdown"} {
		t.Run(how, func(t *testing.T) {
			// No grace: a shutdown cancels the running job at once (the
			// grace that lets a job finish first is the worker's, not this
			// test's subject).
			st, rec := imageStack(t, time.Nanosecond)
			var once sync.Once
			var mu sync.Mutex
			stoppedAt := int64(-1)
			stopped := make(chan struct{})
			rec.onStep = func(job string, p engine.Progress) {
				if p.Phase != engine.PhaseGenerate || p.Done < 2 {
					return
				}
				once.Do(func() {
					mu.Lock()
					stoppedAt = p.Done
					mu.Unlock()
					go func() {
						if how == "shutdown" {
							st.Shutdown(30 * time.Second)
						} else {
							st.Worker.PauseNow()
						}
						close(stopped)
					}()
				})
			}
			seed := uint64(5)
			id := enqueueImage(t, st, engine.ImageParams{Prompt: "p", Width: 64, Height: 64, Steps: 100, Seed: &seed, Ext: "png"})
			<-stopped
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			until(ctx, t, st.Worker, func(s studio.Snapshot) bool { return s.Current == nil }, nil)
			mu.Lock()
			at := stoppedAt
			mu.Unlock()
			last := int64(0)
			for _, p := range rec.of(id) {
				if p.Phase == engine.PhaseGenerate {
					last = max(last, p.Done)
				}
			}
			if at < 0 || last > at+1 {
				t.Fatalf("stopped at step %d, sampling went on to step %d", at, last)
			}
		})
	}
}
