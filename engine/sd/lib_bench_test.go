package sd

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/engine/gguf"
)

// EnvBenchModel names a single-file SD model (role `model`) for the image
// benchmark; without it the benchmark uses the generated tiny SDXS-shaped
// model (engine/gguf).
const EnvBenchModel = "STUDIO_WORKER_SD_MODEL"

// BenchmarkImageJobVsBareGenerate compares a whole warm engine job (request
// building, generation, PNG encoding) with the bare generate_image call on
// the same context and request. It reports ratio = bare / job (1 = the
// engine adds nothing).
func BenchmarkImageJobVsBareGenerate(b *testing.B) {
	path, model := os.Getenv(EnvLib), os.Getenv(EnvBenchModel)
	if path == "" {
		b.Skip("needs STUDIO_WORKER_SD_LIB (sd.cpp " + PinnedVersion + "; make runtime)")
	}
	if model == "" {
		var err error
		if model, err = gguf.EnsureSDXS(gguf.TinySDXS()); err != nil {
			b.Fatal(err)
		}
	}
	e := New(Config{LibPath: path, Threads: 1, Log: slog.New(slog.DiscardHandler)})
	if e.LoadError() != nil {
		b.Fatal(e.LoadError())
	}
	defer e.Release()
	seed := uint64(1)
	job := imageJob("bench", map[engine.FileRole]string{engine.RoleModel: model},
		engine.ImageParams{Prompt: "a lighthouse at dusk", Width: 256, Height: 256, Steps: 4, Seed: &seed, Ext: "png"})
	if _, err := e.Run(context.Background(), job, nil); err != nil { // load once
		b.Fatal(err)
	}
	gs, _, err := resolveImage(job.Task.Image, nil, nil, randomSeed)
	if err != nil {
		b.Fatal(err)
	}
	var bare, whole time.Duration
	b.ResetTimer()
	for b.Loop() {
		t0 := time.Now()
		if _, err := e.lib.generate(e.warm.handle, gs); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if _, err := e.Run(context.Background(), job, nil); err != nil {
			b.Fatal(err)
		}
		bare += t1.Sub(t0)
		whole += time.Since(t1)
	}
	b.ReportMetric(float64(bare)/float64(whole), "ratio")
}
