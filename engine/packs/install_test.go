package packs

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/engine/host/hosted"
	"github.com/minisgg/studio-worker/engine/llama"
	"github.com/minisgg/studio-worker/release"
)

// checkChildEnv makes this test binary the `runtime-check` child that
// llama.ChildChecker starts (the real program's hidden command).
const checkChildEnv = "STUDIO_WORKER_PACKS_TEST_CHECK"

func TestMain(m *testing.M) {
	hosted.RunChildIfAsked()
	if os.Getenv(checkChildEnv) == "1" && len(os.Args) >= 3 && os.Args[1] == "runtime-check" {
		os.Exit(llama.RuntimeCheckMain(os.Args[2:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// variant names a pack for this platform as the feed does.
func variant(backend string) string {
	if backend == "cpu" {
		return engine.PlatformVariant()
	}
	return engine.PlatformVariant() + "-" + backend
}

func sdLib() string {
	switch runtime.GOOS {
	case "windows":
		return "libstable-diffusion.dll"
	case "darwin":
		return "libstable-diffusion.dylib"
	}
	return "libstable-diffusion.so"
}

// The best pack this machine can run is downloaded with progress, checked
// in a child (stood in for here), unpacked into the data folder and
// recorded; a second Ensure uses it without a download, and no pack for
// another OS or a lesser backend is ever fetched.
func TestEnsureInstallsTheBestPack(t *testing.T) {
	root := dataHome(t)
	fs := newFeedServer(t)
	cpu := fs.addPack("sd", runtime.GOOS, runtime.GOARCH, "cpu", variant("cpu"), "master-1", "tar.xz",
		tarXZ(t, []packFile{{name: sdLib(), body: []byte("cpu build")}}))
	vk := fs.addPack("sd", runtime.GOOS, runtime.GOARCH, "vulkan", variant("vulkan"), "master-1", "tar.xz",
		tarXZ(t, []packFile{{name: "libstable-diffusion.vulkan.so", body: []byte("vulkan build")}, {name: sdLib(), link: "libstable-diffusion.vulkan.so"}}))
	other := fs.addPack("sd", "plan9", "amd64", "vulkan", "plan9-x64-vulkan", "master-1", "tar.xz", []byte("never fetched"))
	fs.publish([]release.Pack{other, cpu, vk}, nil)

	var checked []string
	logs := &logLines{}
	inst := NewInstaller(Config{FeedURL: fs.url(), Trusted: []ed25519.PublicKey{fs.pub}, Machine: thisMachine(true), Log: slog.New(logs),
		Check: func(_ context.Context, rt, dir string) error {
			checked = append(checked, rt+" "+dir)
			return nil
		}})
	var seen []Progress
	rec, err := inst.Ensure(context.Background(), "sd", Options{}, func(p Progress) { seen = append(seen, p) })
	if err != nil {
		t.Fatal(err)
	}
	wantDir := filepath.Join(root, "sd", variant("vulkan"), "master-1")
	if rec.Backend != "vulkan" || rec.Dir != wantDir || rec.Problem != "" {
		t.Fatalf("record %+v, want the Vulkan pack in %s", rec, wantDir)
	}
	if b, err := os.ReadFile(filepath.Join(rec.Dir, sdLib())); err != nil || string(b) != "vulkan build" {
		t.Fatalf("the unpacked library (through its link): %q %v", b, err)
	}
	if !slices.Equal(checked, []string{"sd " + wantDir}) {
		t.Errorf("checked %q, want the Vulkan pack once", checked)
	}
	if len(seen) < 2 || seen[0].Done != 0 || seen[len(seen)-1].Done != vk.Size || seen[len(seen)-1].Total != vk.Size {
		t.Fatalf("progress %+v, want 0 to %d of %d", seen, vk.Size, vk.Size)
	}
	for i := 1; i < len(seen); i++ {
		if seen[i].Done < seen[i-1].Done || seen[i].Pack.Variant != vk.Variant {
			t.Fatalf("progress goes back or names another pack: %+v", seen)
		}
	}
	if got, err := engine.CurrentPack("", "sd"); err != nil || got != rec {
		t.Fatalf("current pack %+v %v, want %+v", got, err, rec)
	}
	if !strings.Contains(logs.String(), "using the Vulkan runtime pack "+variant("vulkan")+" master-1 fetched for this computer") {
		t.Errorf("log lacks the pack in use:\n%s", logs)
	}

	again, err := inst.Ensure(context.Background(), "sd", Options{}, nil)
	if err != nil || again != rec {
		t.Fatalf("second Ensure: %+v %v", again, err)
	}
	vkPath := strings.TrimPrefix(vk.URL, fs.srv.URL)
	if n := fs.hitsOf(vkPath); n != 1 {
		t.Errorf("the Vulkan pack was downloaded %d times, want once", n)
	}
	for _, p := range []release.Pack{cpu, other} {
		if n := fs.hitsOf(strings.TrimPrefix(p.URL, fs.srv.URL)); n != 0 {
			t.Errorf("%s was downloaded %d times, want never", p.Variant, n)
		}
	}
	pack := filepath.Join("sd", variant("vulkan"), "master-1")
	want := []string{filepath.Join("sd", "current.json"), filepath.Join(pack, ".studio-worker-pack.json"),
		filepath.Join(pack, sdLib()), filepath.Join(pack, "libstable-diffusion.vulkan.so")}
	slices.Sort(want)
	if left := filesUnder(t, root); !slices.Equal(left, want) {
		t.Errorf("files in the packs folder: %q, want %q (no download or temporary file left)", left, want)
	}
}

// llamaRuntime is the real llama.cpp CPU runtime `make runtime` installs.
func llamaRuntime(t *testing.T) string {
	t.Helper()
	dir := os.Getenv(llama.LibEnv)
	if dir == "" {
		dir, _ = filepath.Abs(filepath.Join("..", "..", "runtime", "llama", engine.PlatformVariant()))
	}
	if _, err := os.Stat(filepath.Join(dir, "_nlcBuildMetadata.json")); err != nil {
		t.Skipf("needs the llama.cpp CPU runtime in %s: run `make runtime` (%v)", dir, err)
	}
	return dir
}

// A GPU pack whose library is garbage fails its check in a real child
// process (`runtime-check`, the program's own); it is removed and
// remembered, the CPU pack (the real llama.cpp runtime) is installed and
// used, and the reason is recorded and logged in a donor's words. The CPU
// pack then decodes a tiny model in the same child check.
func TestEnsureFallsBackToTheCPUPackWhenTheGPUPackFails(t *testing.T) {
	src := llamaRuntime(t)
	root := dataHome(t)
	t.Setenv(checkChildEnv, "1")
	fs := newFeedServer(t)
	record := `{"buildOptions":{"platform":"linux","arch":"x64","gpu":"vulkan","llamaCpp":{"release":"v0.5.0"}}}`
	broken := fs.addPack("llama", runtime.GOOS, runtime.GOARCH, "vulkan", variant("vulkan"), "v0.5.0", "tar.xz", tarXZ(t, []packFile{
		{name: "_nlcBuildMetadata.json", body: []byte(record)},
		{name: "libllama.so", body: []byte("this is not a shared library")},
		{name: "libggml-vulkan.so", body: []byte("nor is this")},
	}))
	// The CPU pack: the real runtime with one CPU variant of ggml (the
	// baseline x86-64 one where there is one), which is all it needs.
	var files []packFile
	for _, f := range dirFiles(t, src) {
		if strings.HasPrefix(f.name, "libggml-cpu-") && f.name != "libggml-cpu-x64.so" {
			continue
		}
		files = append(files, f)
	}
	cpu := fs.addPack("llama", runtime.GOOS, runtime.GOARCH, "cpu", variant("cpu"), "v0.5.0", "zip", zipOf(t, files))
	fs.publish([]release.Pack{cpu, broken}, nil)

	logs := &logLines{}
	inst := NewInstaller(Config{FeedURL: fs.url(), Trusted: []ed25519.PublicKey{fs.pub}, Machine: thisMachine(true), Log: slog.New(logs),
		Check: hosted.CheckPack(os.Args[0])})
	rec, err := inst.Ensure(context.Background(), "llama", Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Backend != "cpu" || rec.Dir != filepath.Join(root, "llama", variant("cpu"), "v0.5.0") {
		t.Fatalf("record %+v, want the CPU pack", rec)
	}
	wantWhy := "the Vulkan runtime (" + variant("vulkan") + " v0.5.0) did not start on this GPU: failed its check: cannot load the llama.cpp libraries from " +
		filepath.Join(root, "llama", variant("vulkan"), "v0.5.0")
	if !strings.HasPrefix(rec.Problem, wantWhy) || !strings.HasSuffix(rec.Problem, "; using the CPU runtime") {
		t.Errorf("problem\n got %q\nwant %q…; using the CPU runtime", rec.Problem, wantWhy)
	}
	if !strings.Contains(logs.String(), "WARN "+wantWhy) {
		t.Errorf("the reason is not logged as a warning:\n%s", logs)
	}
	if _, err := os.Stat(filepath.Join(root, "llama", variant("vulkan"))); err == nil {
		if left := filesUnder(t, filepath.Join(root, "llama", variant("vulkan"))); len(left) > 0 {
			t.Errorf("the refused pack was left behind: %q", left)
		}
	}
	// Refused once, never fetched again; the reason stays on the record.
	again, err := inst.Ensure(context.Background(), "llama", Options{}, nil)
	if err != nil || again.Dir != rec.Dir || !strings.HasPrefix(again.Problem, wantWhy) {
		t.Fatalf("second Ensure: %+v %v", again, err)
	}
	if n := fs.hitsOf(strings.TrimPrefix(broken.URL, fs.srv.URL)); n != 1 {
		t.Errorf("the broken pack was downloaded %d times, want once", n)
	}
	// A new driver is a new machine for the GPU pack: it is tried again.
	newDriver := thisMachine(true)
	newDriver.NVIDIADriver = "580.95.05"
	retry := NewInstaller(Config{FeedURL: fs.url(), Trusted: []ed25519.PublicKey{fs.pub}, Machine: newDriver, Check: hosted.CheckPack(os.Args[0])})
	if rec2, err := retry.Ensure(context.Background(), "llama", Options{}, nil); err != nil || rec2.Backend != "cpu" {
		t.Fatalf("after a driver change: %+v %v", rec2, err)
	}
	if n := fs.hitsOf(strings.TrimPrefix(broken.URL, fs.srv.URL)); n != 2 {
		t.Errorf("after a driver change the broken pack was downloaded %d times in all, want twice", n)
	}
	// GPUOnly (a CPU runtime beside the program): nothing to fetch, and why.
	if _, err := inst.Ensure(context.Background(), "llama", Options{GPUOnly: true}, nil); !errors.Is(err, ErrNoGPUPack) || !strings.Contains(err.Error(), wantWhy) {
		t.Errorf("GPUOnly: %v, want ErrNoGPUPack with the reason", err)
	}
	// The CPU pack is a working runtime: the same child check decodes on it.
	if err := hosted.CheckPack(os.Args[0])(context.Background(), "llama", rec.Dir); err != nil {
		t.Fatalf("the CPU pack does not run: %v", err)
	}
}

// Each bad feed or pack is refused with a line that says what was wrong,
// and nothing is installed: no pack, no record, no temporary file.
func TestEnsureRefuses(t *testing.T) {
	lib := []packFile{{name: sdLib(), body: []byte("a library")}}
	otherOS := "windows"
	if runtime.GOOS == "windows" {
		otherOS = "linux"
	}
	cases := []struct {
		name  string
		setup func(fs *feedServer)
		is    error
		want  string
	}{
		{"bad signature", func(fs *feedServer) {
			_, other, _ := ed25519.GenerateKey(rand.Reader)
			fs.publish([]release.Pack{fs.addPack("sd", runtime.GOOS, runtime.GOARCH, "cpu", variant("cpu"), "m1", "tar.xz", tarXZ(t, lib))}, other)
		}, release.ErrBadSignature, "signature does not verify with a trusted key"},
		{"feed not JSON", func(fs *feedServer) {
			fs.mu.Lock()
			fs.feed = []byte("<!doctype html><title>Sign in</title>")
			fs.mu.Unlock()
		}, release.ErrNotJSON, "not valid JSON"},
		{"sha256 mismatch", func(fs *feedServer) {
			p := fs.addPack("sd", runtime.GOOS, runtime.GOARCH, "cpu", variant("cpu"), "m1", "tar.xz", tarXZ(t, lib))
			p.SHA256 = strings.Repeat("ab", 32)
			fs.publish([]release.Pack{p}, nil)
		}, release.ErrSHA256Mismatch, "could not be downloaded"},
		{"truncated download", func(fs *feedServer) {
			p := fs.addPack("sd", runtime.GOOS, runtime.GOARCH, "cpu", variant("cpu"), "m1", "tar.xz", tarXZ(t, lib))
			fs.truncate[strings.TrimPrefix(p.URL, fs.srv.URL)] = true
			fs.publish([]release.Pack{p}, nil)
		}, nil, "could not be downloaded"},
		{"pack for another OS", func(fs *feedServer) {
			fs.publish([]release.Pack{fs.addPack("sd", otherOS, "amd64", "cpu", "other-x64", "m1", "zip", zipOf(t, lib))}, nil)
		}, ErrNoPack, "it has packs for " + otherOS + "/amd64 only"},
		{"an archive that is not one (its sha256 matches)", func(fs *feedServer) {
			fs.publish([]release.Pack{fs.addPack("sd", runtime.GOOS, runtime.GOARCH, "cpu", variant("cpu"), "m1", "tar.xz", []byte("not an archive at all"))}, nil)
		}, nil, "could not be unpacked"},
		{"an archive that leaves its folder", func(fs *feedServer) {
			fs.publish([]release.Pack{fs.addPack("sd", runtime.GOOS, runtime.GOARCH, "cpu", variant("cpu"), "m1", "tar.xz",
				tarXZ(t, []packFile{{name: sdLib(), body: []byte("x")}, {name: "../../escape", body: []byte("x")}}))}, nil)
		}, release.ErrUnsafeArchive, "could not be unpacked"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root := dataHome(t)
			fs := newFeedServer(t)
			tc.setup(fs)
			inst := NewInstaller(Config{FeedURL: fs.url(), Trusted: []ed25519.PublicKey{fs.pub}, Machine: thisMachine(false)})
			_, err := inst.Ensure(context.Background(), "sd", Options{}, nil)
			if err == nil {
				t.Fatal("refused nothing")
			}
			t.Logf("refused: %v", err)
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("err = %v, want %v", err, tc.is)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %q, want it to say %q", err, tc.want)
			}
			if left := filesUnder(t, root); len(left) > 0 {
				t.Errorf("left behind: %q", left)
			}
			if _, err := engine.CurrentPack("", "sd"); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a pack is recorded: %v", err)
			}
			if _, err := os.Stat(filepath.Join(root, "..", "escape")); err == nil {
				t.Error("the archive wrote outside the packs folder")
			}
		})
	}
}

// A pack re-published with other bytes that cannot be unpacked leaves the
// working copy in place, whole, and still in use.
func TestEnsureKeepsTheInstalledPackWhenItsReplacementFails(t *testing.T) {
	dataHome(t)
	fs := newFeedServer(t)
	good := fs.addPack("sd", runtime.GOOS, runtime.GOARCH, "cpu", variant("cpu"), "m1", "tar.xz",
		tarXZ(t, []packFile{{name: sdLib(), body: []byte("first build")}}))
	fs.publish([]release.Pack{good}, nil)
	inst := NewInstaller(Config{FeedURL: fs.url(), Trusted: []ed25519.PublicKey{fs.pub}, Machine: thisMachine(false)})
	rec, err := inst.Ensure(context.Background(), "sd", Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	bad := fs.addPack("sd", runtime.GOOS, runtime.GOARCH, "cpu", variant("cpu"), "m1", "zip", []byte("PK garbage, sha256 and all"))
	fs.publish([]release.Pack{bad}, nil)
	if _, err := inst.Ensure(context.Background(), "sd", Options{}, nil); err == nil || !strings.Contains(err.Error(), "could not be unpacked") {
		t.Fatalf("the broken replacement: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(rec.Dir, sdLib())); err != nil || string(b) != "first build" {
		t.Fatalf("the installed pack was damaged: %q %v", b, err)
	}
	if got, err := engine.CurrentPack("", "sd"); err != nil || got.Dir != rec.Dir {
		t.Fatalf("the record moved: %+v %v", got, err)
	}
	ents, _ := os.ReadDir(filepath.Dir(rec.Dir))
	if len(ents) != 1 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("beside the pack: %q, want it alone (no temporary folder or download)", names)
	}
}

// The real llama.cpp Vulkan build as a pack (from `packaging/fetch-runtime.sh
// linux-x64-vulkan runtime/llama`), tried in the real child with the real
// CPU build as the fallback. Where Vulkan sees a GPU, the Vulkan pack is
// used; where it sees none (a software Vulkan device only, as on the
// project's build machines), the child refuses it in those words and the
// CPU pack is used: a GPU pack that would run on the CPU is not kept.
func TestEnsureRealVulkanPack(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the Vulkan runtime fetched here is the Linux one")
	}
	src := llamaRuntime(t)
	vk := filepath.Join(filepath.Dir(src), engine.PlatformVariant()+"-vulkan")
	if _, err := os.Stat(filepath.Join(vk, "libggml-vulkan.so")); err != nil {
		t.Skipf("needs the llama.cpp Vulkan runtime in %s: packaging/fetch-runtime.sh %s-vulkan runtime/llama (%v)", vk, engine.PlatformVariant(), err)
	}
	root := dataHome(t)
	t.Setenv(checkChildEnv, "1")
	lean := func(dir string) []packFile {
		var files []packFile
		for _, f := range dirFiles(t, dir) {
			if strings.HasPrefix(f.name, "libggml-cpu-") && f.name != "libggml-cpu-x64.so" {
				continue
			}
			files = append(files, f)
		}
		return files
	}
	fs := newFeedServer(t)
	vkPack := fs.addPack("llama", runtime.GOOS, runtime.GOARCH, "vulkan", variant("vulkan"), "v0.5.0", "zip", zipOf(t, lean(vk)))
	cpuPack := fs.addPack("llama", runtime.GOOS, runtime.GOARCH, "cpu", variant("cpu"), "v0.5.0", "zip", zipOf(t, lean(src)))
	fs.publish([]release.Pack{cpuPack, vkPack}, nil)
	inst := NewInstaller(Config{FeedURL: fs.url(), Trusted: []ed25519.PublicKey{fs.pub}, Machine: thisMachine(true), Check: hosted.CheckPack(os.Args[0])})
	rec, err := inst.Ensure(context.Background(), "llama", Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	switch rec.Backend {
	case "vulkan":
		t.Logf("Vulkan sees a GPU here: the Vulkan pack is used (%s)", rec.Dir)
		if rec.Problem != "" || rec.Dir != filepath.Join(root, "llama", variant("vulkan"), "v0.5.0") {
			t.Errorf("record %+v", rec)
		}
	case "cpu":
		t.Logf("no Vulkan GPU here: %s", rec.Problem)
		if !strings.Contains(rec.Problem, "the Vulkan runtime ("+variant("vulkan")+" v0.5.0) found no GPU to run on: its Vulkan backend sees no GPU on this computer, so it would run on the CPU; using the CPU runtime") {
			t.Errorf("problem %q", rec.Problem)
		}
	default:
		t.Fatalf("record %+v", rec)
	}
}
