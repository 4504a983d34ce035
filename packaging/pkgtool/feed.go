package main

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/minisgg/studio-worker/release"
	"github.com/ulikunitz/xz"
)

// DefaultKeyFile is where `pkgtool feed-keygen` and `make feed` keep the
// release signing key by default: outside every checkout.
const DefaultKeyFile = "~/.config/studio-worker-release/feed-ed25519.key"

func expandHome(p string) string {
	if strings.HasPrefix(p, "~/") {
		if h, err := os.UserHomeDir(); err == nil {
			return filepath.Join(h, p[2:])
		}
	}
	return p
}

// cmdFeedKeygen makes a new Ed25519 signing key: the private half goes to
// -out (mode 0600, in a 0700 folder; an existing file is never replaced),
// the public half is printed for release/keys.go.
func cmdFeedKeygen(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("feed-keygen", flag.ExitOnError)
	out := fs.String("out", DefaultKeyFile, "file for the private key (PKCS#8 PEM)")
	_ = fs.Parse(args)
	path := expandHome(*out)
	if abs, err := filepath.Abs(path); err == nil {
		if top, err := exec.Command("git", "-C", filepath.Dir(abs), "rev-parse", "--show-toplevel").Output(); err == nil && len(top) > 0 {
			return fmt.Errorf("%s is inside the git checkout %s: keep the private key outside every repository", abs, strings.TrimSpace(string(top)))
		}
	}
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("%s already exists: refusing to replace a signing key (move it away first if you really mean to rotate)", path)
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	pemBytes, err := release.MarshalPrivateKey(priv)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(pemBytes); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "private key: %s (mode 0600; keep it out of every repository)\n", path)
	fmt.Fprintf(stdout, "public key:  %s\n", release.EncodePublicKey(pub))
	fmt.Fprintf(stdout, "key id:      %s\n", release.KeyID(pub))
	return nil
}

// feedConfig is what `pkgtool feed` reads.
type feedConfig struct {
	Dist        string // where make package-* left the installers
	Out         string // the feed folder to (re)create: feed.json and every file it names
	BaseURL     string // the URL Out will be served under
	KeyFile     string
	Manifest    string // packaging/runtimes.json
	LlamaRoot   string // fetched llama.cpp runtimes, one folder per variant
	SDRoot      string // stable-diffusion.cpp runtimes (install-sd-runtime.sh layout)
	AnyKey      bool   // sign with a key the app does not trust (tests)
	Generated   time.Time
	Notes       string
	Log         io.Writer
	trustedKeys []ed25519.PublicKey
}

func cmdFeed(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("feed", flag.ExitOnError)
	c := feedConfig{Log: stdout, trustedKeys: release.TrustedKeys}
	fs.StringVar(&c.Dist, "dist", "dist", "folder holding the installers from make package-*")
	fs.StringVar(&c.Out, "out", "dist/feed", "feed folder to create (replaced as a whole)")
	fs.StringVar(&c.BaseURL, "base-url", "", "URL the feed folder is served under (https; http on loopback for tests)")
	fs.StringVar(&c.KeyFile, "key", DefaultKeyFile, "Ed25519 signing key (PKCS#8 PEM, mode 0600)")
	fs.StringVar(&c.Manifest, "manifest", "packaging/runtimes.json", "runtime manifest")
	fs.StringVar(&c.LlamaRoot, "llama-runtimes", "runtime/llama", "fetched llama.cpp runtimes (one folder per variant)")
	fs.StringVar(&c.SDRoot, "sd-runtimes", "runtime/sd", "stable-diffusion.cpp runtimes (one folder per os-arch)")
	fs.BoolVar(&c.AnyKey, "any-key", false, "sign even with a key the app does not trust (tests only)")
	fs.StringVar(&c.Notes, "notes", "", "release notes for this version's entries")
	_ = fs.Parse(args)
	c.Generated = time.Now().UTC().Truncate(time.Second)
	if sde := os.Getenv("SOURCE_DATE_EPOCH"); sde != "" {
		var s int64
		if _, err := fmt.Sscan(sde, &s); err == nil {
			c.Generated = time.Unix(s, 0).UTC()
		}
	}
	return buildFeed(c)
}

// appPatterns name the installers make package-* leaves in dist/ (see
// packaging/linux/build.sh, windows/build.sh, macos/build.sh).
var appPatterns = []struct {
	re               *regexp.Regexp
	os, arch, format string
}{
	{regexp.MustCompile(`^studio-worker-(.+)-linux-amd64\.tar\.xz$`), "linux", "amd64", "tar.xz"},
	{regexp.MustCompile(`^studio-worker_(.+)_amd64\.deb$`), "linux", "amd64", "deb"},
	{regexp.MustCompile(`^StudioWorker-Setup-(.+)\.exe$`), "windows", "amd64", "nsis"},
	{regexp.MustCompile(`^StudioWorker-(.+)-macos-arm64\.dmg$`), "darwin", "arm64", "dmg"},
}

func buildFeed(c feedConfig) error {
	// Everything that can be refused cheaply is checked before any archive
	// is built: the key, the URL.
	keyPath := expandHome(c.KeyFile)
	key, err := release.ReadPrivateKeyFile(keyPath)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("no signing key at %s. The maintainers hold the release key: pass it with make feed FEED_KEY=<file>. "+
			"To start a new key (a fork, or a rotation): go run ./packaging/pkgtool feed-keygen -out %s, then add its public key to release/keys.go", keyPath, keyPath)
	}
	if err != nil {
		return fmt.Errorf("signing key: %w", err)
	}
	pub := key.Public().(ed25519.PublicKey)
	if !c.AnyKey && !containsKey(c.trustedKeys, pub) {
		return fmt.Errorf("the key in %s (id %s) is not one the app trusts (release/keys.go): installed apps would refuse this feed", keyPath, release.KeyID(pub))
	}
	if c.BaseURL == "" {
		return errors.New("no base URL: set FEED_BASE_URL (or -base-url) to the address dist/feed/ will be served under")
	}
	base := strings.TrimRight(c.BaseURL, "/")
	if err := release.CheckURL(base + "/feed.json"); err != nil {
		return fmt.Errorf("base URL: %w", err)
	}

	out := filepath.Clean(c.Out)
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(out), "."+filepath.Base(out)+".build-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}

	m := &release.Manifest{Schema: release.SchemaVersion, Generated: c.Generated}
	if err := addReleases(c, m, tmp, base); err != nil {
		return err
	}
	if err := addPacks(c, m, tmp, base); err != nil {
		return err
	}
	if len(m.Releases)+len(m.Packs) == 0 {
		return fmt.Errorf("nothing to publish: no installer in %s and no runtime pack available (run make package-linux / package-windows and make runtime first)", c.Dist)
	}
	env, err := release.Sign(m, key)
	if err != nil {
		return err
	}
	// Check what was written the way the app will.
	if _, err := release.Verify(env, []ed25519.PublicKey{pub}); err != nil {
		return fmt.Errorf("the feed just built does not verify: %w", err)
	}
	if err := os.WriteFile(filepath.Join(tmp, "feed.json"), env, 0o644); err != nil {
		return err
	}
	if err := os.RemoveAll(out); err != nil {
		return err
	}
	if err := os.Rename(tmp, out); err != nil {
		return err
	}
	fmt.Fprintf(c.Log, "feed: %s/feed.json signed by key %s: %d releases, %d packs; upload the folder %s to %s/\n",
		out, release.KeyID(pub), len(m.Releases), len(m.Packs), out, base)
	return nil
}

func containsKey(ks []ed25519.PublicKey, k ed25519.PublicKey) bool {
	for _, t := range ks {
		if t.Equal(k) {
			return true
		}
	}
	return false
}

func addReleases(c feedConfig, m *release.Manifest, tmp, base string) error {
	ents, err := os.ReadDir(c.Dist)
	if errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(c.Log, "feed: no %s folder: no app releases (make package-linux / package-windows make them)\n", c.Dist)
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		name := e.Name()
		matched := false
		for _, p := range appPatterns {
			sm := p.re.FindStringSubmatch(name)
			if sm == nil {
				continue
			}
			matched = true
			if _, err := release.ParseVersion(sm[1]); err != nil {
				fmt.Fprintf(c.Log, "feed: left out %s: %v\n", name, err)
				break
			}
			a, err := publish(filepath.Join(c.Dist, name), tmp, name, base)
			if err != nil {
				return err
			}
			m.Releases = append(m.Releases, release.Release{Version: sm[1], OS: p.os, Arch: p.arch, Format: p.format, Notes: c.Notes, Artifact: a})
			fmt.Fprintf(c.Log, "feed: release %s %s/%s %s (%d bytes)\n", sm[1], p.os, p.arch, p.format, a.Size)
			break
		}
		if !matched && (strings.HasSuffix(name, ".deb") || strings.HasSuffix(name, ".exe") || strings.HasSuffix(name, ".tar.xz") || strings.HasSuffix(name, ".dmg")) {
			fmt.Fprintf(c.Log, "feed: left out %s: not an app installer the feed offers (add-on packages are installed beside the app)\n", name)
		}
	}
	sort.SliceStable(m.Releases, func(i, j int) bool {
		a, b := m.Releases[i], m.Releases[j]
		if a.OS+a.Arch+a.Format != b.OS+b.Arch+b.Format {
			return a.OS+a.Arch+a.Format < b.OS+b.Arch+b.Format
		}
		n, _ := release.CompareVersions(a.Version, b.Version)
		return n > 0
	})
	return nil
}

// publish puts src into the feed folder as name (a hard link when the disk
// allows, else a copy) and describes it.
func publish(src, dir, name, base string) (release.Artifact, error) {
	dst := filepath.Join(dir, name)
	if err := os.Link(src, dst); err != nil {
		if err := copyFile(src, dst, 0o644); err != nil {
			return release.Artifact{}, err
		}
	}
	return describe(dst, base+"/"+name)
}

func describe(path, url string) (release.Artifact, error) {
	f, err := os.Open(path)
	if err != nil {
		return release.Artifact{}, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return release.Artifact{}, err
	}
	return release.Artifact{URL: url, Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

// addPacks makes one archive per runtime variant of the manifest whose
// files are on this machine (verified against their pinned sha256 and laid
// out by stage, as the installers do); the others are left out with a line.
func addPacks(c feedConfig, m *release.Manifest, tmp, base string) error {
	vs, err := loadManifest(c.Manifest)
	if err != nil {
		return err
	}
	stageRoot := filepath.Join(tmp, ".stage")
	defer os.RemoveAll(stageRoot)
	for _, v := range vs {
		if err := v.check(); err != nil {
			return err
		}
		p := release.Pack{OS: v.OS, Arch: v.Arch, Backend: v.Accel, MinDriver: v.MinDriver}
		var src, fetchHint string
		switch {
		case v.SDCpp != "":
			p.Runtime, p.Version, p.Variant = "sd", v.SDCpp, strings.TrimPrefix(v.Name, "sd-")
			src = filepath.Join(c.SDRoot, p.Variant)
			fetchHint = fmt.Sprintf("packaging/install-sd-runtime.sh %s %s", v.Name, c.SDRoot)
		case v.NPM != "":
			p.Runtime, p.Version, p.Variant = "llama", v.LlamaCpp, v.Name
			src = filepath.Join(c.LlamaRoot, v.Name)
			fetchHint = fmt.Sprintf("packaging/fetch-runtime.sh %s %s", v.Name, c.LlamaRoot)
		default:
			fmt.Fprintf(c.Log, "feed: left out runtime %s: the manifest says neither its npm package nor its stable-diffusion.cpp release\n", v.Name)
			continue
		}
		staged := filepath.Join(stageRoot, v.Name)
		if err := stage(v, src, staged); err != nil {
			var miss *MissingError
			if errors.As(err, &miss) {
				fmt.Fprintf(c.Log, "feed: left out pack %s %s: not on this machine (%s is missing; %s fetches it)\n", p.Runtime, v.Name, miss.Path, fetchHint)
				continue
			}
			return err
		}
		p.Format = "tar.xz"
		if v.OS == "windows" {
			p.Format = "zip"
		}
		name := fmt.Sprintf("%s-%s-%s.%s", p.Runtime, p.Variant, p.Version, p.Format)
		dst := filepath.Join(tmp, "packs", name)
		if err := writeArchive(staged, dst, p.Format, packEpoch); err != nil {
			return fmt.Errorf("pack %s: %w", name, err)
		}
		a, err := describe(dst, base+"/packs/"+name)
		if err != nil {
			return err
		}
		p.Artifact = a
		m.Packs = append(m.Packs, p)
		fmt.Fprintf(c.Log, "feed: pack %s %s (%s, %s) %d bytes\n", p.Runtime, p.Variant, p.Backend, p.Version, a.Size)
	}
	return nil
}

// packEpoch is the time every file in a pack carries: a pack's bytes
// depend on its runtime files alone, so rebuilding the feed later gives the
// same sha256 and installed apps see nothing new to download.
var packEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// writeArchive packs the files of dir (flat: a runtime folder) into dst,
// in name order with fixed times and owners, so the same runtime always
// makes the same archive. Links stay links in tar.xz; zip (Windows) holds
// regular files only.
func writeArchive(dir, dst, format string, mtime time.Time) (err error) {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].Name() < ents[j].Name() })
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	bw := bufio.NewWriterSize(f, 1<<20)
	switch format {
	case "tar.xz":
		err = writeTarXZ(bw, dir, ents, mtime)
	case "zip":
		err = writeZip(bw, dir, ents, mtime)
	default:
		err = fmt.Errorf("unknown pack format %q", format)
	}
	if err != nil {
		return err
	}
	return bw.Flush()
}

// xzCompressor compresses with the xz program when it is on PATH (as
// packaging/linux/build.sh does: one thread, level 6), which is about ten
// times faster than the pure-Go writer; the Go writer is the fallback.
func xzCompressor(w io.Writer) (io.WriteCloser, error) {
	if path, err := exec.LookPath("xz"); err == nil {
		cmd := exec.Command(path, "-T1", "-6", "-c")
		cmd.Stdout = w
		var stderr strings.Builder
		cmd.Stderr = &stderr
		in, err := cmd.StdinPipe()
		if err != nil {
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		return &xzProcess{in: in, cmd: cmd, stderr: &stderr}, nil
	}
	return xz.NewWriter(w)
}

type xzProcess struct {
	in     io.WriteCloser
	cmd    *exec.Cmd
	stderr *strings.Builder
}

func (p *xzProcess) Write(b []byte) (int, error) { return p.in.Write(b) }

func (p *xzProcess) Close() error {
	cerr := p.in.Close()
	if err := p.cmd.Wait(); err != nil {
		return fmt.Errorf("xz: %v %s", err, strings.TrimSpace(p.stderr.String()))
	}
	return cerr
}

func writeTarXZ(w io.Writer, dir string, ents []fs.DirEntry, mtime time.Time) (err error) {
	zw, err := xzCompressor(w)
	if err != nil {
		return err
	}
	defer func() {
		// Always reap the compressor; its error matters only when
		// everything before went well.
		if cerr := zw.Close(); err == nil {
			err = cerr
		}
	}()
	tw := tar.NewWriter(zw)
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		h := &tar.Header{Name: e.Name(), ModTime: mtime, Uid: 0, Gid: 0, Format: tar.FormatPAX}
		switch {
		case e.Type()&fs.ModeSymlink != 0:
			t, err := os.Readlink(p)
			if err != nil {
				return err
			}
			h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, t, 0o777
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
		case e.Type().IsRegular():
			st, err := os.Stat(p)
			if err != nil {
				return err
			}
			h.Typeflag, h.Size, h.Mode = tar.TypeReg, st.Size(), 0o644
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
			if err := copyInto(tw, p); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s is not a file or a link", p)
		}
	}
	return tw.Close()
}

func writeZip(w io.Writer, dir string, ents []fs.DirEntry, mtime time.Time) error {
	zw := zip.NewWriter(w)
	for _, e := range ents {
		if !e.Type().IsRegular() {
			return fmt.Errorf("%s: a Windows pack holds regular files only", e.Name())
		}
		h := &zip.FileHeader{Name: e.Name(), Method: zip.Deflate, Modified: mtime}
		h.SetMode(0o644)
		fw, err := zw.CreateHeader(h)
		if err != nil {
			return err
		}
		if err := copyInto(fw, filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return zw.Close()
}

func copyInto(w io.Writer, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(w, f)
	return err
}
