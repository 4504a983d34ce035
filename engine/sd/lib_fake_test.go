//go:build linux

package sd

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// buildFake compiles testdata/fakesd.c into a shared library with the given
// -D flags.
func buildFake(t *testing.T, name string, defs ...string) string {
	t.Helper()
	cc, err := exec.LookPath("cc")
	if err != nil {
		t.Skip("needs a C compiler (cc) to build the stand-in library")
	}
	out := filepath.Join(t.TempDir(), name)
	args := append([]string{"-shared", "-fPIC", "-o", out, filepath.Join("testdata", "fakesd.c")}, defs...)
	if b, err := exec.Command(cc, args...).CombinedOutput(); err != nil {
		t.Fatalf("cc: %v\n%s", err, b)
	}
	return out
}

func TestOpenRefusesOtherReleases(t *testing.T) {
	cases := []struct {
		name  string
		defs  []string
		words []string
	}{
		{"older release", nil, []string{`"master-826-16304cc"`, PinnedVersion}},
		{"forged version", []string{`-DFAKE_VERSION="` + PinnedVersion + `"`}, []string{`commit "16304cc3"`, PinnedVersion}},
		{"modified tree", []string{`-DFAKE_VERSION="` + PinnedVersion + `+"`, `-DFAKE_COMMIT="97d29908"`}, []string{PinnedVersion + "+"}},
		{"missing function", []string{"-DFAKE_NO_CANCEL"}, []string{"is not stable-diffusion.cpp", "sd_cancel_generation"}},
		{"larger struct", []string{`-DFAKE_VERSION="` + PinnedVersion + `"`, `-DFAKE_COMMIT="97d29908"`, "-DFAKE_CTX_SIZE=296"},
			[]string{"sd_ctx_params_t", "larger"}},
		{"same size, other fields", []string{`-DFAKE_VERSION="` + PinnedVersion + `"`, `-DFAKE_COMMIT="97d29908"`},
			[]string{"sd_ctx_params_t", "does not match"}},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := buildFake(t, "libfake"+string(rune('a'+i))+".so", c.defs...)
			_, err := Open(path)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range c.words {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			e := New(Config{LibPath: path})
			if len(e.Kinds()) != 0 || e.LoadError() == nil {
				t.Fatalf("engine offers %v with a refused library", e.Kinds())
			}
		})
	}
}
