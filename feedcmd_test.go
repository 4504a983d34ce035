package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minisgg/studio-worker/release"
)

func signedTestFeed(t *testing.T) ([]byte, ed25519.PublicKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	m := &release.Manifest{
		Schema: release.SchemaVersion, Generated: time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC),
		Releases: []release.Release{{Version: "99.0.0", OS: "linux", Arch: "amd64", Format: "tar.xz",
			Artifact: release.Artifact{URL: "https://example.org/sw.tar.xz", Size: 42, SHA256: strings.Repeat("ab", 32)}}},
		Packs: []release.Pack{{Runtime: "llama", Version: "v0.5.0", OS: "linux", Arch: "amd64", Backend: "cuda", MinDriver: "580.65.06",
			Variant: "linux-x64-cuda", Format: "tar.xz", Artifact: release.Artifact{URL: "https://example.org/p.tar.xz", Size: 7, SHA256: strings.Repeat("cd", 32)}}},
	}
	env, err := release.Sign(m, priv)
	if err != nil {
		t.Fatal(err)
	}
	return env, pub
}

func TestFeedVerifyPrints(t *testing.T) {
	env, pub := signedTestFeed(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(env) }))
	defer srv.Close()
	m, id, err := readFeed(srv.URL+"/feed.json", []ed25519.PublicKey{pub})
	if err != nil {
		t.Fatal(err)
	}
	if id != release.KeyID(pub) {
		t.Fatalf("signer %s", id)
	}
	var out bytes.Buffer
	printFeed(&out, "F", id, m)
	for _, want := range []string{
		"feed F: signature good (key " + release.KeyID(pub) + "), schema 1, generated 2026-12-01T03:00:00Z",
		"release 99.0.0 linux/amd64 tar.xz, 42 bytes",
		"pack llama linux-x64-cuda (v0.5.0 linux/amd64 cuda, NVIDIA driver 580.65.06 or newer) tar.xz, 7 bytes",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

// The command trusts only the keys compiled in: a feed signed by any other
// key, or anything that is not a feed, is refused with a line and exit 1.
func TestFeedVerifyRefuses(t *testing.T) {
	env, _ := signedTestFeed(t)
	dir := t.TempDir()
	w := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		args []string
		code int
		line string
	}{
		{[]string{"verify", w("other-key.json", env)}, 1, "does not verify with a trusted key"},
		{[]string{"verify", w("html.json", []byte("<html>"))}, 1, "not valid JSON"},
		{[]string{"verify", filepath.Join(dir, "missing.json")}, 1, "no such file"},
		{[]string{"verify", "http://example.org/feed.json"}, 1, "not loopback"},
		{[]string{"verify", "--config", dir, "--bogus"}, 2, "flag provided but not defined"},
		{[]string{"check"}, 2, "the only subcommand is verify"},
		{nil, 2, "the only subcommand is verify"},
	}
	for _, c := range cases {
		var out, errb bytes.Buffer
		code := cli(append([]string{"feed"}, c.args...), &out, &errb)
		if code != c.code || !strings.Contains(errb.String(), c.line) {
			t.Errorf("feed %v = %d, stderr %q; want %d saying %q", c.args, code, errb.String(), c.code, c.line)
		}
	}
	// A loopback address that redirects to plain http elsewhere is refused
	// before anything is fetched from there.
	redir := httptest.NewServer(http.RedirectHandler("http://example.org/feed.json", http.StatusFound))
	defer redir.Close()
	var rout, rerr bytes.Buffer
	if code := cli([]string{"feed", "verify", redir.URL + "/feed.json"}, &rout, &rerr); code != 1 || !strings.Contains(rerr.String(), "not loopback") {
		t.Errorf("redirect to plain http: %d, %q", code, rerr.String())
	}

	// Without FILE|URL it reads update_feed_url from the settings folder.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("not a feed")) }))
	defer srv.Close()
	cfg := t.TempDir()
	if err := os.WriteFile(filepath.Join(cfg, "settings.toml"), []byte("update_feed_url = \""+srv.URL+"/f.json\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := cli([]string{"feed", "verify", "--config", cfg}, &out, &errb); code != 1 || !strings.Contains(errb.String(), srv.URL+"/f.json") {
		t.Fatalf("feed verify with the setting = %d, %q", code, errb.String())
	}
}
