package release

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func newKey(t *testing.T) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

const sha0 = "0000000000000000000000000000000000000000000000000000000000000000"

func sampleManifest() *Manifest {
	return &Manifest{
		Schema:    SchemaVersion,
		Generated: time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC),
		Releases: []Release{
			{Version: "0.2.0", OS: "linux", Arch: "amd64", Format: "tar.xz", Artifact: Artifact{URL: "https://example.org/sw-0.2.0.tar.xz", Size: 10, SHA256: sha0}},
			{Version: "0.10.0", OS: "linux", Arch: "amd64", Format: "tar.xz", Artifact: Artifact{URL: "https://example.org/sw-0.10.0.tar.xz", Size: 10, SHA256: sha0}},
			{Version: "0.10.0-rc.1", OS: "linux", Arch: "amd64", Format: "tar.xz", Artifact: Artifact{URL: "https://example.org/sw-0.10.0-rc.1.tar.xz", Size: 10, SHA256: sha0}},
			{Version: "0.10.0", OS: "windows", Arch: "amd64", Format: "nsis", Artifact: Artifact{URL: "https://example.org/setup.exe", Size: 10, SHA256: sha0}},
		},
		Packs: []Pack{
			{Runtime: "llama", Version: "v0.5.0", OS: "linux", Arch: "amd64", Backend: "cuda", MinDriver: "525.60", Variant: "linux-x64-cuda", Format: "tar.xz", Artifact: Artifact{URL: "http://127.0.0.1:8080/p.tar.xz", Size: 1, SHA256: sha0}},
			{Runtime: "llama", Version: "v0.4.0", OS: "windows", Arch: "amd64", Backend: "cpu", Variant: "win-x64", Format: "zip", Artifact: Artifact{URL: "https://example.org/p.zip", Size: 1, SHA256: sha0}},
		},
	}
}

// envelopeOf signs arbitrary payload bytes the way Sign does, so tests can
// sign what Sign itself would refuse to produce.
func envelopeOf(t *testing.T, payload []byte, keys ...ed25519.PrivateKey) []byte {
	t.Helper()
	env := Envelope{Signed: base64.StdEncoding.EncodeToString(payload)}
	for _, k := range keys {
		env.Signatures = append(env.Signatures, Signature{KeyID: KeyID(k.Public().(ed25519.PublicKey)), Sig: base64.StdEncoding.EncodeToString(ed25519.Sign(k, payload))})
	}
	b, err := json.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSignVerifyRoundTrip(t *testing.T) {
	pub, priv := newKey(t)
	m := sampleManifest()
	env, err := Sign(m, priv)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Verify(env, []ed25519.PublicKey{pub})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Releases) != 4 || len(got.Packs) != 2 || !got.Generated.Equal(m.Generated) || got.Packs[0].MinDriver != "525.60" {
		t.Fatalf("round trip changed the manifest: %+v", got)
	}
	var e Envelope
	if err := json.Unmarshal(env, &e); err != nil || len(e.Signatures) != 1 || len(e.Signatures[0].KeyID) != 16 {
		t.Fatalf("envelope shape: %s (%v)", env, err)
	}
}

func TestVerifyRefuses(t *testing.T) {
	pub, priv := newKey(t)
	otherPub, otherPriv := newKey(t)
	good, err := Sign(sampleManifest(), priv)
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(sampleManifest())

	tampered := func() []byte {
		var e Envelope
		_ = json.Unmarshal(good, &e)
		b, _ := base64.StdEncoding.DecodeString(e.Signed)
		i := strings.Index(string(b), "0.10.0")
		b[i+2] = '9' // 0.10.0 -> 0.90.0: one byte
		e.Signed = base64.StdEncoding.EncodeToString(b)
		out, _ := json.Marshal(e)
		return out
	}()
	badSigBytes := func() []byte {
		var e Envelope
		_ = json.Unmarshal(good, &e)
		s, _ := base64.StdEncoding.DecodeString(e.Signatures[0].Sig)
		s[0] ^= 1
		e.Signatures[0].Sig = base64.StdEncoding.EncodeToString(s)
		out, _ := json.Marshal(e)
		return out
	}()
	// A signature by another key, under the trusted key's id.
	spoofedID := func() []byte {
		e := Envelope{Signed: base64.StdEncoding.EncodeToString(payload), Signatures: []Signature{{KeyID: KeyID(pub), Sig: base64.StdEncoding.EncodeToString(ed25519.Sign(otherPriv, payload))}}}
		out, _ := json.Marshal(e)
		return out
	}()
	schema2 := strings.Replace(string(payload), `"schema":1`, `"schema":2`, 1)
	badURL := strings.Replace(string(payload), "https://example.org/setup.exe", "http://example.org/setup.exe", 1)
	badSHA := strings.Replace(string(payload), sha0, strings.ToUpper("ab"+sha0[2:]), 1)
	badVersion := strings.Replace(string(payload), `"version":"0.2.0"`, `"version":"v0.2.0"`, 1)
	badVariant := strings.Replace(string(payload), `"variant":"win-x64"`, `"variant":"../x"`, 1)
	zeroSize := strings.Replace(string(payload), `"size":10`, `"size":0`, 1)

	cases := []struct {
		name    string
		env     []byte
		trusted []ed25519.PublicKey
		want    error
		line    string
	}{
		{"tampered byte", tampered, []ed25519.PublicKey{pub}, ErrBadSignature, "does not verify"},
		{"flipped signature bit", badSigBytes, []ed25519.PublicKey{pub}, ErrBadSignature, "trusted: " + KeyID(pub)},
		{"wrong key", good, []ed25519.PublicKey{otherPub}, ErrBadSignature, "signed by key(s) " + KeyID(pub)},
		{"other key under trusted id", spoofedID, []ed25519.PublicKey{pub}, ErrBadSignature, ""},
		{"no trusted keys", good, nil, ErrBadSignature, "trusts no release key"},
		{"unsigned", envelopeOf(t, payload), []ed25519.PublicKey{pub}, ErrBadSignature, "not signed"},
		{"envelope not JSON", []byte("<html>502 Bad Gateway</html>"), []ed25519.PublicKey{pub}, ErrNotJSON, "envelope"},
		{"envelope without signed", []byte(`{"signatures":[]}`), []ed25519.PublicKey{pub}, ErrNotJSON, `no "signed"`},
		{"signed not base64", []byte(`{"signed":"%%%","signatures":[]}`), []ed25519.PublicKey{pub}, ErrNotJSON, "not base64"},
		{"manifest not JSON", envelopeOf(t, []byte("releases: none"), priv), []ed25519.PublicKey{pub}, ErrNotJSON, "signed manifest"},
		{"manifest with trailing data", envelopeOf(t, append(append([]byte{}, payload...), []byte(` {}`)...), priv), []ed25519.PublicKey{pub}, ErrNotJSON, "after its end"},
		{"unknown schema", envelopeOf(t, []byte(schema2), priv), []ed25519.PublicKey{pub}, ErrUnsupportedSchema, "schema 2"},
		{"http on a public host", envelopeOf(t, []byte(badURL), priv), []ed25519.PublicKey{pub}, ErrInvalidManifest, "not loopback"},
		{"uppercase sha256", envelopeOf(t, []byte(badSHA), priv), []ed25519.PublicKey{pub}, ErrInvalidManifest, "lowercase hex"},
		{"version with v", envelopeOf(t, []byte(badVersion), priv), []ed25519.PublicKey{pub}, ErrInvalidManifest, `without the leading "v"`},
		{"variant with a slash", envelopeOf(t, []byte(badVariant), priv), []ed25519.PublicKey{pub}, ErrInvalidManifest, "plain folder name"},
		{"zero size", envelopeOf(t, []byte(zeroSize), priv), []ed25519.PublicKey{pub}, ErrInvalidManifest, "positive"},
		{"too big", append([]byte(`{"signed":"`), make([]byte, MaxFeedBytes)...), []ed25519.PublicKey{pub}, ErrTooLarge, "limit"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := Verify(c.env, c.trusted)
			if !errors.Is(err, c.want) || m != nil {
				t.Fatalf("Verify = %v, %v; want %v", m, err, c.want)
			}
			if !strings.Contains(err.Error(), c.line) {
				t.Fatalf("error %q does not say %q", err, c.line)
			}
		})
	}
}

// A feed signed by the old and the new key verifies with either, which is
// how a key rotation keeps old installs updating.
func TestRotationTwoSignatures(t *testing.T) {
	oldPub, oldPriv := newKey(t)
	newPub, newPriv := newKey(t)
	env, err := Sign(sampleManifest(), oldPriv, newPriv)
	if err != nil {
		t.Fatal(err)
	}
	for _, trusted := range [][]ed25519.PublicKey{{oldPub}, {newPub}, {newPub, oldPub}} {
		if _, err := Verify(env, trusted); err != nil {
			t.Fatalf("trusted %d keys: %v", len(trusted), err)
		}
	}
}

func TestSignRefusesInvalid(t *testing.T) {
	_, priv := newKey(t)
	m := sampleManifest()
	m.Releases[0].SHA256 = "abc"
	if _, err := Sign(m, priv); !errors.Is(err, ErrInvalidManifest) {
		t.Fatalf("Sign of a bad manifest: %v", err)
	}
	if _, err := Sign(sampleManifest()); err == nil {
		t.Fatal("Sign without a key succeeded")
	}
	if _, err := Sign(sampleManifest(), ed25519.PrivateKey([]byte("short"))); err == nil {
		t.Fatal("Sign with a 5-byte key succeeded")
	}
}

func TestVersionsAndSelection(t *testing.T) {
	m := sampleManifest()
	got := m.ReleasesFor("linux", "amd64", "tar.xz")
	var vs []string
	for _, r := range got {
		vs = append(vs, r.Version)
	}
	if strings.Join(vs, " ") != "0.10.0 0.10.0-rc.1 0.2.0" {
		t.Fatalf("ReleasesFor order: %v", vs)
	}
	if n := len(m.ReleasesFor("linux", "amd64", "deb")); n != 0 {
		t.Fatalf("deb releases: %d", n)
	}
	if ps := m.PacksFor("llama", "linux", "amd64"); len(ps) != 1 || ps[0].Variant != "linux-x64-cuda" {
		t.Fatalf("PacksFor linux: %+v", ps)
	}
	if ps := m.PacksFor("llama", "darwin", "arm64"); len(ps) != 0 {
		t.Fatalf("a pack for another OS was offered: %+v", ps)
	}
	for _, c := range []struct {
		a, b string
		want int
	}{{"0.2.0", "0.10.0", -1}, {"1.0.0", "1.0.0", 0}, {"1.0.0", "1.0.0-rc.1", 1}, {"0.1.1", "0.1.0", 1}} {
		if got, err := CompareVersions(c.a, c.b); err != nil || got != c.want {
			t.Errorf("CompareVersions(%s, %s) = %d, %v; want %d", c.a, c.b, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "1.0", "v1.0.0", "1.0.0.0", "latest"} {
		if _, err := CompareVersions(bad, "1.0.0"); err == nil {
			t.Errorf("CompareVersions accepted %q", bad)
		}
	}
}

func TestCheckURL(t *testing.T) {
	for _, ok := range []string{"https://minis.gg/feed.json", "http://127.0.0.1:9/x", "http://[::1]:80/x", "http://localhost/x"} {
		if err := CheckURL(ok); err != nil {
			t.Errorf("CheckURL(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"http://minis.gg/feed.json", "http://10.0.0.1/x", "ftp://127.0.0.1/x", "file:///etc/passwd", "/feed.json", "https://", "http://127.0.0.1.example.org/x"} {
		if err := CheckURL(bad); !errors.Is(err, ErrInsecureURL) {
			t.Errorf("CheckURL(%q) = %v, want ErrInsecureURL", bad, err)
		}
	}
}

func TestKeys(t *testing.T) {
	pub, priv := newKey(t)
	k, err := ParsePublicKey(EncodePublicKey(pub))
	if err != nil || !k.Equal(pub) {
		t.Fatalf("ParsePublicKey round trip: %v", err)
	}
	for _, bad := range []string{"", "not base64!", base64.StdEncoding.EncodeToString(make([]byte, 31))} {
		if _, err := ParsePublicKey(bad); err == nil {
			t.Errorf("ParsePublicKey(%q) succeeded", bad)
		}
	}
	tk := trustedKeys(nil, EncodePublicKey(pub))
	if len(tk) != 1 || !tk[0].Equal(pub) {
		t.Fatalf("test key not trusted: %v", tk)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("a malformed test key did not stop the build's start")
			}
		}()
		trustedKeys(nil, "broken")
	}()
	if TestKeyID() != "" && testKey == "" {
		t.Error("TestKeyID set without a test key")
	}
	for i, k := range TrustedKeys {
		if len(k) != ed25519.PublicKeySize {
			t.Errorf("trusted key %d is %d bytes", i, len(k))
		}
	}

	// The signing key file: PKCS#8 PEM, mode 0600 required.
	dir := t.TempDir()
	pemBytes, err := MarshalPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "k.pem")
	if err := os.WriteFile(p, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := ReadPrivateKeyFile(p)
	if err != nil || !got.Equal(priv) {
		t.Fatalf("ReadPrivateKeyFile: %v", err)
	}
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadPrivateKeyFile(p); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a world-readable key file was read: %v", err)
	}
	junk := filepath.Join(dir, "junk")
	_ = os.WriteFile(junk, []byte("hello"), 0o600)
	if _, err := ReadPrivateKeyFile(junk); err == nil || !strings.Contains(err.Error(), "feed-keygen") {
		t.Fatalf("junk key file: %v", err)
	}
}

// The compiled-in release key parses and is the one README names.
func TestReleaseKey(t *testing.T) {
	if len(releaseKeys) == 0 || len(releaseKeys) > 2 {
		t.Fatalf("%d release keys compiled in; want 1, or 2 during a rotation", len(releaseKeys))
	}
	k, err := ParsePublicKey(releaseKeys[0])
	if err != nil {
		t.Fatal(err)
	}
	if KeyID(k) != "a199252102fda7e0" {
		t.Fatalf("release key id %s", KeyID(k))
	}
	if FeedURL("  ") != DefaultFeedURL || FeedURL(" http://127.0.0.1:1/f.json ") != "http://127.0.0.1:1/f.json" {
		t.Fatal("FeedURL")
	}
	if err := CheckURL(DefaultFeedURL); err != nil {
		t.Fatal(err)
	}
}
