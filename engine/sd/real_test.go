package sd

import (
	"bytes"
	"context"
	"image"
	"image/png"
	"log/slog"
	"sync"
	"testing"

	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/engine/gguf"
)

// The tests below run real generations with the real library and the
// generated tiny SDXS model (engine/gguf), 64x64 and one step on one
// thread, sharing one engine (and so one loaded model) between them.

var shared struct {
	once  sync.Once
	e     *Engine
	rec   *recorder
	model string
	err   error
}

func realEngine(t *testing.T) (*Engine, string) {
	t.Helper()
	l := testLibrary(t)
	shared.once.Do(func() {
		shared.model, shared.err = gguf.EnsureSDXS(gguf.TinySDXS())
		shared.rec = &recorder{}
		shared.e = New(Config{LibPath: l.Path(), Threads: 1, Log: slog.New(shared.rec)})
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	if err := shared.e.LoadError(); err != nil {
		t.Fatal(err)
	}
	return shared.e, shared.model
}

func modelJob(id, model string, p engine.ImageParams) engine.Job {
	return imageJob(id, map[engine.FileRole]string{engine.RoleModel: model}, p)
}

func decodePNG(t *testing.T, b []byte) image.Image {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func TestRealTxt2Img(t *testing.T) {
	e, model := realEngine(t)
	seed := uint64(42)
	res, err := e.Run(context.Background(), modelJob("real-1", model, engine.ImageParams{Prompt: "a lighthouse", Width: 64, Height: 64, Steps: 1, Seed: &seed, Ext: "png"}), nil)
	if err != nil {
		t.Fatal(err)
	}
	img := decodePNG(t, res.Bytes)
	if b := img.Bounds(); b.Dx() != 64 || b.Dy() != 64 {
		t.Fatalf("size %v", b)
	}
	if n, mean := pixelSpread(img); n < 100 || mean < 8 || mean > 247 {
		t.Fatalf("a flat image: %d colours, mean %.1f", n, mean)
	}
}

// pixelSpread is the number of distinct colours and the mean brightness.
func pixelSpread(img image.Image) (int, float64) {
	seen := map[[3]uint32]bool{}
	var sum float64
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			seen[[3]uint32{r, g, bl}] = true
			sum += float64(r+g+bl) / 3 / 257
		}
	}
	return len(seen), sum / float64(b.Dx()*b.Dy())
}
