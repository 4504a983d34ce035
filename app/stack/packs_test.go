package stack

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/adrg/xdg"

	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/engine/host/hosted"
	"github.com/minisgg/studio-worker/engine/llama"
	"github.com/minisgg/studio-worker/engine/packs"
	"github.com/minisgg/studio-worker/engine/sd"
	"github.com/minisgg/studio-worker/release"
)

func TestMain(m *testing.M) {
	// This test binary stands in for studio-worker as the engine-host
	// child where a test runs the real engines (Options.EngineExe).
	hosted.RunChildIfAsked()
	os.Exit(m.Run())
}

// packFeed serves, on loopback, a feed signed with its own key that lists
// one stable-diffusion.cpp pack for this platform made from lib.
func packFeed(t *testing.T, lib string) (url string, key ed25519.PublicKey) {
	t.Helper()
	body, err := os.ReadFile(lib)
	if err != nil {
		t.Fatal(err)
	}
	var zbuf bytes.Buffer
	zw := zip.NewWriter(&zbuf)
	w, _ := zw.CreateHeader(&zip.FileHeader{Name: sd.LibFile(), Method: zip.Store})
	w.Write(body)
	zw.Close()
	archive := zbuf.Bytes()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	var feed []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/feed.json":
			w.Write(feed)
		case "/sd.zip":
			w.Write(archive)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	sum := sha256.Sum256(archive)
	feed, err = release.Sign(&release.Manifest{Schema: release.SchemaVersion, Generated: time.Now().UTC(), Packs: []release.Pack{{
		Runtime: "sd", Version: sd.PinnedVersion, OS: runtime.GOOS, Arch: runtime.GOARCH, Backend: "cpu",
		Variant: engine.PlatformVariant(), Format: "zip",
		Artifact: release.Artifact{URL: srv.URL + "/sd.zip", Size: int64(len(archive)), SHA256: hex.EncodeToString(sum[:])}}}}, priv)
	if err != nil {
		t.Fatal(err)
	}
	return srv.URL + "/feed.json", pub
}

// The whole worker with its real engine children and no
// stable-diffusion.cpp installed: it reads the feed at start and offers
// image jobs again; the first image job from the studio waits while the
// runtime is fetched (the worker's snapshot says so), then comes back as a
// real 64x64 image made by the fetched pack.
func TestStackFetchesTheImageRuntimeForItsFirstJob(t *testing.T) {
	lib := os.Getenv(sd.EnvLib)
	if lib == "" {
		lib, _ = filepath.Abs(filepath.Join("..", "..", "runtime", "sd", engine.PlatformVariant(), sd.LibFile()))
	}
	if st, err := os.Stat(lib); err == nil && st.IsDir() {
		lib = filepath.Join(lib, sd.LibFile())
	}
	if _, err := os.Stat(lib); err != nil {
		t.Skipf("needs %s (stable-diffusion.cpp %s): run `make runtime` (%v)", sd.LibFile(), sd.PinnedVersion, err)
	}
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	xdg.Reload()
	t.Cleanup(xdg.Reload)
	t.Setenv(sd.EnvLib, "")
	t.Setenv(llama.LibEnv, "")
	url, key := packFeed(t, lib)

	opts := testOptions(t)
	opts.Engines = nil
	opts.EngineExe = os.Args[0]
	opts.DevStudio = true
	opts.RegisterPoll = 20 * time.Millisecond
	opts.FeedURL, opts.FeedKeys = url, []ed25519.PublicKey{key}
	st, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(st.Runner.Kinds(), engine.KindImage) {
		t.Fatal("image jobs offered before the feed was read")
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() {
		cancel()
		st.Shutdown(10 * time.Second)
	})
	var notes []string
	seen := make(chan struct{})
	go func() {
		defer close(seen)
		ch, stop := st.Worker.Subscribe()
		defer stop()
		for s := range ch {
			if s.Current != nil && strings.HasPrefix(s.Current.Note, "downloading the image runtime") && !slices.Contains(notes, s.Current.Note) {
				notes = append(notes, s.Current.Note)
			}
			if s.Current == nil && len(notes) > 0 {
				return
			}
		}
	}()
	st.Start(ctx)
	<-st.packsProbed
	if !slices.Contains(st.Runner.Kinds(), engine.KindImage) {
		t.Fatalf("image jobs not offered with a pack in the feed: %v", st.Runner.Kinds())
	}
	q, err := st.Dev.EnqueueImageDemoJobs(1, st.Runner.Kinds())
	if err != nil {
		t.Fatal(err)
	}
	js := waitJob(t, st, q.IDs[0])
	img := resultImage(t, st, js)
	if b := img.Bounds(); b.Dx() != DemoImageSide || b.Dy() != DemoImageSide {
		t.Fatalf("image %v, want %dx%d", b, DemoImageSide, DemoImageSide)
	}
	<-seen
	if len(notes) == 0 {
		t.Error("the job's progress never said the image runtime was downloading")
	}
	t.Logf("progress notes: %q", notes)
	rec, err := engine.CurrentPack("", engine.RuntimeSD)
	if err != nil || !strings.Contains(st.Image.Hello().Runtime, rec.Dir) {
		t.Errorf("the image engine runs %q, want the pack %+v (%v)", st.Image.Hello().Runtime, rec, err)
	}
}

// A GPU pack joins only a CPU build installed with the program, and only
// on a computer with a GPU a pack could use.
func TestGPUPackWanted(t *testing.T) {
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	xdg.Reload()
	t.Cleanup(xdg.Reload)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if real, err := filepath.EvalSymlinks(exe); err == nil {
		exe = real
	}
	beside := filepath.Join(filepath.Dir(exe), "lib")
	cpu := llama.RuntimeInfo{Accel: llama.AccelCPU}
	vulkan := packs.Machine{OS: runtime.GOOS, Arch: runtime.GOARCH, VulkanLoader: true}
	for _, c := range []struct {
		name string
		dir  string
		info llama.RuntimeInfo
		m    packs.Machine
		want bool
	}{
		{"CPU build beside the program, Vulkan loader", beside, cpu, vulkan, true},
		{"CPU build beside the program, NVIDIA driver", beside, cpu, packs.Machine{NVIDIADriver: "580.95.05"}, true},
		{"CPU build beside the program, no GPU", beside, cpu, packs.Machine{}, false},
		{"a GPU build beside the program", beside, llama.RuntimeInfo{Accel: llama.AccelVulkan}, vulkan, false},
		{"a folder the donor chose", t.TempDir(), cpu, vulkan, false},
	} {
		if got := gpuPackWanted(c.dir, c.info, c.m); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// With a runtime missing and no release feed to reach, the worker says in
// a notice that those jobs stay off and why, in words (the first-run
// notice had said the first job would fetch what is missing).
func TestStackSaysWhenTheFeedCannotBeReached(t *testing.T) {
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	xdg.Reload()
	t.Cleanup(xdg.Reload)
	t.Setenv(sd.EnvLib, "")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	feed := "http://" + l.Addr().String() + "/feed.json"
	l.Close() // nothing listens there now
	pub, _, _ := ed25519.GenerateKey(rand.Reader)

	opts := testOptions(t)
	opts.Engines = nil
	opts.EngineExe = os.Args[0]
	opts.FeedURL, opts.FeedKeys = feed, []ed25519.PublicKey{pub}
	st, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if !st.imagePack.Missing() {
		t.Skip("a stable-diffusion.cpp runtime was found without " + sd.EnvLib + "; this test needs one missing")
	}
	notices := make(chan string, 8)
	st.OnNotice(func(n string) { notices <- n })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() {
		cancel()
		st.Shutdown(10 * time.Second)
	})
	st.Start(ctx)
	<-st.packsProbed
	for {
		select {
		case n := <-notices:
			if !strings.Contains(n, "stay off") {
				continue
			}
			if !strings.Contains(n, "mage jobs stay off") || !strings.Contains(n, "the release feed cannot be reached: 127.0.0.1 refused the connection.") || strings.Contains(n, "dial tcp") {
				t.Fatalf("notice %q", n)
			}
			// The log's warning names the engine in words, without
			// Go's error (kept at debug level).
			warned := false
			for _, e := range st.Logger.Ring().Entries() {
				if e.Op != "packs" || e.Level != slog.LevelWarn {
					continue
				}
				warned = true
				named := strings.HasPrefix(e.Message, "the image engine (stable-diffusion.cpp) is off") || strings.HasPrefix(e.Message, "the text engine (llama.cpp) is off")
				if !named || !strings.Contains(e.Message, "127.0.0.1 refused the connection") ||
					strings.Contains(e.Message, "dial tcp") || strings.Contains(e.Message, "sd-cpp") || strings.Contains(e.Message, "llama-cpp") {
					t.Errorf("warning %q", e.Message)
				}
			}
			if !warned {
				t.Error("no packs warning in the log")
			}
			return
		default:
			t.Fatalf("no notice says the missing runtime cannot be fetched; start notices: %q", st.Notices)
		}
	}
}
