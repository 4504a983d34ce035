package release

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
	"strconv"
	"strings"
	"testing"
)

func artifactFor(url string, body []byte) Artifact {
	sum := sha256.Sum256(body)
	return Artifact{URL: url, Size: int64(len(body)), SHA256: hex.EncodeToString(sum[:])}
}

// server serves path -> handler on loopback.
func server(t *testing.T, routes map[string]http.HandlerFunc) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	for p, h := range routes {
		mux.HandleFunc(p, h)
	}
	s := httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s
}

// onlyFile fails the test when dir holds anything but the named files.
func onlyFiles(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Fatalf("%s holds %v, want %v", dir, got, names)
	}
}

func TestDownload(t *testing.T) {
	body := bytes.Repeat([]byte("runtime pack bytes "), 20000) // 380 kB: several chunks
	s := server(t, map[string]http.HandlerFunc{
		"/ok": func(w http.ResponseWriter, r *http.Request) { w.Write(body) },
	})
	dir := t.TempDir()
	dst := filepath.Join(dir, "sub", "pack.tar.xz")
	var calls int
	var last, total int64
	err := Download(context.Background(), s.Client(), artifactFor(s.URL+"/ok", body), dst, func(d, tot int64) {
		if d < last {
			t.Errorf("progress went back: %d after %d", d, last)
		}
		calls++
		last, total = d, tot
	})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(dst)
	if !bytes.Equal(got, body) {
		t.Fatal("downloaded bytes differ")
	}
	if calls < 2 || last != int64(len(body)) || total != int64(len(body)) {
		t.Fatalf("progress: %d calls, last %d/%d", calls, last, total)
	}
	onlyFiles(t, filepath.Dir(dst), "pack.tar.xz")
	if st, _ := os.Stat(dst); st.Mode().Perm() != 0o644 {
		t.Fatalf("mode %v", st.Mode())
	}
}

func TestDownloadRefuses(t *testing.T) {
	body := bytes.Repeat([]byte("x"), 100000)
	half := body[:50000]
	s := server(t, map[string]http.HandlerFunc{
		"/body": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			w.Write(body)
		},
		// Announces the full length, sends half, then the connection closes.
		"/cut": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			w.Write(half)
		},
		// No length announced (chunked): half the bytes, then a clean end.
		"/short": func(w http.ResponseWriter, r *http.Request) {
			w.Write(half)
			w.(http.Flusher).Flush()
		},
		// No length announced: more bytes than the feed says.
		"/long": func(w http.ResponseWriter, r *http.Request) {
			w.Write(body)
			w.(http.Flusher).Flush()
			w.Write([]byte("extra"))
		},
		"/missing": http.NotFound,
		"/redirect": func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "http://example.org/pack", http.StatusFound)
		},
	})
	good := artifactFor(s.URL+"/body", body)
	wrongSHA := good
	wrongSHA.SHA256 = strings.Repeat("ab", 32)
	wrongSize := good
	wrongSize.Size = good.Size - 1
	with := func(path string) Artifact { a := good; a.URL = s.URL + path; return a }
	cases := []struct {
		name string
		a    Artifact
		want error
		line string
	}{
		{"sha256 mismatch", wrongSHA, ErrSHA256Mismatch, "the feed says abab"},
		{"content-length disagrees", wrongSize, ErrSizeMismatch, "offers 100000 bytes, the feed says 99999"},
		{"truncated connection", with("/cut"), ErrSizeMismatch, "truncated after"},
		{"short body", with("/short"), ErrSizeMismatch, "truncated after 50000 of 100000 bytes"},
		{"overlong body", with("/long"), ErrSizeMismatch, "longer than the feed's 100000 bytes"},
		{"http on a public host", Artifact{URL: "http://example.org/pack", Size: 1, SHA256: sha0}, ErrInsecureURL, "not loopback"},
		{"file URL", Artifact{URL: "file:///etc/passwd", Size: 1, SHA256: sha0}, ErrInsecureURL, `scheme "file"`},
		{"redirect to plain http", with("/redirect"), ErrInsecureURL, "redirected to a refused URL"},
		{"not found", with("/missing"), nil, "404 Not Found"},
		{"bad sha256 in the artifact", Artifact{URL: good.URL, Size: 1, SHA256: "xyz"}, nil, "64 lowercase hex"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			dst := filepath.Join(dir, "pack.tar.xz")
			// An older good copy at dst must survive a failed download.
			if err := os.WriteFile(dst, []byte("previous"), 0o644); err != nil {
				t.Fatal(err)
			}
			err := Download(context.Background(), s.Client(), c.a, dst, nil)
			if err == nil || (c.want != nil && !errors.Is(err, c.want)) || !strings.Contains(err.Error(), c.line) {
				t.Fatalf("Download = %v; want %v saying %q", err, c.want, c.line)
			}
			if b, _ := os.ReadFile(dst); string(b) != "previous" {
				t.Fatalf("dst changed to %d bytes", len(b))
			}
			onlyFiles(t, dir, "pack.tar.xz")
		})
	}
}

func TestDownloadCancelled(t *testing.T) {
	release := make(chan struct{})
	s := server(t, map[string]http.HandlerFunc{
		"/slow": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "1000")
			w.Write(make([]byte, 10))
			w.(http.Flusher).Flush()
			select {
			case <-release:
			case <-r.Context().Done():
			}
		},
	})
	defer close(release)
	ctx, cancel := context.WithCancel(context.Background())
	dir := t.TempDir()
	a := Artifact{URL: s.URL + "/slow", Size: 1000, SHA256: sha0}
	err := Download(ctx, s.Client(), a, filepath.Join(dir, "x"), func(done, total int64) {
		if done == 10 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Download after cancel = %v", err)
	}
	onlyFiles(t, dir)
}

func TestFetch(t *testing.T) {
	pub, priv := newKey(t)
	env, err := Sign(sampleManifest(), priv)
	if err != nil {
		t.Fatal(err)
	}
	s := server(t, map[string]http.HandlerFunc{
		"/feed.json": func(w http.ResponseWriter, r *http.Request) { w.Write(env) },
		"/html":      func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("<html>maintenance</html>")) },
		"/huge": func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte(`{"signed":"`))
			w.Write(bytes.Repeat([]byte("A"), MaxFeedBytes+10))
		},
		"/gone": http.NotFound,
	})
	m, err := Fetch(context.Background(), s.Client(), s.URL+"/feed.json", []ed25519.PublicKey{pub})
	if err != nil || len(m.Releases) != 4 {
		t.Fatalf("Fetch = %v, %v", m, err)
	}
	otherPub, _ := newKey(t)
	for _, c := range []struct {
		url     string
		trusted []ed25519.PublicKey
		want    error
		line    string
	}{
		{s.URL + "/feed.json", []ed25519.PublicKey{otherPub}, ErrBadSignature, "/feed.json"},
		{s.URL + "/html", []ed25519.PublicKey{pub}, ErrNotJSON, "/html"},
		{s.URL + "/huge", []ed25519.PublicKey{pub}, ErrTooLarge, "limit"},
		{s.URL + "/gone", []ed25519.PublicKey{pub}, nil, "404"},
		{"http://example.org/feed.json", []ed25519.PublicKey{pub}, ErrInsecureURL, "fetching the release feed"},
	} {
		m, err := Fetch(context.Background(), s.Client(), c.url, c.trusted)
		if m != nil || err == nil || (c.want != nil && !errors.Is(err, c.want)) || !strings.Contains(err.Error(), c.line) {
			t.Errorf("Fetch(%s) = %v, %v; want %v saying %q", c.url, m, err, c.want, c.line)
		}
	}
}
