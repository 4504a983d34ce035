package sd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"image/png"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
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

// imageServer serves the given files on loopback, as the dev studio does.
func imageServer(t *testing.T, files map[string][]byte) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, ok := files[strings.TrimPrefix(r.URL.Path, "/")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "image/png") // whatever it is: the bytes decide
		w.Write(b)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/"
}

func encodePNG(t *testing.T, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// gradient is a recognisable input image: red rises left to right.
func gradient(w, h int) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.Set(x, y, color.NRGBA{R: uint8(x * 255 / (w - 1)), G: 40, B: uint8(y * 255 / (h - 1)), A: 255})
		}
	}
	return img
}

func maskLeftHalf(w, h int) *image.Gray {
	m := image.NewGray(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w/2; x++ {
			m.SetGray(x, y, color.Gray{Y: 255})
		}
	}
	return m
}

func pixelsOf(img image.Image) []byte {
	b := img.Bounds()
	out := make([]byte, 0, b.Dx()*b.Dy()*4)
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, a := img.At(x, y).RGBA()
			out = append(out, byte(r>>8), byte(g>>8), byte(bl>>8), byte(a>>8))
		}
	}
	return out
}

// meanAbsDiff compares two same-size images channel by channel (0..255).
func meanAbsDiff(a, b image.Image) float64 {
	pa, pb := pixelsOf(a), pixelsOf(b)
	var sum float64
	for i := range pa {
		d := int(pa[i]) - int(pb[i])
		if d < 0 {
			d = -d
		}
		sum += float64(d)
	}
	return sum / float64(len(pa))
}

// Same seed, same pixels; another seed, other pixels. The model's memory is
// what the library allocated (about 175 MB), not the file's 40 MB; loading
// shows as loading, then exactly the steps as generation; the second job
// does not load the model again.
func TestRealSeedsResidentProgressWarm(t *testing.T) {
	e, model := realEngine(t)
	seed := uint64(7)
	p := engine.ImageParams{Prompt: "a red barn", Width: 64, Height: 64, Steps: 2, Seed: &seed, Ext: "png"}
	var mu sync.Mutex
	var seen []engine.Progress
	progress := func(pr engine.Progress) { mu.Lock(); seen = append(seen, pr); mu.Unlock() }
	if err := e.Release(); err != nil { // start cold, whatever ran before
		t.Fatal(err)
	}
	a, err := e.Run(context.Background(), modelJob("seed-a", model, p), progress)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	var loads, gens int
	for i, pr := range seen {
		switch pr.Phase {
		case engine.PhaseLoad:
			loads++
			if gens > 0 {
				t.Errorf("load progress after generation began: %+v", seen)
			}
		case engine.PhaseGenerate:
			gens++
			if pr.Total != 2 || pr.Done > 2 || (i > 0 && pr.Done < seen[i-1].Done && seen[i-1].Phase == engine.PhaseGenerate) {
				t.Errorf("generation progress is not the 2 steps: %+v", seen)
			}
		}
	}
	last := seen[len(seen)-1]
	mu.Unlock()
	if loads == 0 || gens == 0 || last.Phase != engine.PhaseGenerate || last.Done != 2 {
		t.Fatalf("progress %+v", seen)
	}
	fi, err := os.Stat(model)
	if err != nil {
		t.Fatal(err)
	}
	if r := e.ResidentVRAMBytes(); r < uint64(fi.Size())*3 || r > 400<<20 {
		t.Fatalf("resident %d bytes for a %d-byte file: not what the library allocates", r, fi.Size())
	}

	seen = nil
	b, err := e.Run(context.Background(), modelJob("seed-b", model, p), progress)
	if err != nil {
		t.Fatal(err)
	}
	for _, pr := range seen {
		if pr.Phase == engine.PhaseLoad {
			t.Fatalf("the second job loaded the model again: %+v", seen)
		}
	}
	if !bytes.Equal(pixelsOf(decodePNG(t, a.Bytes)), pixelsOf(decodePNG(t, b.Bytes))) {
		t.Fatal("the same seed gave other pixels")
	}
	other := uint64(8)
	p.Seed = &other
	c, err := e.Run(context.Background(), modelJob("seed-c", model, p), nil)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(pixelsOf(decodePNG(t, a.Bytes)), pixelsOf(decodePNG(t, c.Bytes))) {
		t.Fatal("another seed gave the same pixels")
	}
}

// A size the model would round up (SDXS: multiples of 64) is refused with
// the reason, never delivered at another size; the engine keeps serving.
func TestRealRoundedSizeRefused(t *testing.T) {
	e, model := realEngine(t)
	_, err := e.Run(context.Background(), modelJob("odd", model, engine.ImageParams{Prompt: "p", Width: 72, Height: 64, Steps: 1}), nil)
	if err == nil || engine.IsRetryable(err) || !strings.Contains(err.Error(), "multiples of 64") || !strings.Contains(err.Error(), "128x64") {
		t.Fatalf("72x64: %v", err)
	}
	if _, err := e.Run(context.Background(), modelJob("after", model, engine.ImageParams{Prompt: "p", Width: 64, Height: 64, Steps: 1}), nil); err != nil {
		t.Fatalf("the engine did not recover: %v", err)
	}
}

// Each input reaches the real pipeline: with the same seed, another init
// image, another denoise, a mask, another mask each give other pixels.
// (Random weights cannot show that an image "looks like" its input: their
// autoencoder reconstructs nothing.) A reference edit runs and makes an
// image, but an SD-family model such as this one ignores the reference:
// stable-diffusion.cpp uses reference images only with edit models (Flux
// Kontext, Qwen-Image-Edit); TestLibraryImgGenParamsLayout shows that the
// library receives it.
func TestRealImg2ImgInpaintRef(t *testing.T) {
	e, model := realEngine(t)
	a, b := gradient(64, 64), gradient(64, 64)
	for y := 0; y < 64; y++ {
		for x := 0; x < 64; x++ {
			b.Pix[b.PixOffset(x, y)+1] = 220 // another green
		}
	}
	right := image.NewGray(image.Rect(0, 0, 64, 64))
	for y := 0; y < 64; y++ {
		for x := 32; x < 64; x++ {
			right.SetGray(x, y, color.Gray{Y: 255})
		}
	}
	base := imageServer(t, map[string][]byte{
		"a.png":     encodePNG(t, a),
		"b.png":     encodePNG(t, b),
		"left.png":  encodePNG(t, maskLeftHalf(64, 64)),
		"right.png": encodePNG(t, right),
	})
	seed := uint64(3)
	run := func(id string, p engine.ImageParams) []byte {
		t.Helper()
		p.Prompt, p.Steps, p.Seed, p.Ext = "a painting", 4, &seed, "png"
		res, err := e.Run(context.Background(), modelJob(id, model, p), nil)
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		img := decodePNG(t, res.Bytes)
		if bd := img.Bounds(); bd.Dx() != 64 || bd.Dy() != 64 {
			t.Fatalf("%s: %v", id, bd)
		}
		if n, _ := pixelSpread(img); n < 100 {
			t.Fatalf("%s: a flat image (%d colours)", id, n)
		}
		return pixelsOf(img)
	}
	outs := map[string][]byte{
		"txt2img":         run("t2i", engine.ImageParams{Width: 64, Height: 64}),
		"img2img a 0.5":   run("i2i-a", engine.ImageParams{InitImageURL: base + "a.png", Denoise: f64(0.5)}),
		"img2img b 0.5":   run("i2i-b", engine.ImageParams{InitImageURL: base + "b.png", Denoise: f64(0.5)}),
		"img2img a 1":     run("i2i-a1", engine.ImageParams{InitImageURL: base + "a.png", Denoise: f64(1)}),
		"inpaint a left":  run("inp-l", engine.ImageParams{InitImageURL: base + "a.png", MaskURL: base + "left.png", Denoise: f64(0.5)}),
		"inpaint a right": run("inp-r", engine.ImageParams{InitImageURL: base + "a.png", MaskURL: base + "right.png", Denoise: f64(0.5)}),
	}
	run("ref", engine.ImageParams{RefImageURL: base + "b.png", Width: 64, Height: 64})
	for n1, p1 := range outs {
		for n2, p2 := range outs {
			if n1 < n2 && bytes.Equal(p1, p2) {
				t.Errorf("%s and %s gave the same pixels", n1, n2)
			}
		}
	}
}

// A cancel while the image is sampled stops it within one sampling step,
// and the model stays loaded for the next job.
func TestRealCancelWithinOneStep(t *testing.T) {
	e, model := realEngine(t)
	seed := uint64(1)
	if _, err := e.Run(context.Background(), modelJob("warm", model, engine.ImageParams{Prompt: "p", Width: 64, Height: 64, Steps: 1, Seed: &seed}), nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	cancelledAt, lastStep := int64(-1), int64(0)
	progress := func(p engine.Progress) {
		if p.Phase != engine.PhaseGenerate {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		lastStep = max(lastStep, p.Done)
		if p.Done >= 2 && cancelledAt < 0 {
			cancelledAt = p.Done
			cancel()
		}
	}
	_, err := e.Run(ctx, modelJob("cancel", model, engine.ImageParams{Prompt: "p", Width: 64, Height: 64, Steps: 40, Seed: &seed}), progress)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled job returned %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if cancelledAt < 0 || lastStep > cancelledAt+1 {
		t.Fatalf("cancelled at step %d, sampling went on to step %d of 40", cancelledAt, lastStep)
	}
	loads := 0
	if _, err := e.Run(context.Background(), modelJob("after", model, engine.ImageParams{Prompt: "p", Width: 64, Height: 64, Steps: 1}),
		func(p engine.Progress) {
			if p.Phase == engine.PhaseLoad {
				loads++
			}
		}); err != nil || loads != 0 {
		t.Fatalf("after a cancel: %v, %d load events", err, loads)
	}
}

// pngHeader is a PNG whose header claims w×h pixels (and holds none).
func pngHeader(t *testing.T, w, h uint32) []byte {
	t.Helper()
	b := encodePNG(t, image.NewGray(image.Rect(0, 0, 1, 1)))
	ihdr := b[8+8 : 8+8+13] // after the signature and the chunk's length and type
	binary.BigEndian.PutUint32(ihdr[0:], w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	binary.BigEndian.PutUint32(b[8+8+13:], crc32.ChecksumIEEE(b[8+4:8+8+13]))
	return b
}

// Bad input from the list: each fails the job with a clear,
// not-retryable error naming what was wrong, and the engine keeps serving.
func TestRealBadInputs(t *testing.T) {
	e, model := realEngine(t)
	data, err := os.ReadFile(model)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	truncated := filepath.Join(dir, "truncated.gguf")
	if err := os.WriteFile(truncated, data[:len(data)*2/3], 0o600); err != nil {
		t.Fatal(err)
	}
	moreTensors := filepath.Join(dir, "more-tensors.gguf")
	forged := append([]byte(nil), data...)
	binary.LittleEndian.PutUint64(forged[8:], binary.LittleEndian.Uint64(forged[8:])+5) // the tensor count
	if err := os.WriteFile(moreTensors, forged, 0o600); err != nil {
		t.Fatal(err)
	}
	base := imageServer(t, map[string][]byte{
		"page.png":  []byte("<!DOCTYPE html><html><body>Sign in to continue</body></html>"),
		"huge.png":  pngHeader(t, 20000, 20000),
		"init.png":  encodePNG(t, gradient(64, 64)),
		"mask.png":  encodePNG(t, maskLeftHalf(128, 64)),
		"trunc.png": encodePNG(t, gradient(64, 64))[:100],
	})
	ok := engine.ImageParams{Prompt: "p", Width: 64, Height: 64, Steps: 1}
	with := func(f func(p *engine.ImageParams)) engine.ImageParams { p := ok; f(&p); return p }
	cases := []struct {
		name  string
		model string
		p     engine.ImageParams
		words []string
	}{
		{"truncated model", truncated, ok, []string{"truncated.gguf", "malformed", "run past the end"}},
		{"header claims more tensors", moreTensors, ok, []string{"more-tensors.gguf", "malformed"}},
		{"init image is an HTML page", model, with(func(p *engine.ImageParams) { p.InitImageURL = base + "page.png" }),
			[]string{"initImageUrl", "not an image", "web page (HTML)"}},
		{"init image of 20000x20000", model, with(func(p *engine.ImageParams) { p.InitImageURL = base + "huge.png" }),
			[]string{"initImageUrl", "20000x20000", "at most"}},
		{"damaged init image", model, with(func(p *engine.ImageParams) { p.InitImageURL = base + "trunc.png" }),
			[]string{"initImageUrl", "damaged PNG"}},
		{"init image not found", model, with(func(p *engine.ImageParams) { p.InitImageURL = base + "gone.png" }),
			[]string{"initImageUrl", "404"}},
		{"mask of another size", model, with(func(p *engine.ImageParams) { p.InitImageURL, p.MaskURL = base+"init.png", base+"mask.png" }),
			[]string{"maskUrl", "128x64", "64x64", "same size"}},
		{"negative height", model, with(func(p *engine.ImageParams) { p.Width, p.Height = 64, -64 }), []string{"height", "outside"}},
		{"width above the cap", model, with(func(p *engine.ImageParams) { p.Width = 8192 }), []string{"width", "outside"}},
		{"1000 steps", model, with(func(p *engine.ImageParams) { p.Steps = 1000 }), []string{"steps", "1000 steps"}},
		{"empty prompt", model, with(func(p *engine.ImageParams) { p.Prompt = " " }), []string{"prompt", "empty"}},
	}
	for _, c := range cases {
		_, err := e.Run(context.Background(), modelJob("bad", c.model, c.p), nil)
		if err == nil {
			t.Errorf("%s: accepted", c.name)
			continue
		}
		if engine.IsRetryable(err) {
			t.Errorf("%s: would be retried: %v", c.name, err)
		}
		for _, w := range c.words {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q lacks %q", c.name, err, w)
			}
		}
		t.Logf("%s: %v", c.name, err)
	}
	var mf *engine.ModelFileError
	if _, err := e.Run(context.Background(), modelJob("bad", truncated, ok), nil); !errors.As(err, &mf) || mf.Path != truncated {
		t.Errorf("a model that does not load is not reported as a bad model file (so the runner keeps it): %v", err)
	}
	if _, err := e.Run(context.Background(), modelJob("good", model, ok), nil); err != nil {
		t.Fatalf("the engine did not recover: %v", err)
	}
}

// The library itself, handed a truncated model (the Go check bypassed),
// fails the load cleanly because the engine asks it to read every weight
// at load time (eager_load), instead of aborting at the first generation.
func TestRealEagerLoadRefusesTruncated(t *testing.T) {
	e, model := realEngine(t)
	data, err := os.ReadFile(model)
	if err != nil {
		t.Fatal(err)
	}
	truncated := filepath.Join(t.TempDir(), "truncated.gguf")
	if err := os.WriteFile(truncated, data[:len(data)*2/3], 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.Release(); err != nil {
		t.Fatal(err)
	}
	runSlot <- struct{}{}
	defer func() { <-runSlot }()
	sink := &jobSink{ctx: context.Background(), log: slog.New(slog.DiscardHandler)}
	activeSink.Store(sink)
	defer activeSink.CompareAndSwap(sink, nil)
	h, err := e.lib.newContext(ctxSpec{ModelPath: truncated, Threads: 1})
	if err == nil {
		e.lib.freeContext(h)
		t.Fatal("the library loaded a truncated model")
	}
	if err := sink.explain(err); !strings.Contains(err.Error(), "read tensor data failed") {
		t.Fatalf("load error: %v", err)
	}
}
