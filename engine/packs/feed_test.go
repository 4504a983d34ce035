package packs

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/adrg/xdg"
	"github.com/ulikunitz/xz"

	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/release"
)

// packFile is one entry of a test pack: a file, or a symbolic link when
// link is set.
type packFile struct {
	name, link string
	body       []byte
}

// tarXZ packs files as a .tar.xz.
func tarXZ(t testing.TB, files []packFile) []byte {
	t.Helper()
	var buf bytes.Buffer
	xw, err := xz.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(xw)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.body)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}
		if f.link != "" {
			h = &tar.Header{Name: f.name, Linkname: f.link, Typeflag: tar.TypeSymlink, ModTime: time.Unix(0, 0)}
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if f.link == "" {
			tw.Write(f.body)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := xw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// zipOf packs files as a .zip (links are stored as copies of their
// target: the feed's zip packs are Windows', which has none).
func zipOf(t testing.TB, files []packFile) []byte {
	t.Helper()
	bodies := map[string][]byte{}
	for _, f := range files {
		bodies[f.name] = f.body
	}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, f := range files {
		// Stored, not deflated: the test packs are large libraries, and
		// compressing them under the race detector costs a minute.
		w, err := zw.CreateHeader(&zip.FileHeader{Name: f.name, Method: zip.Store})
		if err != nil {
			t.Fatal(err)
		}
		b := f.body
		if f.link != "" {
			b = bodies[f.link]
		}
		w.Write(b)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// dirFiles reads a folder's files (one level; links kept as links).
func dirFiles(t testing.TB, dir string) []packFile {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []packFile
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		if e.Type()&fs.ModeSymlink != 0 {
			target, _ := os.Readlink(p)
			out = append(out, packFile{name: e.Name(), link: target})
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, packFile{name: e.Name(), body: b})
	}
	return out
}

// feedServer serves a signed feed and its packs on loopback.
type feedServer struct {
	t    testing.TB
	srv  *httptest.Server
	key  ed25519.PrivateKey
	pub  ed25519.PublicKey
	mu   sync.Mutex
	body map[string][]byte // path -> bytes served
	// truncate serves only half of these paths' bytes (with the whole
	// length announced), as a connection that drops does.
	truncate map[string]bool
	feed     []byte
	hits     map[string]*atomic.Int64
}

func newFeedServer(t testing.TB) *feedServer {
	t.Helper()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	fs := &feedServer{t: t, key: key, pub: pub, body: map[string][]byte{}, truncate: map[string]bool{}, hits: map[string]*atomic.Int64{}}
	fs.srv = httptest.NewServer(http.HandlerFunc(fs.serve))
	t.Cleanup(fs.srv.Close)
	return fs
}

func (fs *feedServer) serve(w http.ResponseWriter, r *http.Request) {
	fs.mu.Lock()
	b, ok := fs.body[r.URL.Path]
	if r.URL.Path == "/feed.json" {
		b, ok = fs.feed, fs.feed != nil
	}
	cut := fs.truncate[r.URL.Path]
	h := fs.hits[r.URL.Path]
	if h == nil {
		h = &atomic.Int64{}
		fs.hits[r.URL.Path] = h
	}
	fs.mu.Unlock()
	h.Add(1)
	if !ok {
		http.NotFound(w, r)
		return
	}
	if cut {
		// Announce everything, send half, and drop the connection.
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		w.WriteHeader(http.StatusOK)
		w.Write(b[:len(b)/2])
		w.(http.Flusher).Flush()
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				c.Close()
			}
		}
		return
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Write(b)
}

// hitsOf counts the requests for path.
func (fs *feedServer) hitsOf(path string) int64 {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if h := fs.hits[path]; h != nil {
		return h.Load()
	}
	return 0
}

// addPack serves archive at /packs/<variant>.<format> and returns the
// feed entry for it.
func (fs *feedServer) addPack(rt, goos, goarch, backend, variant, version, format string, archive []byte) release.Pack {
	path := "/packs/" + rt + "-" + variant + "." + format
	fs.mu.Lock()
	fs.body[path] = archive
	fs.mu.Unlock()
	sum := sha256.Sum256(archive)
	return release.Pack{Runtime: rt, Version: version, OS: goos, Arch: goarch, Backend: backend, Variant: variant, Format: format,
		Artifact: release.Artifact{URL: fs.srv.URL + path, Size: int64(len(archive)), SHA256: hex.EncodeToString(sum[:])}}
}

// publish signs a feed listing packs (with key; the server's own when nil).
func (fs *feedServer) publish(packs []release.Pack, key ed25519.PrivateKey) {
	fs.t.Helper()
	if key == nil {
		key = fs.key
	}
	env, err := release.Sign(&release.Manifest{Schema: release.SchemaVersion, Generated: time.Now().UTC(), Packs: packs}, key)
	if err != nil {
		fs.t.Fatal(err)
	}
	fs.mu.Lock()
	fs.feed = env
	fs.mu.Unlock()
}

func (fs *feedServer) url() string { return fs.srv.URL + "/feed.json" }

// thisMachine is the computer running the test as pack choice sees it,
// with the GPU facts given.
func thisMachine(vulkan bool) Machine {
	return Machine{OS: runtime.GOOS, Arch: runtime.GOARCH, VulkanLoader: vulkan}
}

// dataHome points the data folder at a temporary one and returns the
// packs folder in it.
func dataHome(t testing.TB) string {
	t.Helper()
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	xdg.Reload()
	t.Cleanup(xdg.Reload)
	return engine.PacksDir()
}

// logLines collects what the installer logs.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) Enabled(context.Context, slog.Level) bool { return true }
func (l *logLines) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	l.lines = append(l.lines, r.Level.String()+" "+r.Message)
	l.mu.Unlock()
	return nil
}
func (l *logLines) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logLines) WithGroup(string) slog.Handler      { return l }
func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// filesUnder lists every file and link under root (folders left out).
func filesUnder(t testing.TB, root string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(root, p)
			out = append(out, rel)
		}
		return nil
	})
	sort.Strings(out)
	return out
}
