package stack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
	"time"

	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/engine/gguf"
	"github.com/minisgg/studio-worker/studio/devstudio"
)

// DevStudio is a dev studio served on loopback for `make run`.
type DevStudio struct {
	Server    *devstudio.Server
	URL       string // base URL, e.g. http://127.0.0.1:40123/
	modelsDir string
	dataDir   string
	http      *http.Server
	log       *slog.Logger
}

// StartDevStudio serves a dev studio on loopback, keeping its state in
// dir; with autoApprove it approves every worker by itself. The studio's
// own warnings go to stderr (nil means os.Stderr).
func StartDevStudio(dir string, autoApprove bool, log *slog.Logger, stderr io.Writer) (*DevStudio, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if stderr == nil {
		stderr = os.Stderr
	}
	models := filepath.Join(dir, "models")
	if err := os.MkdirAll(models, 0o755); err != nil {
		return nil, err
	}
	// The studio's own lines go to stderr only: shipped back to it as the
	// worker's logBatch they would feed on themselves.
	studioLog := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv, err := devstudio.New(devstudio.Options{DataDir: dir, ModelsDir: models, AutoApprove: autoApprove, Log: studioLog})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		srv.Close()
		return nil, err
	}
	d := &DevStudio{
		Server:    srv,
		URL:       "http://" + ln.Addr().String() + "/",
		modelsDir: models,
		dataDir:   dir,
		http:      &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second},
		log:       log,
	}
	go func() {
		if err := d.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("dev studio stopped serving: "+err.Error(), "op", "devstudio")
		}
	}()
	return d, nil
}

// demoPrompts are what the demo jobs ask; the tiny random-weight model
// answers with nonsense, but it runs for real through llama.cpp.
var demoPrompts = []string{
	"Name three colours of a sunset.",
	"Write a haiku about graphics cards.",
	"What is a good name for a friendly robot?",
	"Describe a castle made of glass in one sentence.",
	"List two uses for a spare GPU.",
}

// DemoJobs are the jobs EnqueueDemoJobs queued.
type DemoJobs struct {
	IDs   []string
	Model string // the model id the jobs name
	File  string // its file, as the studio serves it
}

// EnqueueDemoJobs queues n text jobs of at most maxTokens tokens for a tiny
// generated model, which the dev studio serves itself. kinds is what the
// worker can run: without the llama.cpp runtime there is nothing real to
// feed it, and it says so.
func (d *DevStudio) EnqueueDemoJobs(n, maxTokens int, kinds []engine.TaskKind) (DemoJobs, error) {
	if !slices.Contains(kinds, engine.KindLLM) {
		return DemoJobs{}, errors.New("text jobs need the llama.cpp runtime, which is not loaded (run `make runtime`)")
	}
	spec := gguf.Tiny()
	path, err := gguf.EnsureIn(d.modelsDir, spec)
	if err != nil {
		return DemoJobs{}, fmt.Errorf("could not write the demo model: %w", err)
	}
	jobs := DemoJobs{Model: spec.Name, File: filepath.Base(path)}
	file, err := devstudio.ModelFile(d.URL, d.modelsDir, jobs.File, engine.RoleModel)
	if err != nil {
		return jobs, err
	}
	for i := range n {
		id, err := d.Server.EnqueueJob(devstudio.JobSpec{
			Task: engine.Task{Kind: engine.KindLLM, LLM: &engine.LLMParams{
				Messages:  []engine.ChatMessage{{Role: "user", Content: demoPrompts[i%len(demoPrompts)]}},
				MaxTokens: &maxTokens,
			}},
			Model:          spec.Name,
			ModelSource:    engine.ModelSource{Engine: engine.EngineLlamaCpp, Files: []engine.ModelFile{file}},
			VRAMGBEstimate: 0.1,
			GameID:         "demo",
			AssetName:      fmt.Sprintf("demo-%d", i+1),
		})
		if err != nil {
			return jobs, err
		}
		jobs.IDs = append(jobs.IDs, id)
		d.log.Info("demo job queued: "+id, "op", "devstudio", "job", id, "model", spec.Name)
	}
	return jobs, nil
}

// imageDemoPrompts are what the demo image jobs ask; the random-weight
// model makes noise of them, but through the real pipeline.
var imageDemoPrompts = []string{
	"a lighthouse on a cliff at dusk",
	"a bowl of oranges, oil painting",
	"a robot watering plants",
}

// Sizes of a demo image job: small enough for a few seconds on a CPU.
const (
	DemoImageSide  = 64
	DemoImageSteps = 2
)

// EnqueueImageDemoJobs queues n image jobs (DemoImageSide² pixels,
// DemoImageSteps steps, fixed seeds; PNG and WebP in turn) for the tiny
// generated SDXS-shaped model, which the dev studio serves itself. Without
// the stable-diffusion.cpp runtime there is nothing real to feed the
// worker, and it says so.
func (d *DevStudio) EnqueueImageDemoJobs(n int, kinds []engine.TaskKind) (DemoJobs, error) {
	if !slices.Contains(kinds, engine.KindImage) {
		return DemoJobs{}, errors.New("image jobs need the stable-diffusion.cpp runtime, which is not loaded (run `make runtime`)")
	}
	var jobs DemoJobs
	for i := range n {
		seed := uint64(1000 + i)
		spec, err := d.ImageJobSpec(engine.ImageParams{
			Prompt: imageDemoPrompts[i%len(imageDemoPrompts)], Width: DemoImageSide, Height: DemoImageSide,
			Steps: DemoImageSteps, Seed: &seed, Ext: []string{"png", "webp"}[i%2],
		})
		if err != nil {
			return jobs, err
		}
		spec.AssetName = fmt.Sprintf("demo-image-%d", i+1)
		jobs.Model, jobs.File = spec.Model, path.Base(spec.ModelSource.Files[0].URL)
		id, err := d.Server.EnqueueJob(spec)
		if err != nil {
			return jobs, err
		}
		jobs.IDs = append(jobs.IDs, id)
		d.log.Info("demo image job queued: "+id, "op", "devstudio", "job", id, "model", spec.Model)
	}
	return jobs, nil
}

// ImageJobSpec is an image job with params for the tiny generated
// SDXS-shaped model (engine/gguf), which it writes into the studio's models
// folder when absent and serves itself.
func (d *DevStudio) ImageJobSpec(p engine.ImageParams) (devstudio.JobSpec, error) {
	spec := gguf.TinySDXS()
	file, err := gguf.EnsureSDXSIn(d.modelsDir, spec)
	if err != nil {
		return devstudio.JobSpec{}, fmt.Errorf("could not write the demo image model: %w", err)
	}
	mf, err := devstudio.ModelFile(d.URL, d.modelsDir, filepath.Base(file), engine.RoleModel)
	if err != nil {
		return devstudio.JobSpec{}, err
	}
	return devstudio.JobSpec{
		Task:           engine.Task{Kind: engine.KindImage, Image: &p},
		Model:          spec.Name,
		ModelSource:    engine.ModelSource{Engine: engine.EngineSDCpp, Files: []engine.ModelFile{mf}},
		VRAMGBEstimate: 0.2,
		GameID:         "demo",
	}, nil
}

// DataDir is where the dev studio keeps its state and the results it
// received (JobStatus.ResultFile is relative to it).
func (d *DevStudio) DataDir() string { return d.dataDir }

// Close stops the dev studio.
func (d *DevStudio) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	d.Server.Close()
	_ = d.http.Shutdown(ctx)
}
