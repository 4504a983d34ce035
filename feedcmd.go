package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/minisgg/studio-worker/release"
	"github.com/minisgg/studio-worker/settings"
	"github.com/minisgg/studio-worker/studio"
)

// feedFetchTimeout bounds `feed verify`'s download of a feed (a few kB).
const feedFetchTimeout = time.Minute

// cmdFeed runs `studio-worker feed verify [--config DIR] [FILE|URL]`: it
// reads a release feed (a file, a URL, or by default the update_feed_url
// setting or release.DefaultFeedURL), checks its signature against the keys
// compiled into this build, and prints what it offers. Exit 1 when the
// feed is refused, with the reason on stderr; 2 for a bad command line.
func cmdFeed(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "verify" {
		fmt.Fprintln(stderr, "studio-worker feed: the only subcommand is verify: studio-worker feed verify [FILE|URL] (see `studio-worker help`)")
		return 2
	}
	fs := flag.NewFlagSet("feed verify", flag.ContinueOnError)
	configDir := fs.String("config", "", "settings folder (default: the user's config folder), for update_feed_url")
	var src string
	rest := args[1:]
	// One optional FILE|URL, before or after the flags.
	if len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		src, rest = rest[0], rest[1:]
	} else if n := len(rest); n > 0 && !strings.HasPrefix(rest[n-1], "-") && (n < 2 || rest[n-2] != "--config") {
		src, rest = rest[n-1], rest[:n-1]
	}
	if code, done := parseCommand(fs, rest, stdout, stderr); done {
		return code
	}
	fail := func(err error) int {
		fmt.Fprintln(stderr, "studio-worker feed verify: "+err.Error())
		return 1
	}
	if src == "" {
		src = release.FeedURL(savedFeedSetting(*configDir))
	}
	m, keyID, err := readFeed(src, release.TrustedKeys)
	if err != nil {
		return fail(err)
	}
	printFeed(stdout, src, keyID, m)
	return 0
}

// savedFeedSetting reads update_feed_url without writing anything (as
// `version --verbose` reads the settings): "" when unset or unreadable.
func savedFeedSetting(dir string) string {
	if dir == "" {
		dir, _ = settings.DefaultDir()
	}
	if dir == "" {
		return ""
	}
	var saved settings.Settings
	if data, err := os.ReadFile(settings.NewStore(dir).Path()); err == nil {
		_, _ = toml.Decode(string(data), &saved)
	}
	return saved.UpdateFeedURL
}

// readFeed verifies the feed at src (an http(s) URL or a file) and says
// which trusted key signed it.
func readFeed(src string, trusted []ed25519.PublicKey) (*release.Manifest, string, error) {
	var env []byte
	if strings.HasPrefix(src, "http://") || strings.HasPrefix(src, "https://") {
		if err := release.CheckURL(src); err != nil {
			return nil, "", err
		}
		ctx, cancel := context.WithTimeout(context.Background(), feedFetchTimeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
		if err != nil {
			return nil, "", err
		}
		// Redirects must pass the same URL rule as the first address.
		client := &http.Client{CheckRedirect: func(r *http.Request, via []*http.Request) error {
			if len(via) >= 10 {
				return errors.New("stopped after 10 redirects")
			}
			return release.CheckURL(r.URL.String())
		}}
		resp, err := client.Do(req)
		if err != nil {
			return nil, "", fmt.Errorf("fetching %s: %w", src, err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, "", fmt.Errorf("%s answered %s", src, resp.Status)
		}
		if env, err = io.ReadAll(io.LimitReader(resp.Body, release.MaxFeedBytes+1)); err != nil {
			return nil, "", fmt.Errorf("fetching %s: %w", src, err)
		}
	} else {
		st, err := os.Stat(src)
		if err != nil {
			return nil, "", err
		}
		if st.Size() > release.MaxFeedBytes {
			return nil, "", fmt.Errorf("%s: %w: %d bytes (limit %d)", src, release.ErrTooLarge, st.Size(), release.MaxFeedBytes)
		}
		if env, err = os.ReadFile(src); err != nil {
			return nil, "", err
		}
	}
	m, err := release.Verify(env, trusted)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", src, err)
	}
	for _, k := range trusted {
		if _, err := release.Verify(env, []ed25519.PublicKey{k}); err == nil {
			return m, release.KeyID(k), nil
		}
	}
	return nil, "", errors.New("internal: the feed verified but no single key did")
}

func printFeed(w io.Writer, src, keyID string, m *release.Manifest) {
	signer := "key " + keyID
	if keyID == release.TestKeyID() {
		signer += " (the test key this build was linked with)"
	}
	fmt.Fprintf(w, "feed %s: signature good (%s), schema %d, generated %s\n", src, signer, m.Schema, m.Generated.UTC().Format(time.RFC3339))
	for _, r := range m.Releases {
		fmt.Fprintf(w, "release %s %s/%s %s, %d bytes, sha256 %s\n  %s\n", r.Version, r.OS, r.Arch, r.Format, r.Size, r.SHA256, r.URL)
	}
	for _, p := range m.Packs {
		driver := ""
		if p.MinDriver != "" {
			driver = ", NVIDIA driver " + p.MinDriver + " or newer"
		}
		fmt.Fprintf(w, "pack %s %s (%s %s/%s %s%s) %s, %d bytes, sha256 %s\n  %s\n", p.Runtime, p.Variant, p.Version, p.OS, p.Arch, p.Backend, driver, p.Format, p.Size, p.SHA256, p.URL)
	}
	// What this build would take from it.
	var newest []string
	for _, r := range m.Releases {
		if r.OS != runtime.GOOS || r.Arch != runtime.GOARCH {
			continue
		}
		if c, err := release.CompareVersions(r.Version, studio.Version); err == nil && c > 0 {
			newest = append(newest, r.Version+" ("+r.Format+")")
		}
	}
	if len(newest) == 0 {
		fmt.Fprintf(w, "this build (%s %s/%s): no newer release in the feed\n", studio.Version, runtime.GOOS, runtime.GOARCH)
	} else {
		fmt.Fprintf(w, "this build (%s %s/%s): newer in the feed: %s\n", studio.Version, runtime.GOOS, runtime.GOARCH, strings.Join(newest, ", "))
	}
	if id := release.TestKeyID(); id != "" && id != keyID {
		fmt.Fprintf(w, "note: this build also trusts the test key %s (a test build, not a release)\n", id)
	}
}
