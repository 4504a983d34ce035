package release

import (
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"strings"
)

// releaseKeys are the maintainers' Ed25519 public keys (base64 of the 32
// raw bytes), made once with `go run ./packaging/pkgtool feed-keygen`. The
// private halves never enter the repository (README: "Releases and the
// signed feed"). Two entries are allowed while a key is rotated: ship a
// build that trusts old and new, sign feeds with both for a while, then
// drop the old one.
var releaseKeys = []string{
	// key id a199252102fda7e0, made 2026-12-01; private half held by the
	// maintainers (default place: ~/.config/studio-worker-release/feed-ed25519.key).
	"EbdNJj6fxRAmrQl4uqpFuxjVcTWOGZCgFkUrj779wPg=",
}

// testKey is empty in every release build. Tests that build a real binary
// and serve it a feed signed by a key they made (the update helper's end to
// end tests) set it at link time:
//
//	go build -ldflags "-X github.com/minisgg/studio-worker/release.testKey=<base64 public key>"
//
// Why this is safe: it is not an input at run time (no setting, flag or
// environment variable can add a key); only whoever builds the binary can
// set it, and whoever builds the binary can already make it do anything.
// The Makefile's release flags (PKG_LDFLAGS) never set it, and a build that
// trusts a test key says so (TestKeyID, `studio-worker feed verify`).
var testKey string

// DefaultFeedURL is the release feed an installed app reads when the
// update_feed_url setting is empty: a file under the hosted studio.
const DefaultFeedURL = "https://studio.minis.gg/releases/feed.json"

// FeedURL returns setting (the update_feed_url setting, trimmed) or
// DefaultFeedURL when it is empty.
func FeedURL(setting string) string {
	if s := strings.TrimSpace(setting); s != "" {
		return s
	}
	return DefaultFeedURL
}

// TrustedKeys are the keys Fetch and Verify callers pass by default: the
// release keys, plus the test key in test builds. Code that verifies feeds
// takes the keys as a parameter so that unit tests inject their own.
var TrustedKeys = trustedKeys(releaseKeys, testKey)

// TestKeyID is the KeyID of the link-time test key, "" in release builds.
func TestKeyID() string {
	if testKey == "" {
		return ""
	}
	return KeyID(TrustedKeys[len(TrustedKeys)-1])
}

func trustedKeys(release []string, test string) []ed25519.PublicKey {
	var out []ed25519.PublicKey
	for _, s := range release {
		k, err := ParsePublicKey(s)
		if err != nil {
			panic("release: compiled-in release key: " + err.Error())
		}
		out = append(out, k)
	}
	if test != "" {
		k, err := ParsePublicKey(test)
		if err != nil {
			// Only a test build sets it; failing loudly beats a test that
			// silently trusts nothing.
			panic("release: the -ldflags test key: " + err.Error())
		}
		out = append(out, k)
	}
	return out
}

// ParsePublicKey decodes an Ed25519 public key written as base64 (standard,
// padded) of its 32 raw bytes, the form releaseKeys, the test key and
// `pkgtool feed-keygen` use.
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("public key %q is not base64: %w", s, err)
	}
	if len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("public key is %d bytes, an Ed25519 public key is %d", len(b), ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(b), nil
}

// EncodePublicKey is ParsePublicKey's inverse.
func EncodePublicKey(k ed25519.PublicKey) string {
	return base64.StdEncoding.EncodeToString(k)
}
