package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minisgg/studio-worker/release"
)

// fakeFeedInputs lays out a tiny dist/ and runtime folders as make
// package-* and make runtime would, with a manifest pinning them.
func fakeFeedInputs(t *testing.T) (c feedConfig, log *bytes.Buffer, pub ed25519.PublicKey) {
	t.Helper()
	root := t.TempDir()
	w := func(p, s string) {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dist := filepath.Join(root, "dist")
	w(filepath.Join(dist, "studio-worker-0.3.0-linux-amd64.tar.xz"), "tarball 0.3.0")
	w(filepath.Join(dist, "studio-worker-0.2.0-linux-amd64.tar.xz"), "tarball 0.2.0")
	w(filepath.Join(dist, "studio-worker_0.3.0_amd64.deb"), "deb")
	w(filepath.Join(dist, "studio-worker-vulkan_0.3.0_amd64.deb"), "add-on")
	w(filepath.Join(dist, "StudioWorker-Setup-0.3.0.exe"), "setup")
	w(filepath.Join(dist, "studio-worker-latest-linux-amd64.tar.xz"), "no version")
	llama := filepath.Join(root, "runtime", "llama")
	w(filepath.Join(llama, "linux-x64", "libllama.v1.so"), "llama cpu")
	w(filepath.Join(llama, "linux-x64", "libggml-base.so"), "ggml base")
	w(filepath.Join(llama, "win-x64", "llama-win.txt"), "llama win")
	sd := filepath.Join(root, "runtime", "sd")
	w(filepath.Join(sd, "linux-x64", "libstable-diffusion.so"), "sd cpu")
	manifest := []Variant{
		{Name: "linux-x64", OS: "linux", Arch: "amd64", Accel: "cpu", NPM: "@x/linux-x64", LlamaCpp: "v0.5.0",
			Files: []File{{"libllama.v1.so", sum([]byte("llama cpu"))}, {"libggml-base.so", sum([]byte("ggml base"))}},
			Links: map[string]string{"libllama.so": "libllama.v1.so"}},
		{Name: "linux-x64-cuda", OS: "linux", Arch: "amd64", Accel: "cuda", MinDriver: "580.65.06", NPM: "@x/linux-x64-cuda", LlamaCpp: "v0.5.0",
			Files: []File{{"libggml-cuda.so", sum([]byte("not fetched"))}}},
		{Name: "win-x64", OS: "windows", Arch: "amd64", Accel: "cpu", NPM: "@x/win-x64", LlamaCpp: "v0.4.0",
			Files: []File{{"llama-win.txt", sum([]byte("llama win"))}}},
		{Name: "sd-linux-x64", OS: "linux", Arch: "amd64", Accel: "cpu", SDCpp: "master-1-abc",
			Files: []File{{"libstable-diffusion.so", sum([]byte("sd cpu"))}}},
	}
	mb, _ := json.Marshal(manifest)
	w(filepath.Join(root, "runtimes.json"), string(mb))

	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pemBytes, _ := release.MarshalPrivateKey(priv)
	keyFile := filepath.Join(root, "key.pem")
	if err := os.WriteFile(keyFile, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	log = &bytes.Buffer{}
	c = feedConfig{
		Dist: dist, Out: filepath.Join(dist, "feed"), KeyFile: keyFile, Manifest: filepath.Join(root, "runtimes.json"),
		LlamaRoot: llama, SDRoot: sd, Generated: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), Log: log,
		trustedKeys: []ed25519.PublicKey{pub},
	}
	return c, log, pub
}

func TestBuildFeed(t *testing.T) {
	c, log, pub := fakeFeedInputs(t)
	srv := httptest.NewServer(http.FileServer(http.Dir(c.Out)))
	defer srv.Close()
	c.BaseURL = srv.URL + "/"
	if err := buildFeed(c); err != nil {
		t.Fatalf("%v\n%s", err, log)
	}
	for _, line := range []string{
		"left out studio-worker-vulkan_0.3.0_amd64.deb: not an app installer",
		`left out studio-worker-latest-linux-amd64.tar.xz: version "latest" is not semver`,
		"left out pack llama linux-x64-cuda: not on this machine",
		"fetch-runtime.sh linux-x64-cuda",
		"4 releases, 3 packs",
	} {
		if !strings.Contains(log.String(), line) {
			t.Errorf("log lacks %q:\n%s", line, log)
		}
	}

	// The app's own path: fetch over HTTP, verify, download, unpack.
	m, err := release.Fetch(context.Background(), srv.Client(), srv.URL+"/feed.json", []ed25519.PublicKey{pub})
	if err != nil {
		t.Fatal(err)
	}
	rs := m.ReleasesFor("linux", "amd64", "tar.xz")
	if len(rs) != 2 || rs[0].Version != "0.3.0" || rs[1].Version != "0.2.0" {
		t.Fatalf("tar.xz releases: %+v", rs)
	}
	if w := m.ReleasesFor("windows", "amd64", "nsis"); len(w) != 1 || w[0].URL != srv.URL+"/StudioWorker-Setup-0.3.0.exe" {
		t.Fatalf("windows release: %+v", w)
	}
	dl := t.TempDir()
	if err := release.Download(context.Background(), srv.Client(), rs[0].Artifact, filepath.Join(dl, "app.tar.xz"), nil); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dl, "app.tar.xz")); string(b) != "tarball 0.3.0" {
		t.Fatalf("downloaded %q", b)
	}

	packs := map[string]release.Pack{}
	for _, p := range m.Packs {
		packs[p.Runtime+" "+p.Variant] = p
	}
	lp, ok := packs["llama linux-x64"]
	if !ok || lp.Format != "tar.xz" || lp.Backend != "cpu" || lp.Version != "v0.5.0" || lp.OS != "linux" {
		t.Fatalf("llama pack: %+v", lp)
	}
	if wp := packs["llama win-x64"]; wp.Format != "zip" || wp.OS != "windows" {
		t.Fatalf("windows pack: %+v", wp)
	}
	if sp := packs["sd linux-x64"]; sp.Version != "master-1-abc" || sp.Format != "tar.xz" {
		t.Fatalf("sd pack: %+v", sp)
	}
	for key, p := range packs {
		arch := filepath.Join(dl, p.Variant+"."+p.Format)
		if err := release.Download(context.Background(), srv.Client(), p.Artifact, arch, nil); err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		dir := filepath.Join(dl, "runtimes", p.Runtime, p.Variant)
		if err := release.Unpack(arch, p.Format, dir); err != nil {
			t.Fatalf("%s: %v", key, err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(dl, "runtimes", "llama", "linux-x64", "libllama.so")); err != nil || string(b) != "llama cpu" {
		t.Fatalf("unpacked link libllama.so: %q %v", b, err)
	}
	if b, _ := os.ReadFile(filepath.Join(dl, "runtimes", "llama", "win-x64", "llama-win.txt")); string(b) != "llama win" {
		t.Fatalf("unpacked windows pack: %q", b)
	}

	// The same runtime files make byte-identical packs (fixed names, times,
	// owners), however much later the feed is rebuilt.
	first := lp.SHA256
	c.Out = filepath.Join(t.TempDir(), "feed2")
	c.Generated = c.Generated.Add(49 * time.Hour)
	if err := buildFeed(c); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(c.Out, "feed.json"))
	m2, err := release.Verify(b, []ed25519.PublicKey{pub})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range m2.Packs {
		if p.Variant == "linux-x64" && p.Runtime == "llama" && p.SHA256 != first {
			t.Fatalf("rebuilt pack differs: %s vs %s", p.SHA256, first)
		}
	}
}

func TestBuildFeedRefuses(t *testing.T) {
	cases := []struct {
		name   string
		change func(c *feedConfig)
		line   string
	}{
		{"missing key", func(c *feedConfig) { c.KeyFile = filepath.Join(t.TempDir(), "nope.key") }, "feed-keygen"},
		{"untrusted key", func(c *feedConfig) { c.trustedKeys = nil }, "not one the app trusts"},
		{"no base URL", func(c *feedConfig) { c.BaseURL = "" }, "FEED_BASE_URL"},
		{"plain http base", func(c *feedConfig) { c.BaseURL = "http://downloads.example.org" }, "not loopback"},
		{"changed runtime file", func(c *feedConfig) {
			os.WriteFile(filepath.Join(c.LlamaRoot, "linux-x64", "libggml-base.so"), []byte("tampered"), 0o644)
		}, "does not match the manifest"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, _, _ := fakeFeedInputs(t)
			c.BaseURL = "https://downloads.example.org/studio-worker"
			// A feed built before must survive a refused build.
			os.MkdirAll(c.Out, 0o755)
			os.WriteFile(filepath.Join(c.Out, "feed.json"), []byte("old"), 0o644)
			tc.change(&c)
			err := buildFeed(c)
			if err == nil || !strings.Contains(err.Error(), tc.line) {
				t.Fatalf("buildFeed = %v; want it to say %q", err, tc.line)
			}
			if b, _ := os.ReadFile(filepath.Join(c.Out, "feed.json")); string(b) != "old" {
				t.Fatal("the previous feed was replaced")
			}
			ents, _ := os.ReadDir(filepath.Dir(c.Out))
			for _, e := range ents {
				if strings.HasPrefix(e.Name(), ".feed.build") {
					t.Fatalf("left behind %s", e.Name())
				}
			}
		})
	}
	// -any-key lets tests sign with their own key.
	c, _, _ := fakeFeedInputs(t)
	c.BaseURL, c.trustedKeys, c.AnyKey = "https://downloads.example.org", nil, true
	if err := buildFeed(c); err != nil {
		t.Fatal(err)
	}
}

func TestFeedKeygen(t *testing.T) {
	p := filepath.Join(t.TempDir(), "keys", "feed.key")
	var out bytes.Buffer
	if err := cmdFeedKeygen([]string{"-out", p}, &out); err != nil {
		t.Fatal(err)
	}
	k, err := release.ReadPrivateKeyFile(p)
	if err != nil {
		t.Fatal(err)
	}
	pub := k.Public().(ed25519.PublicKey)
	if !strings.Contains(out.String(), release.EncodePublicKey(pub)) || !strings.Contains(out.String(), release.KeyID(pub)) {
		t.Fatalf("keygen output lacks the public key or its id:\n%s", out.String())
	}
	if strings.Contains(out.String(), "PRIVATE") {
		t.Fatal("keygen printed the private key")
	}
	st, _ := os.Stat(p)
	dst, _ := os.Stat(filepath.Dir(p))
	if st.Mode().Perm() != 0o600 || dst.Mode().Perm() != 0o700 {
		t.Fatalf("modes %v %v", st.Mode(), dst.Mode())
	}
	if err := cmdFeedKeygen([]string{"-out", p}, &out); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("second keygen over the same file: %v", err)
	}
}
