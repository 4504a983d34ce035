package sd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"image"
	"image/png"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/gen2brain/webp"
	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/engine/gguf"
	"github.com/minisgg/studio-worker/internal/ccallback"
)

// fakeBackend stands in for the library. It drives the same package-level
// callback entry points (onLog, onProgress) the C library calls.
type fakeBackend struct {
	mu       sync.Mutex
	next     uintptr
	loaded   map[uintptr]ctxSpec
	loads    int
	frees    []uintptr
	gens     []genSpec
	cancels  int
	loadErr  error
	genErr   error
	started  chan struct{} // sent when generate starts (if non-nil)
	block    bool          // generate waits for a cancel call
	cancelCh chan struct{} // one send per cancel call
	// dropFirst makes the first cancel get lost, as it is in the library
	// when it lands just before generate_image clears the flag.
	dropFirst bool
	honored   bool
}

func newFake() *fakeBackend {
	return &fakeBackend{loaded: map[uintptr]ctxSpec{}, cancelCh: make(chan struct{}, 1)}
}

func (f *fakeBackend) newContext(s ctxSpec) (uintptr, error) {
	onLog(logInfo, cbytes("model_loader.cpp:42   - loading tensors\n"))
	onProgress(1, 2)
	onProgress(2, 2)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.loadErr != nil {
		onLog(logError, cbytes("model_loader.cpp:293  - failed to open '/m/x.gguf' with GGUFReader\n"))
		onLog(logError, cbytes("stable-diffusion.cpp:715  - init model loader from file failed\n"))
		return 0, f.loadErr
	}
	f.loads++
	f.next++
	f.loaded[f.next] = s
	return f.next, nil
}

func (f *fakeBackend) freeContext(h uintptr) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.frees = append(f.frees, h)
	delete(f.loaded, h)
}

func (f *fakeBackend) generate(h uintptr, s genSpec) (*image.NRGBA, error) {
	f.mu.Lock()
	_, ok := f.loaded[h]
	f.gens = append(f.gens, s)
	f.mu.Unlock()
	if !ok {
		return nil, errors.New("generate on a context that is not loaded")
	}
	if f.started != nil {
		f.started <- struct{}{}
	}
	if f.block {
		<-f.cancelCh
		onProgress(1, int32(s.Steps)) // the library's next step
		return nil, errors.New("cancelled")
	}
	for i := 1; i <= s.Steps; i++ {
		onProgress(int32(i), int32(s.Steps))
	}
	onLog(logWarn, cbytes("stable-diffusion.cpp:100 - a warning"))
	if f.genErr != nil {
		return nil, f.genErr
	}
	// A recognisable image: a horizontal red ramp.
	rgb := make([]byte, s.Width*s.Height*3)
	for y := 0; y < s.Height; y++ {
		for x := 0; x < s.Width; x++ {
			rgb[(y*s.Width+x)*3] = byte(x * 255 / (s.Width - 1))
		}
	}
	return toNRGBA(uint32(s.Width), uint32(s.Height), 3, &rgb[0])
}

func (f *fakeBackend) cancel(h uintptr) {
	f.mu.Lock()
	f.cancels++
	if !f.dropFirst || f.cancels > 1 {
		f.honored = true
	}
	f.mu.Unlock()
	select {
	case f.cancelCh <- struct{}{}:
	default:
	}
}

func cbytes(s string) *byte {
	b := append([]byte(s), 0)
	return &b[0]
}

// recorder is a slog handler that keeps records for assertions.
type recorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	r.recs = append(r.recs, rec.Clone())
	r.mu.Unlock()
	return nil
}
func (r *recorder) WithAttrs(as []slog.Attr) slog.Handler { return &withAttrs{r, as} }
func (r *recorder) WithGroup(string) slog.Handler         { return r }

type withAttrs struct {
	r  *recorder
	as []slog.Attr
}

func (w *withAttrs) Enabled(context.Context, slog.Level) bool { return true }
func (w *withAttrs) Handle(ctx context.Context, rec slog.Record) error {
	rec = rec.Clone()
	rec.AddAttrs(w.as...)
	return w.r.Handle(ctx, rec)
}
func (w *withAttrs) WithAttrs(as []slog.Attr) slog.Handler {
	return &withAttrs{w.r, append(append([]slog.Attr{}, w.as...), as...)}
}
func (w *withAttrs) WithGroup(string) slog.Handler { return w }

func (r *recorder) find(msg string) (slog.Record, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rec := range r.recs {
		if rec.Message == msg {
			return rec, true
		}
	}
	return slog.Record{}, false
}

func attr(rec slog.Record, key string) string {
	v := ""
	rec.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value.String()
			return false
		}
		return true
	})
	return v
}

func fakeEngine(t *testing.T, f *fakeBackend) (*Engine, *recorder) {
	t.Helper()
	rec := &recorder{}
	e := newEngine(Config{Threads: 1, Log: slog.New(rec)})
	e.b = f
	return e, rec
}

func modelFiles(t *testing.T, names ...string) map[engine.FileRole]string {
	t.Helper()
	dir := t.TempDir()
	files := map[engine.FileRole]string{}
	roles := []engine.FileRole{engine.RoleDiffusionModel, engine.RoleVAE, engine.RoleTextEncoder}
	for i, n := range names {
		p := filepath.Join(dir, n)
		if err := os.WriteFile(p, smallModelFile(t, n, 1000*(i+1)), 0o600); err != nil {
			t.Fatal(err)
		}
		files[roles[i]] = p
	}
	return files
}

// smallModelFile is a structurally sound file of exactly size bytes in the
// format its name says (GGUF with one F32 tensor, or safetensors), so that
// the engine's structure check passes it to the (fake) library.
func smallModelFile(t *testing.T, name string, size int) []byte {
	t.Helper()
	if strings.HasSuffix(name, ".safetensors") {
		head := `{"w":{"dtype":"U8","shape":[N],"data_offsets":[0,N]}}`
		for pad := 0; ; pad++ {
			h := strings.ReplaceAll(head, "N", strconv.Itoa(size-8-len(head)-pad)) + strings.Repeat(" ", pad)
			n := size - 8 - len(h)
			if n >= 0 && strings.Contains(h, "["+strconv.Itoa(n)+"]") {
				b := binary.LittleEndian.AppendUint64(nil, uint64(len(h)))
				return append(append(b, h...), make([]byte, n)...)
			}
		}
	}
	b := gguf.NewBuilder()
	b.String("general.name", "fake")
	b.Tensor("w", gguf.F32, []uint64{8}, func(n int, put func(float32)) error {
		for range n {
			put(1)
		}
		return nil
	})
	var buf bytes.Buffer
	if _, err := b.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	if buf.Len() > size {
		t.Fatalf("a GGUF of %d bytes does not fit in %d", buf.Len(), size)
	}
	// Trailing bytes after the last tensor are allowed padding.
	return append(buf.Bytes(), make([]byte, size-buf.Len())...)
}

func imageJob(id string, files map[engine.FileRole]string, p engine.ImageParams) engine.Job {
	return engine.Job{ID: id, Model: "test-model", Task: engine.Task{Kind: engine.KindImage, Image: &p},
		Source: engine.ModelSource{Engine: engine.EngineSDCpp}, Files: files}
}

func TestEngineWithoutLibrary(t *testing.T) {
	t.Setenv(EnvLib, "")
	rec := &recorder{}
	e := New(Config{Log: slog.New(rec)})
	if len(e.Kinds()) != 0 {
		t.Fatalf("kinds without a library: %v", e.Kinds())
	}
	if e.LoadError() == nil || !strings.Contains(e.LoadError().Error(), EnvLib) {
		t.Fatalf("load error should say how to configure: %v", e.LoadError())
	}
	if r, ok := rec.find("image engine off"); !ok || !strings.Contains(attr(r, "reason"), "sd_lib_path") {
		t.Fatal("the reason is not logged")
	}
	_, err := e.Run(context.Background(), imageJob("j", nil, engine.ImageParams{Prompt: "p"}), nil)
	if !engine.IsCannotServe(err) {
		t.Fatalf("run without library: %v", err)
	}
	if e.Name() != engine.EngineSDCpp || e.Release() != nil || e.ResidentVRAMBytes() != 0 {
		t.Fatal("idle engine misreports")
	}

	// A path that is not a library at all.
	bogus := filepath.Join(t.TempDir(), "libstable-diffusion.so")
	if err := os.WriteFile(bogus, []byte("not an ELF file"), 0o600); err != nil {
		t.Fatal(err)
	}
	e = New(Config{LibPath: bogus, Log: slog.New(rec)})
	if len(e.Kinds()) != 0 || e.LoadError() == nil || !strings.Contains(e.LoadError().Error(), bogus) {
		t.Fatalf("bogus library: kinds %v, err %v", e.Kinds(), e.LoadError())
	}
	t.Setenv(EnvLib, filepath.Join(t.TempDir(), "absent.so"))
	e = New(Config{Log: slog.New(rec)})
	if e.LoadError() == nil || !strings.Contains(e.LoadError().Error(), "absent.so") {
		t.Fatalf("absent library from env: %v", e.LoadError())
	}
}

func TestEngineRunProgressLogsAndWarmReuse(t *testing.T) {
	f := newFake()
	e, rec := fakeEngine(t, f)
	if got := e.Kinds(); len(got) != 1 || got[0] != engine.KindImage {
		t.Fatalf("kinds = %v", got)
	}
	files := modelFiles(t, "unet.gguf", "vae.safetensors")

	var mu sync.Mutex
	var seen []engine.Progress
	progress := func(p engine.Progress) { mu.Lock(); seen = append(seen, p); mu.Unlock() }

	res, err := e.Run(context.Background(), imageJob("job-1", files, engine.ImageParams{Prompt: "a cat", Width: 80, Height: 64, Steps: 3, Ext: "png"}), progress)
	if err != nil {
		t.Fatal(err)
	}
	if res.Ext != "png" || res.Stats.Images != 1 || res.JSON != nil {
		t.Fatalf("result %+v", res)
	}
	img, err := png.Decode(bytes.NewReader(res.Bytes))
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != 80 || b.Dy() != 64 {
		t.Fatalf("png is %v", b)
	}
	if r, _, _, _ := img.At(79, 0).RGBA(); r>>8 != 255 {
		t.Fatal("pixels were not carried into the png")
	}

	mu.Lock()
	var loads, gens []engine.Progress
	for _, p := range seen {
		switch p.Phase {
		case engine.PhaseLoad:
			loads = append(loads, p)
		case engine.PhaseGenerate:
			gens = append(gens, p)
		}
	}
	mu.Unlock()
	if len(loads) != 3 || loads[2].Done != 2 || loads[2].Total != 2 {
		t.Fatalf("load progress = %+v", loads)
	}
	if len(gens) != 4 || gens[3].Done != 3 || gens[3].Total != 3 {
		t.Fatalf("generate progress = %+v", gens)
	}

	r, ok := rec.find("loading tensors")
	if !ok || attr(r, "job") != "job-1" || attr(r, "src") != "model_loader.cpp:42" || r.Level != slog.LevelInfo {
		t.Fatalf("library log not routed to the job: %+v", r)
	}
	if r, ok := rec.find("a warning"); !ok || r.Level != slog.LevelWarn {
		t.Fatal("library warning not routed at warn level")
	}
	if r, ok := rec.find("image done"); !ok || attr(r, "seed") == "" {
		t.Fatal("the seed used is not reported")
	}
	if e.ResidentVRAMBytes() != 3000 {
		t.Fatalf("resident = %d, want the files' 3000 bytes", e.ResidentVRAMBytes())
	}

	// Same files: the context stays warm.
	if _, err := e.Run(context.Background(), imageJob("job-2", files, engine.ImageParams{Prompt: "a dog", Width: 64, Height: 64, Steps: 1}), nil); err != nil {
		t.Fatal(err)
	}
	if f.loads != 1 || len(f.frees) != 0 {
		t.Fatalf("warm reuse: %d loads, %d frees", f.loads, len(f.frees))
	}
	// Other files: the old context is freed first, then the new one loads.
	other := modelFiles(t, "other.gguf")
	if _, err := e.Run(context.Background(), imageJob("job-3", other, engine.ImageParams{Prompt: "x", Width: 64, Height: 64, Steps: 1, Ext: "png"}), nil); err != nil {
		t.Fatal(err)
	}
	if f.loads != 2 || len(f.frees) != 1 || f.frees[0] != 1 {
		t.Fatalf("switch: %d loads, frees %v", f.loads, f.frees)
	}
	if err := e.Release(); err != nil {
		t.Fatal(err)
	}
	if len(f.frees) != 2 || e.ResidentVRAMBytes() != 0 || len(f.loaded) != 0 {
		t.Fatalf("release: frees %v, resident %d", f.frees, e.ResidentVRAMBytes())
	}
	if activeSink.Load() != nil {
		t.Fatal("the callback registry still points at a finished job")
	}
}

func TestEngineWebPResult(t *testing.T) {
	f := newFake()
	e, _ := fakeEngine(t, f)
	files := modelFiles(t, "m.gguf")
	res, err := e.Run(context.Background(), imageJob("w", files, engine.ImageParams{Prompt: "p", Width: 96, Height: 64, Steps: 1}), nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Ext != "webp" || !bytes.HasPrefix(res.Bytes, []byte("RIFF")) || !bytes.Contains(res.Bytes[:16], []byte("WEBP")) {
		t.Fatalf("not a webp: ext %q, head %q", res.Ext, res.Bytes[:16])
	}
	img, err := webp.Decode(bytes.NewReader(res.Bytes))
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != 96 || b.Dy() != 64 {
		t.Fatalf("webp is %v", b)
	}
	// Lossy, but the ramp must survive: dark on the left, bright on the right.
	l, _, _, _ := img.At(2, 32).RGBA()
	r, _, _, _ := img.At(93, 32).RGBA()
	if l>>8 > 40 || r>>8 < 215 {
		t.Fatalf("ramp lost: left %d right %d", l>>8, r>>8)
	}
}

func TestEngineCancellation(t *testing.T) {
	f := newFake()
	f.block = true
	f.dropFirst = true
	f.started = make(chan struct{}, 1)
	e, _ := fakeEngine(t, f)
	files := modelFiles(t, "m.gguf")
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := e.Run(ctx, imageJob("c", files, engine.ImageParams{Prompt: "p", Width: 64, Height: 64, Steps: 5}), nil)
		errc <- err
	}()
	<-f.started
	cancel()
	err := <-errc
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "cancelled") {
		t.Fatalf("cancelled run returned %v", err)
	}
	f.mu.Lock()
	n, honored := f.cancels, f.honored
	f.mu.Unlock()
	if n < 2 || !honored {
		t.Fatalf("a lost cancel was not asked again at the next step: %d calls, honored %v", n, honored)
	}
	// The model stays warm for the next job.
	f.block = false
	if _, err := e.Run(context.Background(), imageJob("d", files, engine.ImageParams{Prompt: "p", Width: 64, Height: 64, Steps: 1}), nil); err != nil {
		t.Fatal(err)
	}
	if f.loads != 1 {
		t.Fatalf("%d loads, want the warm context reused after a cancel", f.loads)
	}

	// Cancelled before it starts: nothing runs.
	done, stop := context.WithCancel(context.Background())
	stop()
	before := len(f.gens)
	if _, err := e.Run(done, imageJob("e", files, engine.ImageParams{Prompt: "p"}), nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("pre-cancelled run: %v", err)
	}
	if len(f.gens) != before {
		t.Fatal("a cancelled job reached the library")
	}
}

func TestEngineErrors(t *testing.T) {
	f := newFake()
	e, _ := fakeEngine(t, f)
	files := modelFiles(t, "m.gguf")

	// Wrong kind.
	_, err := e.Run(context.Background(), engine.Job{Task: engine.Task{Kind: engine.KindLLM, LLM: &engine.LLMParams{}}}, nil)
	if !engine.IsCannotServe(err) {
		t.Fatalf("llm task: %v", err)
	}
	// An init image that cannot be had fails the job before anything loads.
	_, err = e.Run(context.Background(), imageJob("i", files, engine.ImageParams{Prompt: "p", InitImageURL: "http://example.invalid/y.png"}), nil)
	if err == nil || engine.IsRetryable(err) || !strings.Contains(err.Error(), "initImageUrl: ") || f.loads != 0 {
		t.Fatalf("img2img over plain http: %v (loads %d)", err, f.loads)
	}
	// A file the store said it had but that is gone.
	gone := map[engine.FileRole]string{engine.RoleModel: filepath.Join(t.TempDir(), "gone.gguf")}
	if _, err = e.Run(context.Background(), imageJob("g", gone, engine.ImageParams{Prompt: "p"}), nil); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("missing file: %v", err)
	}
	// The library fails to load the model, then to generate: plain errors,
	// and the engine keeps serving.
	f.loadErr = errors.New("stable-diffusion.cpp could not load the model")
	_, err = e.Run(context.Background(), imageJob("l", files, engine.ImageParams{Prompt: "p"}), nil)
	if err == nil || engine.IsCannotServe(err) || !strings.HasSuffix(err.Error(), "could not load the model: failed to open '/m/x.gguf' with GGUFReader") {
		t.Fatalf("load failure should carry the library's first error line: %v", err)
	}
	f.loadErr = nil
	f.genErr = errors.New("stable-diffusion.cpp made no image")
	if _, err = e.Run(context.Background(), imageJob("m", files, engine.ImageParams{Prompt: "p", Width: 64, Height: 64, Steps: 1}), nil); err == nil {
		t.Fatal("generate failure swallowed")
	}
	f.genErr = nil
	if _, err = e.Run(context.Background(), imageJob("n", files, engine.ImageParams{Prompt: "p", Width: 64, Height: 64, Steps: 1}), nil); err != nil {
		t.Fatalf("engine did not recover: %v", err)
	}
}

func TestToNRGBA(t *testing.T) {
	rgba := []byte{1, 2, 3, 4, 5, 6, 7, 8}
	img, err := toNRGBA(2, 1, 4, &rgba[0])
	if err != nil || !bytes.Equal(img.Pix, rgba) {
		t.Fatalf("rgba copy: %v %v", img, err)
	}
	rgb := []byte{9, 8, 7}
	if img, err = toNRGBA(1, 1, 3, &rgb[0]); err != nil || !bytes.Equal(img.Pix, []byte{9, 8, 7, 255}) {
		t.Fatalf("rgb: %v %v", img, err)
	}
	if _, err = toNRGBA(1, 1, 2, &rgb[0]); err == nil {
		t.Fatal("2 channels accepted")
	}
	if _, err = toNRGBA(1, 1, 3, nil); err == nil {
		t.Fatal("nil data accepted")
	}
}

func TestCallbacksWithoutJob(t *testing.T) {
	rec := &recorder{}
	prev := fallbackLog.Swap(slog.New(rec))
	defer fallbackLog.Store(prev)
	onProgress(1, 2) // no job: must simply be dropped
	onLog(logError, cbytes("util.cpp:7 - out of memory\n"))
	onLog(logDebug, nil)
	r, ok := rec.find("out of memory")
	if !ok || r.Level != slog.LevelError || attr(r, "src") != "util.cpp:7" {
		t.Fatalf("log without a job: %+v", r)
	}
}

func TestEncodeImageFormats(t *testing.T) {
	img := image.NewNRGBA(image.Rect(0, 0, 8, 8))
	if _, err := encodeImage(img, "gif"); err == nil {
		t.Fatal("gif accepted")
	}
	for _, ext := range []string{"png", "webp"} {
		b, err := encodeImage(img, ext)
		if err != nil || len(b) == 0 {
			t.Fatalf("%s: %v", ext, err)
		}
	}
}

// Every function handed to the library as a callback must be valid on each
// platform we ship, not only the one the test runs on (issue 15: a callback
// without a result panics on Windows).
func TestCallbacksValidOnEveryPlatform(t *testing.T) {
	for _, goos := range ccallback.Platforms {
		for name, fn := range map[string]any{"log": logCallback, "progress": progressCallback} {
			if err := ccallback.Check(fn, goos); err != nil {
				t.Errorf("%s callback on %s: %v", name, goos, err)
			}
		}
	}
}

// Issue 10, item 1: a NUL or invalid UTF-8 in a prompt never reaches the
// library; the job fails as not retryable, naming the field.
func TestEngineRefusesTextTheLibraryCannotTake(t *testing.T) {
	f := newFake()
	e, _ := fakeEngine(t, f)
	files := modelFiles(t, "m.gguf")
	for field, p := range map[string]engine.ImageParams{
		"prompt":         {Prompt: "a cat\x00 and more", Width: 64, Height: 64, Steps: 1},
		"negativePrompt": {Prompt: "a cat", NegativePrompt: "blur\xff", Width: 64, Height: 64, Steps: 1},
	} {
		_, err := e.Run(context.Background(), imageJob(field, files, p), nil)
		var je *engine.JobError
		if !errors.As(err, &je) || je.Field != field || engine.IsRetryable(err) {
			t.Fatalf("%s: want a not-retryable JobError naming it, got %v", field, err)
		}
	}
	if f.loads != 0 {
		t.Fatalf("the model was loaded %d times for refused jobs", f.loads)
	}
}
