// Package release reads and writes Studio Worker's signed release feed: one
// JSON manifest that lists the app's releases (per OS, architecture and
// install format) and the native runtime packs (llama.cpp and
// stable-diffusion.cpp, per OS, architecture and backend), each with its URL,
// exact size and sha256 (issue #14).
//
// The file served at the feed URL is a signed envelope:
//
//	{"signed": "<base64 of the manifest's exact JSON bytes>",
//	 "signatures": [{"keyId": "<KeyID of the signing key>", "sig": "<base64 Ed25519 signature over those bytes>"}]}
//
// Verify checks a signature by one of the trusted keys over the exact bytes
// first and only then parses them, so no byte an attacker wrote reaches the
// JSON decoder. Download then fetches one artifact the manifest names,
// checking its size and sha256, and Unpack extracts a verified archive.
//
// The package is a leaf: it imports no app, studio or engine package.
package release

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/Masterminds/semver/v3"
)

// SchemaVersion is the only manifest schema this build understands.
const SchemaVersion = 1

// MaxFeedBytes bounds a feed envelope (Fetch reads no more; Verify refuses
// more): a real feed is a few kilobytes.
const MaxFeedBytes = 4 << 20

// Errors a caller branches on (errors.Is). Every error from this package
// also says in words what was wrong.
var (
	// ErrNotJSON: the envelope, or the signed manifest inside it, is not JSON
	// of the expected shape.
	ErrNotJSON = errors.New("the release feed is not valid JSON")
	// ErrBadSignature: no signature in the envelope verifies with a trusted key.
	ErrBadSignature = errors.New("the release feed's signature does not verify with a trusted key")
	// ErrUnsupportedSchema: the manifest's schema is not SchemaVersion.
	ErrUnsupportedSchema = errors.New("the release feed uses a schema this version does not understand")
	// ErrInvalidManifest: the manifest is signed and parses, but an entry is
	// malformed (bad version, URL, size or sha256).
	ErrInvalidManifest = errors.New("the release feed has a malformed entry")
	// ErrInsecureURL: a URL is neither https nor http on a loopback address.
	ErrInsecureURL = errors.New("only https URLs (or http on loopback) are allowed")
	// ErrSizeMismatch: a download was shorter (truncated) or longer than the
	// size the manifest gives.
	ErrSizeMismatch = errors.New("the download's size does not match the feed")
	// ErrSHA256Mismatch: a download's sha256 differs from the manifest's.
	ErrSHA256Mismatch = errors.New("the download's sha256 does not match the feed")
	// ErrUnsafeArchive: an archive entry would land outside the target folder
	// (absolute path, "..", a link leaving it) or is a device, FIFO or other
	// special file.
	ErrUnsafeArchive = errors.New("the archive holds an unsafe entry")
	// ErrTooLarge: a feed or an archive's content is bigger than its limit.
	ErrTooLarge = errors.New("bigger than the allowed limit")
)

// Manifest is the signed content of the feed.
type Manifest struct {
	Schema    int       `json:"schema"` // SchemaVersion
	Generated time.Time `json:"generated"`
	Releases  []Release `json:"releases"` // the app
	Packs     []Pack    `json:"packs"`    // native runtimes
}

// Artifact is one downloadable file.
type Artifact struct {
	URL    string `json:"url"`    // https, or http on loopback only
	Size   int64  `json:"size"`   // bytes, exact
	SHA256 string `json:"sha256"` // lowercase hex, 64 characters
}

// Release is one build of the app for one OS, architecture and install format.
type Release struct {
	Version string `json:"version"` // semver without "v", e.g. "0.2.0"
	OS      string `json:"os"`      // GOOS
	Arch    string `json:"arch"`    // GOARCH
	Format  string `json:"format"`  // "tar.xz" | "deb" | "rpm" | "nsis" | "dmg"
	Notes   string `json:"notes,omitempty"`
	Artifact
}

// Pack is one native runtime build, packed as one archive.
type Pack struct {
	Runtime string `json:"runtime"` // "llama" | "sd"
	Version string `json:"version"` // the runtime's own version (llama.cpp release, sd.cpp commit)
	OS      string `json:"os"`      // GOOS
	Arch    string `json:"arch"`    // GOARCH
	Backend string `json:"backend"` // "cpu" | "vulkan" | "cuda" | "metal"
	// MinDriver is the lowest NVIDIA driver version a CUDA pack runs on
	// ("525.60"); "" otherwise.
	MinDriver string `json:"minDriver,omitempty"`
	Variant   string `json:"variant"` // the folder name the runtime lookup uses, e.g. "linux-x64-vulkan"
	Format    string `json:"format"`  // "tar.xz" | "zip"
	Artifact
}

// Envelope is the JSON served at the feed URL.
type Envelope struct {
	Signed     string      `json:"signed"` // base64 (standard, padded) of the manifest's JSON bytes
	Signatures []Signature `json:"signatures"`
}

// Signature is one Ed25519 signature over the envelope's signed bytes.
type Signature struct {
	KeyID string `json:"keyId"` // KeyID of the signing key
	Sig   string `json:"sig"`   // base64 (standard, padded) of the 64-byte signature
}

// KeyID names a public key in an envelope: the first 8 bytes of
// sha256(pub), as 16 lowercase hex characters.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// Sign marshals m and returns the signed envelope (indented JSON), with one
// signature per key in order. Signing with the old and the new key during a
// key rotation lets builds that trust either one verify the same feed.
// (Compatible extension of the shared API: Sign(m, key) still works.)
func Sign(m *Manifest, keys ...ed25519.PrivateKey) ([]byte, error) {
	if m == nil {
		return nil, errors.New("release: Sign needs a manifest")
	}
	if len(keys) == 0 {
		return nil, errors.New("release: Sign needs at least one private key")
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	payload, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("release: encoding the manifest: %w", err)
	}
	env := Envelope{Signed: base64.StdEncoding.EncodeToString(payload)}
	for i, k := range keys {
		if len(k) != ed25519.PrivateKeySize {
			return nil, fmt.Errorf("release: signing key %d is %d bytes, not an Ed25519 private key (%d bytes)", i+1, len(k), ed25519.PrivateKeySize)
		}
		pub := k.Public().(ed25519.PublicKey)
		env.Signatures = append(env.Signatures, Signature{
			KeyID: KeyID(pub),
			Sig:   base64.StdEncoding.EncodeToString(ed25519.Sign(k, payload)),
		})
	}
	out, err := json.MarshalIndent(env, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

// Verify checks envelope's signatures against trusted and, only when one of
// them verifies the exact signed bytes, parses and validates the manifest.
// Errors: ErrTooLarge, ErrNotJSON (envelope or manifest), ErrBadSignature
// (no trusted key, no signature by a trusted key, or one that does not
// verify), ErrUnsupportedSchema, ErrInvalidManifest.
func Verify(envelope []byte, trusted []ed25519.PublicKey) (*Manifest, error) {
	if len(envelope) > MaxFeedBytes {
		return nil, fmt.Errorf("%w: the feed is %d bytes (limit %d)", ErrTooLarge, len(envelope), MaxFeedBytes)
	}
	var env Envelope
	if err := json.Unmarshal(envelope, &env); err != nil {
		return nil, fmt.Errorf("%w: the envelope: %v", ErrNotJSON, err)
	}
	if env.Signed == "" {
		return nil, fmt.Errorf("%w: the envelope has no \"signed\" field", ErrNotJSON)
	}
	payload, err := base64.StdEncoding.DecodeString(env.Signed)
	if err != nil {
		return nil, fmt.Errorf("%w: \"signed\" is not base64: %v", ErrNotJSON, err)
	}
	if err := verifySignatures(payload, env.Signatures, trusted); err != nil {
		return nil, err
	}
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(payload))
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: the signed manifest: %v", ErrNotJSON, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: the signed manifest has data after its end", ErrNotJSON)
	}
	if m.Schema != SchemaVersion {
		return nil, fmt.Errorf("%w: schema %d (this version reads schema %d; a newer Studio Worker may be needed)", ErrUnsupportedSchema, m.Schema, SchemaVersion)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

func verifySignatures(payload []byte, sigs []Signature, trusted []ed25519.PublicKey) error {
	if len(trusted) == 0 {
		return fmt.Errorf("%w: this build trusts no release key", ErrBadSignature)
	}
	if len(sigs) == 0 {
		return fmt.Errorf("%w: the feed is not signed", ErrBadSignature)
	}
	var seen []string
	for _, s := range sigs {
		seen = append(seen, s.KeyID)
		raw, err := base64.StdEncoding.DecodeString(s.Sig)
		if err != nil || len(raw) != ed25519.SignatureSize {
			continue
		}
		for _, k := range trusted {
			if len(k) == ed25519.PublicKeySize && KeyID(k) == s.KeyID && ed25519.Verify(k, payload, raw) {
				return nil
			}
		}
	}
	var ids []string
	for _, k := range trusted {
		if len(k) == ed25519.PublicKeySize {
			ids = append(ids, KeyID(k))
		}
	}
	return fmt.Errorf("%w: signed by key(s) %s; trusted: %s", ErrBadSignature, strings.Join(seen, ", "), strings.Join(ids, ", "))
}

// Validate checks every entry: versions parse as semver (app releases), each
// artifact has an allowed URL, a positive size and a 64-character lowercase
// hex sha256, and each entry names its OS, architecture and format. Unknown
// formats and backends are allowed (a newer feed may add some; callers pick
// the ones they know). Errors wrap ErrInvalidManifest or ErrUnsupportedSchema.
func (m *Manifest) Validate() error {
	if m.Schema != SchemaVersion {
		return fmt.Errorf("%w: schema %d (this version reads schema %d)", ErrUnsupportedSchema, m.Schema, SchemaVersion)
	}
	for i, r := range m.Releases {
		where := fmt.Sprintf("release %d (%s %s/%s %s)", i+1, r.Version, r.OS, r.Arch, r.Format)
		if _, err := ParseVersion(r.Version); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrInvalidManifest, where, err)
		}
		if r.OS == "" || r.Arch == "" || r.Format == "" {
			return fmt.Errorf("%w: %s: os, arch and format are required", ErrInvalidManifest, where)
		}
		if err := r.Artifact.Validate(); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrInvalidManifest, where, err)
		}
	}
	for i, p := range m.Packs {
		where := fmt.Sprintf("pack %d (%s %s %s)", i+1, p.Runtime, p.Variant, p.Version)
		if p.Runtime == "" || p.Version == "" || p.OS == "" || p.Arch == "" || p.Backend == "" || p.Variant == "" || p.Format == "" {
			return fmt.Errorf("%w: %s: runtime, version, os, arch, backend, variant and format are required", ErrInvalidManifest, where)
		}
		if strings.ContainsAny(p.Variant, `/\`) || p.Variant == "." || p.Variant == ".." {
			return fmt.Errorf("%w: %s: variant %q is not a plain folder name", ErrInvalidManifest, where, p.Variant)
		}
		if err := p.Artifact.Validate(); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrInvalidManifest, where, err)
		}
	}
	return nil
}

// Validate checks a's URL (CheckURL), size (positive) and sha256 (64
// lowercase hex characters).
func (a Artifact) Validate() error {
	if err := CheckURL(a.URL); err != nil {
		return err
	}
	if a.Size <= 0 {
		return fmt.Errorf("size %d is not a positive number of bytes", a.Size)
	}
	if len(a.SHA256) != sha256.Size*2 || strings.ToLower(a.SHA256) != a.SHA256 {
		return fmt.Errorf("sha256 %q is not 64 lowercase hex characters", a.SHA256)
	}
	if _, err := hex.DecodeString(a.SHA256); err != nil {
		return fmt.Errorf("sha256 %q is not 64 lowercase hex characters", a.SHA256)
	}
	return nil
}

// CheckURL allows https URLs, and http ones only on a loopback host
// ("localhost", 127.0.0.0/8, ::1) for tests and local mirrors. Errors wrap
// ErrInsecureURL.
func CheckURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%w: %q is not a URL: %v", ErrInsecureURL, raw, err)
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return fmt.Errorf("%w: %q uses scheme %q", ErrInsecureURL, raw, u.Scheme)
	}
	if u.Host == "" {
		return fmt.Errorf("%w: %q has no host", ErrInsecureURL, raw)
	}
	if u.Scheme == "http" && !isLoopback(u.Hostname()) {
		return fmt.Errorf("%w: %s is plain http on a host that is not loopback", ErrInsecureURL, u.Redacted())
	}
	return nil
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ParseVersion parses an app version (semver 2.0, "0.2.0" or "0.2.0-rc.1";
// a leading "v" is refused so the feed has one spelling).
func ParseVersion(v string) (*semver.Version, error) {
	if strings.HasPrefix(v, "v") {
		return nil, fmt.Errorf("version %q: write it without the leading \"v\"", v)
	}
	sv, err := semver.StrictNewVersion(v)
	if err != nil {
		return nil, fmt.Errorf("version %q is not semver (major.minor.patch): %v", v, err)
	}
	return sv, nil
}

// CompareVersions compares two app versions by semver precedence: -1 when
// a < b, 0 when equal, +1 when a > b. Errors when either does not parse.
func CompareVersions(a, b string) (int, error) {
	va, err := ParseVersion(a)
	if err != nil {
		return 0, err
	}
	vb, err := ParseVersion(b)
	if err != nil {
		return 0, err
	}
	return va.Compare(vb), nil
}

// ReleasesFor returns the releases for goos/goarch in format (all formats
// when format is ""), newest version first. The manifest's versions were
// checked by Verify, so sorting cannot fail.
func (m *Manifest) ReleasesFor(goos, goarch, format string) []Release {
	var out []Release
	for _, r := range m.Releases {
		if r.OS == goos && r.Arch == goarch && (format == "" || r.Format == format) {
			out = append(out, r)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		c, err := CompareVersions(out[i].Version, out[j].Version)
		return err == nil && c > 0
	})
	return out
}

// PacksFor returns the packs of runtime ("llama" or "sd") built for
// goos/goarch, in feed order. Packs for another OS or architecture are never
// returned.
func (m *Manifest) PacksFor(runtime, goos, goarch string) []Pack {
	var out []Pack
	for _, p := range m.Packs {
		if p.Runtime == runtime && p.OS == goos && p.Arch == goarch {
			out = append(out, p)
		}
	}
	return out
}
