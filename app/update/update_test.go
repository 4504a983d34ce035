package update

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minisgg/studio-worker/release"
)

// feedServer serves a signed feed at /feed.json and files at /files/.
type feedServer struct {
	*httptest.Server
	mu    sync.Mutex
	feed  []byte
	files map[string][]byte
	trunc map[string]bool // sent half, without a length
}

func newFeedServer(t *testing.T) *feedServer {
	fs := &feedServer{files: map[string][]byte{}, trunc: map[string]bool{}}
	fs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fs.mu.Lock()
		defer fs.mu.Unlock()
		if r.URL.Path == "/feed.json" {
			w.Write(fs.feed)
			return
		}
		name := strings.TrimPrefix(r.URL.Path, "/files/")
		b, ok := fs.files[name]
		if !ok {
			http.NotFound(w, r)
			return
		}
		if fs.trunc[name] {
			w.Write(b[:len(b)/2])
			w.(http.Flusher).Flush() // chunked: the client sees a clean, early end
			return
		}
		w.Write(b)
	}))
	t.Cleanup(fs.Close)
	return fs
}

func (fs *feedServer) setFeed(t *testing.T, key ed25519.PrivateKey, rels ...release.Release) {
	t.Helper()
	env, err := release.Sign(&release.Manifest{Schema: release.SchemaVersion, Generated: time.Now().UTC(), Releases: rels}, key)
	if err != nil {
		t.Fatal(err)
	}
	fs.mu.Lock()
	fs.feed = env
	fs.mu.Unlock()
}

func (fs *feedServer) file(name string, b []byte) release.Artifact {
	fs.mu.Lock()
	fs.files[name] = b
	fs.mu.Unlock()
	sum := sha256.Sum256(b)
	return release.Artifact{URL: fs.URL + "/files/" + name, Size: int64(len(b)), SHA256: hex.EncodeToString(sum[:])}
}

func rel(v, goos, arch, format string, a release.Artifact) release.Release {
	return release.Release{Version: v, OS: goos, Arch: arch, Format: format, Artifact: a}
}

// Check picks the newest release for this platform and install kind, and
// refuses what must not be installed, each with its own line.
func TestCheck(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(nil)
	_, other, _ := ed25519.GenerateKey(nil)
	fs := newFeedServer(t)
	a := fs.file("x.tar.xz", []byte("not really a tarball"))
	up := func(current string, kind Kind) *Updater {
		return New(Config{FeedURL: fs.URL + "/feed.json", Trusted: []ed25519.PublicKey{pub}, Current: current,
			Install: Install{Kind: kind}, GOOS: "linux", GOARCH: "amd64", WorkDir: t.TempDir()})
	}
	ctx := context.Background()

	fs.setFeed(t, key, rel("0.2.0", "linux", "amd64", "tar.xz", a), rel("0.3.0", "linux", "amd64", "tar.xz", a),
		rel("0.4.0", "linux", "amd64", "deb", a), rel("0.9.0", "windows", "amd64", "nsis", a), rel("0.3.1-rc.1", "linux", "arm64", "tar.xz", a))
	o, err := up("0.2.0", KindTarball).Check(ctx, "")
	if err != nil || o.Release == nil || o.Release.Version != "0.3.0" || o.Downgrade {
		t.Fatalf("newest tar.xz: %+v, %v", o, err)
	}
	if !strings.Contains(o.Line(), "0.3.0 is available (this is 0.2.0)") {
		t.Errorf("line %q", o.Line())
	}
	if o, err := up("0.2.0", KindDeb).Check(ctx, ""); err != nil || o.Release.Version != "0.4.0" {
		t.Fatalf("a .deb install takes the .deb: %+v, %v", o, err)
	}
	o, err = up("0.3.0", KindTarball).Check(ctx, "")
	if err != nil || o.Release != nil || o.Line() != "Studio Worker 0.3.0 is the newest version." {
		t.Fatalf("newest already: %+v, %v", o, err)
	}
	var down *DowngradeError
	if _, err := up("0.5.0", KindTarball).Check(ctx, ""); !errors.As(err, &down) || !strings.Contains(err.Error(), "older than this 0.5.0: not installed") {
		t.Fatalf("a downgrade offer: %v", err)
	}
	o, err = up("0.5.0", KindTarball).Check(ctx, "0.2.0")
	if err != nil || o.Release == nil || o.Release.Version != "0.2.0" || !o.Downgrade {
		t.Fatalf("--to 0.2.0: %+v, %v", o, err)
	}
	if _, err := up("0.5.0", KindTarball).Check(ctx, "0.2.5"); !errors.Is(err, ErrNoRelease) || !strings.Contains(err.Error(), "it has 0.2.0, 0.3.0") {
		t.Fatalf("--to a version the feed lacks: %v", err)
	}
	if _, err := up("0.5.0", KindTarball).Check(ctx, "latest"); err == nil || !strings.Contains(err.Error(), "not a version") {
		t.Fatalf("--to latest: %v", err)
	}
	o, err = up("0.2.0", KindSource).Check(ctx, "")
	if err != nil || o.Release == nil || !strings.Contains(o.Line(), "nothing is replaced here") {
		t.Fatalf("a source build only hears of it: %+v %q, %v", o, o.Line(), err)
	}

	fs.setFeed(t, key, rel("0.9.0", "windows", "amd64", "nsis", a), rel("0.9.0", "darwin", "arm64", "dmg", a))
	if _, err := up("0.2.0", KindTarball).Check(ctx, ""); !errors.Is(err, ErrNoRelease) || !strings.Contains(err.Error(), "no Studio Worker release for linux/amd64 (tar.xz)") {
		t.Fatalf("a feed for other systems: %v", err)
	}

	fs.setFeed(t, other, rel("0.3.0", "linux", "amd64", "tar.xz", a))
	var fe *FeedError
	if _, err := up("0.2.0", KindTarball).Check(ctx, ""); !errors.As(err, &fe) || !errors.Is(err, release.ErrBadSignature) {
		t.Fatalf("signed by another key: %v", err)
	} else {
		t.Log(err)
	}
	fs.mu.Lock()
	fs.feed = []byte("<html>maintenance</html>")
	fs.mu.Unlock()
	if _, err := up("0.2.0", KindTarball).Check(ctx, ""); !errors.Is(err, release.ErrNotJSON) || !strings.Contains(err.Error(), "nothing was installed") {
		t.Fatalf("not JSON: %v", err)
	} else {
		t.Log(err)
	}
	noKeys := New(Config{FeedURL: fs.URL + "/feed.json", Trusted: []ed25519.PublicKey{}, Current: "0.2.0"})
	if _, err := noKeys.Check(ctx, ""); !errors.Is(err, ErrNoKeys) {
		t.Fatalf("no compiled-in key: %v", err)
	}
}

// An old, validly signed feed served after a newer one was seen is
// refused: it could hide a release that fixes something.
func TestCheckRefusesAnOlderFeedThanSeen(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(nil)
	fs := newFeedServer(t)
	a := fs.file("x.tar.xz", []byte("not really a tarball"))
	work := t.TempDir()
	up := New(Config{FeedURL: fs.URL + "/feed.json", Trusted: []ed25519.PublicKey{pub}, Current: "0.2.0",
		Install: Install{Kind: KindTarball}, GOOS: "linux", GOARCH: "amd64", WorkDir: work})
	serve := func(at time.Time, v string) {
		env, err := release.Sign(&release.Manifest{Schema: release.SchemaVersion, Generated: at, Releases: []release.Release{rel(v, "linux", "amd64", "tar.xz", a)}}, key)
		if err != nil {
			t.Fatal(err)
		}
		fs.mu.Lock()
		fs.feed = env
		fs.mu.Unlock()
	}
	ctx := context.Background()
	serve(time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC), "0.3.1")
	if o, err := up.Check(ctx, ""); err != nil || o.Release == nil || o.Release.Version != "0.3.1" {
		t.Fatalf("the current feed: %+v, %v", o, err)
	}
	serve(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), "0.3.0")
	var fe *FeedError
	_, err := up.Check(ctx, "")
	if !errors.As(err, &fe) || !errors.Is(err, release.ErrStaleFeed) || !strings.Contains(err.Error(), "an old copy is being served") || !strings.Contains(err.Error(), "nothing was installed") {
		t.Fatalf("an older feed after a newer one: %v", err)
	}
	t.Log(err)
}

// Download refuses a wrong sha256 and a truncated body, leaving nothing.
func TestDownloadRefusals(t *testing.T) {
	fs := newFeedServer(t)
	body := bytes.Repeat([]byte("studio-worker "), 5000)
	good := fs.file("good.tar.xz", body)
	work := t.TempDir()
	u := New(Config{Trusted: []ed25519.PublicKey{}, Current: "0.2.0", WorkDir: work, Install: Install{Kind: KindTarball}})
	offer := func(a release.Artifact) Offer {
		r := rel("0.3.0", "linux", "amd64", "tar.xz", a)
		return Offer{Current: "0.2.0", Release: &r, Install: Install{Kind: KindTarball}}
	}
	var last int64
	path, err := u.Download(context.Background(), offer(good), func(done, total int64) { last = done })
	if err != nil || last != int64(len(body)) {
		t.Fatalf("good download: %v (progress %d)", err, last)
	}
	if b, _ := os.ReadFile(path); !bytes.Equal(b, body) || filepath.Dir(path) != work {
		t.Fatal("the download is not the file served")
	}
	os.Remove(path)

	bad := good
	bad.SHA256 = strings.Repeat("0", 64)
	var de *DownloadError
	if _, err := u.Download(context.Background(), offer(bad), nil); !errors.As(err, &de) || !errors.Is(err, release.ErrSHA256Mismatch) {
		t.Fatalf("sha256 mismatch: %v", err)
	} else {
		t.Log(err)
	}
	fs.mu.Lock()
	fs.trunc["good.tar.xz"] = true
	fs.mu.Unlock()
	if _, err := u.Download(context.Background(), offer(good), nil); !errors.Is(err, release.ErrSizeMismatch) {
		t.Fatalf("truncated: %v", err)
	} else {
		t.Log(err)
	}
	if left, _ := os.ReadDir(work); len(left) != 0 {
		t.Errorf("refused downloads left %v", left)
	}
}
