package packs

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"image/png"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/engine/gguf"
	"github.com/minisgg/studio-worker/engine/host/hosted"
	"github.com/minisgg/studio-worker/engine/sd"
	"github.com/minisgg/studio-worker/release"
)

// lookingEngine stands in for an engine-host client: it serves images
// once its runtime is where the real lookup finds packs (the recorded
// pack), and reloads on demand.
type lookingEngine struct {
	mu      sync.Mutex
	kinds   []engine.TaskKind
	reloads int
	ran     []string
}

func (e *lookingEngine) Name() engine.EngineName { return engine.EngineSDCpp }
func (e *lookingEngine) Kinds() []engine.TaskKind {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.kinds)
}
func (e *lookingEngine) LoadError() error {
	if len(e.Kinds()) == 0 {
		return errors.New("stable-diffusion.cpp library not found")
	}
	return nil
}
func (e *lookingEngine) Reload(context.Context) error {
	e.mu.Lock()
	e.reloads++
	e.mu.Unlock()
	rec, err := engine.CurrentPack("", engine.RuntimeSD)
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(rec.Dir, sdLib())); err != nil {
		return err
	}
	e.mu.Lock()
	e.kinds = []engine.TaskKind{engine.KindImage}
	e.mu.Unlock()
	return nil
}
func (e *lookingEngine) Run(_ context.Context, job engine.Job, _ engine.ProgressFunc) (engine.Result, error) {
	if len(e.Kinds()) == 0 {
		return engine.Result{}, &engine.CannotServeError{Engine: "sdcpp", Kind: job.Task.Kind}
	}
	e.mu.Lock()
	e.ran = append(e.ran, job.ID)
	e.mu.Unlock()
	return engine.Result{Bytes: []byte("image"), Ext: "png"}, nil
}
func (e *lookingEngine) Release() error            { return nil }
func (e *lookingEngine) ResidentVRAMBytes() uint64 { return 0 }

// The image kind is offered only once the feed holds a pack for this
// computer; the first image job then waits while the runtime is fetched
// (its progress says so), and runs on it.
func TestOnDemandFetchesTheRuntimeForTheFirstJob(t *testing.T) {
	dataHome(t)
	fs := newFeedServer(t)
	pack := fs.addPack("sd", runtime.GOOS, runtime.GOARCH, "cpu", variant("cpu"), "m1", "tar.xz",
		tarXZ(t, []packFile{{name: sdLib(), body: bytes.Repeat([]byte{1}, 3<<20)}}))
	fs.publish([]release.Pack{pack}, nil)
	inner := &lookingEngine{}
	inst := NewInstaller(Config{FeedURL: fs.url(), Trusted: []ed25519.PublicKey{fs.pub}, Machine: thisMachine(false)})
	od := NewOnDemand(inner, inst, engine.RuntimeSD, []engine.TaskKind{engine.KindImage}, "the image runtime", nil)

	if k := od.Kinds(); len(k) != 0 {
		t.Fatalf("kinds %v before the feed was read", k)
	}
	if err := od.Probe(context.Background()); err != nil {
		t.Fatal(err)
	}
	if k := od.Kinds(); !slices.Equal(k, []engine.TaskKind{engine.KindImage}) {
		t.Fatalf("kinds %v once the feed has a pack", k)
	}
	var notes []engine.Progress
	res, err := od.Run(context.Background(), engine.Job{ID: "j1", Task: engine.Task{Kind: engine.KindImage}}, func(p engine.Progress) { notes = append(notes, p) })
	if err != nil || string(res.Bytes) != "image" {
		t.Fatalf("run: %v %v", res, err)
	}
	var download []string
	for _, p := range notes {
		if p.Phase == engine.PhaseRuntime {
			download = append(download, p.Note)
		}
	}
	if len(download) == 0 || !strings.HasPrefix(download[0], "downloading the image runtime (0 of ") {
		t.Errorf("download notes %q", download)
	}
	last := notes[len(notes)-1]
	if last.Phase != engine.PhaseLoad || last.Note != "starting the image runtime" {
		t.Errorf("last progress %+v", last)
	}
	if inner.reloads != 1 || !slices.Equal(inner.ran, []string{"j1"}) {
		t.Errorf("reloads %d, ran %v", inner.reloads, inner.ran)
	}
	// The second job finds the runtime in place.
	if _, err := od.Run(context.Background(), engine.Job{ID: "j2", Task: engine.Task{Kind: engine.KindImage}}, nil); err != nil || inner.reloads != 1 {
		t.Fatalf("second job: %v, %d reloads", err, inner.reloads)
	}
}

// A fetch that fails fails the job as retryable, saying why; a feed with
// no pack for this computer offers nothing.
func TestOnDemandFailures(t *testing.T) {
	dataHome(t)
	fs := newFeedServer(t)
	p := fs.addPack("sd", runtime.GOOS, runtime.GOARCH, "cpu", variant("cpu"), "m1", "tar.xz", tarXZ(t, []packFile{{name: sdLib(), body: []byte("lib")}}))
	p.SHA256 = strings.Repeat("0", 64)
	fs.publish([]release.Pack{p}, nil)
	inner := &lookingEngine{}
	inst := NewInstaller(Config{FeedURL: fs.url(), Trusted: []ed25519.PublicKey{fs.pub}, Machine: thisMachine(false)})
	od := NewOnDemand(inner, inst, engine.RuntimeSD, []engine.TaskKind{engine.KindImage}, "the image runtime", nil)
	if err := od.Probe(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, err := od.Run(context.Background(), engine.Job{ID: "j1", Task: engine.Task{Kind: engine.KindImage}}, nil)
	var fe *FetchError
	if !errors.As(err, &fe) || !engine.IsRetryable(err) || !errors.Is(err, release.ErrSHA256Mismatch) ||
		!strings.HasPrefix(err.Error(), "the image runtime could not be fetched: the stable-diffusion.cpp runtime pack") {
		t.Fatalf("err = %v, want a retryable FetchError naming the sha256", err)
	}
	if len(inner.ran) != 0 || inner.reloads != 0 {
		t.Errorf("the engine ran (%v) or reloaded (%d)", inner.ran, inner.reloads)
	}

	other := "windows"
	if runtime.GOOS == "windows" {
		other = "linux"
	}
	fs.publish([]release.Pack{fs.addPack("sd", other, "amd64", "cpu", "x", "m1", "zip", zipOf(t, []packFile{{name: "a", body: []byte("b")}}))}, nil)
	if err := od.Probe(context.Background()); !errors.Is(err, ErrNoPack) {
		t.Fatalf("probe: %v", err)
	}
	if k := od.Kinds(); len(k) != 0 {
		t.Errorf("kinds %v with no pack for this computer", k)
	}
	if _, err := od.Run(context.Background(), engine.Job{ID: "j2", Task: engine.Task{Kind: engine.KindImage}}, nil); !engine.IsCannotServe(err) {
		t.Errorf("run without a pack: %v, want cannot serve", err)
	}
}

// sdRuntime is the real stable-diffusion.cpp library `make runtime`
// installs (from ../shared/runtimes/sd).
func sdRuntime(t *testing.T) string {
	t.Helper()
	p := os.Getenv(sd.EnvLib)
	if p == "" {
		p, _ = filepath.Abs(filepath.Join("..", "..", "runtime", "sd", engine.PlatformVariant(), sd.LibFile()))
	}
	if st, err := os.Stat(p); err == nil && st.IsDir() {
		p = filepath.Join(p, sd.LibFile())
	}
	if _, err := os.Stat(p); err != nil {
		t.Skipf("needs %s (stable-diffusion.cpp %s): run `make runtime` (%v)", sd.LibFile(), sd.PinnedVersion, err)
	}
	return p
}

// End to end with the real library: an image engine-host child with no
// stable-diffusion.cpp anywhere serves nothing; the feed on loopback has
// the real library as a pack; the first image job fetches it (sha256
// checked, unpacked, tried in a child), reloads the child, which finds the
// pack in the data folder, and makes a real 64x64 one-step image.
func TestOnDemandRealImageJob(t *testing.T) {
	lib := sdRuntime(t)
	body, err := os.ReadFile(lib)
	if err != nil {
		t.Fatal(err)
	}
	model, err := gguf.EnsureSDXS(gguf.TinySDXS())
	if err != nil {
		t.Fatal(err)
	}
	root := dataHome(t)
	t.Setenv(sd.EnvLib, "")
	fs := newFeedServer(t)
	pack := fs.addPack("sd", runtime.GOOS, runtime.GOARCH, "cpu", variant("cpu"), sd.PinnedVersion, "zip", zipOf(t, []packFile{{name: sd.LibFile(), body: body}}))
	fs.publish([]release.Pack{pack}, nil)

	logs := &logLines{}
	child := hosted.Client(hosted.SD, hosted.Options{Exe: os.Args[0], Threads: 1, Log: slog.New(logs), KeepAlive: -1})
	t.Cleanup(func() { child.Close() })
	if child.LoadError() == nil {
		t.Fatalf("the child found a library before the pack was fetched: %s", child.Hello().Runtime)
	}
	inst := NewInstaller(Config{FeedURL: fs.url(), Trusted: []ed25519.PublicKey{fs.pub}, Machine: thisMachine(false),
		Check: hosted.CheckPack(os.Args[0]), Log: slog.New(logs)})
	od := NewOnDemand(child, inst, engine.RuntimeSD, []engine.TaskKind{engine.KindImage}, "the image runtime", slog.New(logs))
	if err := od.Probe(context.Background()); err != nil {
		t.Fatal(err)
	}
	seed := uint64(7)
	job := engine.Job{ID: "first-image", Model: "tiny-sdxs",
		Task:   engine.Task{Kind: engine.KindImage, Image: &engine.ImageParams{Prompt: "a lighthouse", Width: 64, Height: 64, Steps: 1, Seed: &seed, Ext: "png"}},
		Source: engine.ModelSource{Engine: engine.EngineSDCpp},
		Files:  map[engine.FileRole]string{engine.RoleModel: model}}
	var maxDone int64
	res, err := od.Run(context.Background(), job, func(p engine.Progress) {
		if p.Phase == engine.PhaseRuntime {
			maxDone = max(maxDone, p.Done)
		}
	})
	if err != nil {
		t.Fatalf("%v\nlog:\n%s", err, logs)
	}
	img, err := png.Decode(bytes.NewReader(res.Bytes))
	if err != nil || img.Bounds().Dx() != 64 || img.Bounds().Dy() != 64 {
		t.Fatalf("not a 64x64 PNG: %v", err)
	}
	if maxDone != pack.Size {
		t.Errorf("download progress reached %d of %d bytes", maxDone, pack.Size)
	}
	want := filepath.Join(root, "sd", variant("cpu"), sd.PinnedVersion, sd.LibFile())
	if rt := child.Hello().Runtime; !strings.Contains(rt, want) {
		t.Errorf("the child runs %q, want the pack's %s", rt, want)
	}
}
