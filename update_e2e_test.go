package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minisgg/studio-worker/release"
)

// The update of a real per-user .tar.xz install, end to end on loopback
// (issue #14 item 4): two real builds of this program (0.2.0 and 0.3.0,
// trusting a key made here through release's link-time test key), packed
// in the tarball layout of packaging/linux/build.sh, the old one installed
// into a temporary HOME by the tarball's own install.sh, and a signed feed
// served by a test server. The installed 0.2.0 runs `studio-worker update`
// headless. First every refusal (a feed signed by another key, a feed that
// is not JSON, a downgrade offer, a feed with nothing for linux/amd64, a
// sha256 mismatch, a truncated download, and a tarball whose program fails
// its self-check after the swap): each exits 1 with one line and leaves
// 0.2.0 installed, byte for byte, with nothing beside it. Then the real
// update: 0.3.0 replaces 0.2.0 in place, passes its self-check, and the
// update restarts into it (the restarted program says so, checks the feed
// again and finds itself the newest). Last, going back on purpose with
// --to 0.2.0.
func TestUpdateTarballEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("links two real builds of the app; not with -short")
	}
	for _, tool := range []string{"go", "tar", "xz", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("the update test needs %s: %v", tool, err)
		}
	}
	pub, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	_, otherKey, _ := ed25519.GenerateKey(nil)
	tmp := t.TempDir()
	start := time.Now()
	// The two links, then the three tarballs, side by side: each step is
	// mostly one thread.
	var oldBin, newBin, oldTar, newTar, badTar string
	key64 := release.EncodePublicKey(pub)
	parallel(t, func() (err error) { oldBin, err = buildRelease(tmp, "0.2.0", key64); return },
		func() (err error) { newBin, err = buildRelease(tmp, "0.3.0", key64); return })
	t.Logf("two builds linked in %s", time.Since(start).Round(time.Millisecond))
	parallel(t, func() (err error) { oldTar, err = packTarball(tmp, oldBin, "0.2.0", "old"); return },
		func() (err error) { newTar, err = packTarball(tmp, newBin, "0.3.0", "new"); return },
		// Labelled 0.3.0, holding the 0.2.0 program: its self-check says
		// the wrong version, as a mislabelled or broken release would.
		func() (err error) { badTar, err = packTarball(tmp, oldBin, "0.3.0", "bad"); return })
	t.Logf("built and packed in %s", time.Since(start).Round(time.Millisecond))

	home := filepath.Join(tmp, "home")
	env := updateEnv(home)
	unpacked := filepath.Join(tmp, "unpacked")
	mustRun(t, env, "bash", "-c", "mkdir -p "+unpacked+" && tar -xJf "+oldTar+" -C "+unpacked)
	mustRun(t, env, "bash", filepath.Join(unpacked, "studio-worker-0.2.0", "install.sh"))
	link := filepath.Join(home, ".local", "bin", "studio-worker")
	share := filepath.Join(home, ".local", "share")
	app := filepath.Join(share, "studio-worker", "app")
	oldSum := fileSHA(t, oldBin)

	srv := newUpdateFeed(t)
	files := map[string]release.Artifact{}
	for name, path := range map[string]string{"old.tar.xz": oldTar, "new.tar.xz": newTar, "bad.tar.xz": badTar} {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		files[name] = srv.file(name, b)
	}
	linux := func(v, file string) release.Release {
		return release.Release{Version: v, OS: "linux", Arch: "amd64", Format: "tar.xz", Artifact: files[file]}
	}
	feedURL := srv.URL + "/feed.json"
	run := func(args ...string) (string, int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, link, args...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		code := 0
		if err != nil {
			ee, ok := err.(*exec.ExitError)
			if !ok {
				t.Fatalf("%v: %v\n%s", args, err, out)
			}
			code = ee.ExitCode()
		}
		return string(out), code
	}
	still020 := func(t *testing.T) {
		t.Helper()
		if got := fileSHA(t, filepath.Join(app, "studio-worker")); got != oldSum {
			t.Fatal("the installed program changed")
		}
		if out, code := run("version"); code != 0 || out != "studio-worker 0.2.0\n" {
			t.Fatalf("the installed program says %q (exit %d)", out, code)
		}
		entries, err := os.ReadDir(filepath.Dir(app))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".studio-worker") { // stage, backup, unpack temp, marker
				t.Errorf("left beside the install: %s", e.Name())
			}
		}
	}
	still020(t)

	truncated := files["new.tar.xz"]
	srv.truncate("trunc.tar.xz", srv.bytes("new.tar.xz"))
	truncated.URL = srv.URL + "/files/trunc.tar.xz"
	wrongSum := files["new.tar.xz"]
	wrongSum.SHA256 = files["old.tar.xz"].SHA256
	for _, c := range []struct {
		name string
		feed func()
		want []string
	}{
		{"feed signed by another key", func() { srv.sign(t, otherKey, linux("0.3.0", "new.tar.xz")) },
			[]string{"signature does not verify with a trusted key", "nothing was installed"}},
		{"feed that is not JSON", func() { srv.raw([]byte("<html>Service Unavailable</html>")) },
			[]string{"not valid JSON", "nothing was installed"}},
		{"downgrade offer", func() {
			srv.sign(t, key, release.Release{Version: "0.1.0", OS: "linux", Arch: "amd64", Format: "tar.xz", Artifact: files["old.tar.xz"]})
		},
			[]string{"offers 0.1.0, older than this 0.2.0: not installed", "update --to 0.1.0"}},
		{"nothing for linux/amd64", func() {
			srv.sign(t, key, release.Release{Version: "0.3.0", OS: "windows", Arch: "amd64", Format: "nsis", Artifact: files["new.tar.xz"]},
				release.Release{Version: "0.3.0", OS: "linux", Arch: "arm64", Format: "tar.xz", Artifact: files["new.tar.xz"]})
		}, []string{"no Studio Worker release for linux/amd64 (tar.xz)"}},
		{"sha256 mismatch", func() {
			srv.sign(t, key, release.Release{Version: "0.3.0", OS: "linux", Arch: "amd64", Format: "tar.xz", Artifact: wrongSum})
		}, []string{"sha256 does not match the feed", "nothing was installed"}},
		{"truncated download", func() {
			srv.sign(t, key, release.Release{Version: "0.3.0", OS: "linux", Arch: "amd64", Format: "tar.xz", Artifact: truncated})
		}, []string{"truncated after", "nothing was installed"}},
		{"new version fails its self-check", func() { srv.sign(t, key, linux("0.3.0", "bad.tar.xz")) },
			[]string{`failed its self-check (it says "studio-worker 0.2.0", not "studio-worker 0.3.0")`, "rolled back"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.feed()
			out, code := run("update", "--feed", feedURL)
			t.Logf("studio-worker update (exit %d):\n%s", code, out)
			if code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
			for _, w := range c.want {
				if !strings.Contains(out, w) {
					t.Errorf("the output lacks %q", w)
				}
			}
			still020(t)
		})
	}

	// What the app keeps beside its program folder (the runtime packs it
	// fetched) must not go with the folder the update replaces.
	kept := filepath.Join(filepath.Dir(app), "runtimes", "llama", "current.json")
	if err := os.MkdirAll(filepath.Dir(kept), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kept, []byte(`{"kept":true}`), 0o644); err != nil {
		t.Fatal(err)
	}

	// The real update, then the restarted 0.3.0 checks again.
	srv.sign(t, key, linux("0.2.0", "old.tar.xz"), linux("0.3.0", "new.tar.xz"))
	out, code := run("update", "--feed", feedURL)
	t.Logf("studio-worker update (exit %d):\n%s", code, out)
	for _, w := range []string{
		"this copy of Studio Worker 0.2.0: installed for this user by install.sh in " + app,
		"Studio Worker 0.3.0 is available (this is 0.2.0).",
		"downloading Studio Worker 0.3.0: 100%",
		"Studio Worker 0.3.0 is installed in " + app,
		"now running Studio Worker 0.3.0 (updated from 0.2.0)",
		"Studio Worker 0.3.0 is the newest version.",
	} {
		if !strings.Contains(out, w) {
			t.Errorf("the update's output lacks %q", w)
		}
	}
	if code != 0 {
		t.Fatalf("update exit %d", code)
	}
	if got := fileSHA(t, filepath.Join(app, "studio-worker")); got != fileSHA(t, newBin) {
		t.Error("the installed program is not the 0.3.0 build")
	}
	if got := fileSHA(t, filepath.Join(filepath.Dir(app), ".studio-worker-previous", "studio-worker")); got != oldSum {
		t.Error("the previous version is not kept beside it")
	}
	if b, err := os.ReadFile(kept); err != nil || string(b) != `{"kept":true}` {
		t.Errorf("the runtime packs beside the program did not survive the update: %q %v", b, err)
	}
	if out, code := run("version", "--verbose"); code != 0 || !strings.HasPrefix(out, "studio-worker 0.3.0\n") {
		t.Errorf("after the update the installed program says %q (exit %d)", out, code)
	}
	if desk, err := os.ReadFile(filepath.Join(share, "applications", "studio-worker.desktop")); err != nil || !strings.Contains(string(desk), `Exec="`+app+`/studio-worker"`) {
		t.Errorf("the menu entry no longer starts the installed program: %s %v", desk, err)
	}

	// Back to 0.2.0 only because the donor names it.
	out, code = run("update", "--feed", feedURL, "--to", "0.2.0")
	t.Logf("studio-worker update --to 0.2.0 (exit %d):\n%s", code, out)
	for _, w := range []string{
		"Studio Worker 0.2.0 (older than 0.3.0, as asked) is available.",
		"now running Studio Worker 0.2.0 (updated from 0.3.0)",
		"Studio Worker 0.3.0 is available (this is 0.2.0).",
	} {
		if !strings.Contains(out, w) {
			t.Errorf("the output lacks %q", w)
		}
	}
	if out, code := run("version"); code != 0 || out != "studio-worker 0.2.0\n" {
		t.Errorf("after --to 0.2.0 the installed program says %q (exit %d)", out, code)
	}

	// The app's own updater, headless: `run` checks at start, installs
	// 0.3.0 between jobs (there are none: no studio answers) and restarts
	// into it with the same arguments.
	cfg := filepath.Join(home, ".config", "studio-worker")
	if err := os.MkdirAll(cfg, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfg, "settings.toml"), []byte("update_feed_url = \""+feedURL+"\"\nlocal_api_off = true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	lines := runUntil(t, env, link, []string{"run", "--studio", "http://127.0.0.1:1/"}, "studio worker 0.3.0 started")
	for _, w := range []string{"studio worker 0.2.0 started", "Studio Worker 0.3.0 is available (this is 0.2.0).",
		"holding the job gate: installing Studio Worker 0.3.0", "restarting into Studio Worker 0.3.0",
		"Studio Worker was updated from 0.2.0", "Studio Worker 0.3.0 is the newest version."} {
		if !strings.Contains(lines, w) {
			t.Errorf("the headless run's log lacks %q", w)
		}
	}
	if out, code := run("version"); code != 0 || out != "studio-worker 0.3.0\n" {
		t.Errorf("after the headless run's update the installed program says %q (exit %d)", out, code)
	}

	// A version that dies after the restart, before it says it started,
	// leaves the updater's marker behind (written just before the exec,
	// removed by the new version once it runs). The next start puts the
	// previous version back and runs it instead.
	marker := filepath.Join(filepath.Dir(app), ".studio-worker-update-pending")
	pending := `{"from":"0.2.0","to":"0.3.0","app":"` + app + `","backup":"` + filepath.Join(filepath.Dir(app), ".studio-worker-previous") + `"}`
	if err := os.WriteFile(marker, []byte(pending), 0o600); err != nil {
		t.Fatal(err)
	}
	out, code = run("update", "--check", "--feed", feedURL)
	t.Logf("studio-worker update --check after a start that never confirmed (exit %d):\n%s", code, out)
	for _, w := range []string{"Studio Worker 0.3.0 did not start after the update; 0.2.0 was put back and starts instead",
		"Studio Worker 0.3.0 is available (this is 0.2.0)."} {
		if !strings.Contains(out, w) {
			t.Errorf("the output lacks %q", w)
		}
	}
	if code != 0 {
		t.Errorf("exit %d", code)
	}
	still020(t)
	t.Logf("the whole test took %s", time.Since(start).Round(time.Millisecond))
}

// runUntil starts exe with args, reads its stderr until a line holds
// want (and then the next check's result), stops it with SIGTERM and
// returns everything it logged.
func runUntil(t *testing.T, env []string, exe string, args []string, want string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Env = env
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var lines []string
	seen, readDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(stderr)
		found := false
		for sc.Scan() {
			mu.Lock()
			lines = append(lines, sc.Text())
			mu.Unlock()
			// After the restart, the new version's own check at start.
			if !found && strings.Contains(sc.Text(), want) {
				found = true
			}
			if found && strings.Contains(sc.Text(), "is the newest version") {
				close(seen)
				found = false
			}
		}
	}()
	select {
	case <-seen:
	case <-readDone:
	case <-ctx.Done():
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	<-readDone
	_ = cmd.Wait()
	mu.Lock()
	defer mu.Unlock()
	out := strings.Join(lines, "\n")
	t.Logf("%s %v:\n%s", exe, args, out)
	return out
}

// parallel runs each step on its own goroutine, waits for all, and fails
// the test with their errors.
func parallel(t *testing.T, steps ...func() error) {
	t.Helper()
	errs := make([]error, len(steps))
	var wg sync.WaitGroup
	for i, f := range steps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f()
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

// buildRelease links this program as version v, trusting the test key.
func buildRelease(dir, v, testKey string) (string, error) {
	out := filepath.Join(dir, "build-"+v, "studio-worker")
	ldflags := "-s -w -X github.com/minisgg/studio-worker/studio.Version=" + v +
		" -X github.com/minisgg/studio-worker/release.testKey=" + testKey
	cmd := exec.Command("go", "build", "-ldflags", ldflags, "-o", out, ".")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", v, err, b)
	}
	return out, nil
}

// packTarball makes the .tar.xz packaging/linux/build.sh makes (the folder
// studio-worker-<version>/ with the program, lib/, the menu entry and
// install.sh; the runtime libraries left out to keep it small) with its
// tarball step (tar with root ownership, xz on one thread).
func packTarball(dir, bin, version, name string) (string, error) {
	work := filepath.Join(dir, "pack-"+name)
	tree := filepath.Join(work, "studio-worker-"+version)
	for _, d := range []string{"lib", "share/applications"} {
		if err := os.MkdirAll(filepath.Join(tree, d), 0o755); err != nil {
			return "", err
		}
	}
	for _, c := range []struct {
		src, dst string
		mode     os.FileMode
	}{
		{bin, "studio-worker", 0o755},
		{"packaging/linux/install.sh", "install.sh", 0o755},
		{"packaging/linux/studio-worker.desktop", "share/applications/studio-worker.desktop", 0o644},
	} {
		b, err := os.ReadFile(c.src)
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(tree, c.dst), b, c.mode); err != nil {
			return "", err
		}
	}
	if err := os.WriteFile(filepath.Join(tree, "lib", "README"), []byte("the runtime libraries (left out of this test's tarball)\n"), 0o644); err != nil {
		return "", err
	}
	out := filepath.Join(dir, name+".tar.xz")
	cmd := exec.Command("bash", "-c", "set -o pipefail; tar -C "+work+" --owner=0 --group=0 --numeric-owner -cf - studio-worker-"+version+" | xz -T1 -0 >"+out)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("packing %s: %v\n%s", name, err, b)
	}
	return out, nil
}

func mustRun(t *testing.T, env []string, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = env
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, b)
	}
}

// updateEnv is this environment with HOME at home and nothing that points
// the program elsewhere (XDG folders, runtime overrides).
func updateEnv(home string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "HOME" || strings.HasPrefix(k, "XDG_") || strings.HasPrefix(k, "STUDIO_WORKER_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "HOME="+home)
}

func fileSHA(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// updateFeed serves a signed feed at /feed.json and files at /files/.
type updateFeed struct {
	*httptest.Server
	mu    sync.Mutex
	feed  []byte
	files map[string][]byte
	trunc map[string]bool
}

func newUpdateFeed(t *testing.T) *updateFeed {
	f := &updateFeed{files: map[string][]byte{}, trunc: map[string]bool{}}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		feed, b, ok, trunc := f.feed, f.files[strings.TrimPrefix(r.URL.Path, "/files/")], false, false
		if r.URL.Path != "/feed.json" {
			_, ok = f.files[strings.TrimPrefix(r.URL.Path, "/files/")]
			trunc = f.trunc[strings.TrimPrefix(r.URL.Path, "/files/")]
		}
		f.mu.Unlock()
		switch {
		case r.URL.Path == "/feed.json":
			w.Write(feed)
		case !ok:
			http.NotFound(w, r)
		case trunc:
			// Half the file without a length: the connection ends early
			// but cleanly, as a cut download does.
			w.Write(b[:len(b)/2])
			w.(http.Flusher).Flush()
		default:
			http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b))
		}
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *updateFeed) file(name string, b []byte) release.Artifact {
	f.mu.Lock()
	f.files[name] = b
	f.mu.Unlock()
	s := sha256.Sum256(b)
	return release.Artifact{URL: f.URL + "/files/" + name, Size: int64(len(b)), SHA256: hex.EncodeToString(s[:])}
}

func (f *updateFeed) bytes(name string) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.files[name]
}

func (f *updateFeed) truncate(name string, b []byte) {
	f.mu.Lock()
	f.files[name], f.trunc[name] = b, true
	f.mu.Unlock()
}

func (f *updateFeed) raw(b []byte) {
	f.mu.Lock()
	f.feed = b
	f.mu.Unlock()
}

func (f *updateFeed) sign(t *testing.T, key ed25519.PrivateKey, rels ...release.Release) {
	t.Helper()
	env, err := release.Sign(&release.Manifest{Schema: release.SchemaVersion, Generated: time.Now().UTC(), Releases: rels}, key)
	if err != nil {
		t.Fatal(err)
	}
	f.raw(env)
}
