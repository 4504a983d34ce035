package packs

import (
	"context"
	"crypto/ed25519"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/release"
)

// BenchmarkPackInstall is a runtime pack's whole install on loopback (the
// signed feed read and verified, the pack downloaded with its size and
// sha256 checked and synced, unpacked into a temporary folder and renamed
// into place, recorded) against a plain download of the same bytes to a
// file, the two taking turns, median of 5 rounds. The pack is the real
// stable-diffusion.cpp library `make runtime` installs (10 MB), stored in a
// zip. ratio = install time / plain download time.
func BenchmarkPackInstall(b *testing.B) {
	lib := filepath.Join("..", "..", "runtime", "sd", engine.PlatformVariant(), "libstable-diffusion.so")
	body, err := os.ReadFile(lib)
	if err != nil {
		b.Skipf("needs %s: run `make runtime` (%v)", lib, err)
	}
	fs := newFeedServer(b)
	archive := zipOf(b, []packFile{{name: sdLib(), body: body}})
	p := fs.addPack("sd", runtime.GOOS, runtime.GOARCH, "cpu", variant("cpu"), "m1", "zip", archive)
	fs.publish([]release.Pack{p}, nil)
	install := func() time.Duration {
		dir := b.TempDir()
		inst := NewInstaller(Config{FeedURL: fs.url(), Trusted: []ed25519.PublicKey{fs.pub}, Machine: thisMachine(false), Dir: dir})
		t0 := time.Now()
		if _, err := inst.Ensure(context.Background(), "sd", Options{}, nil); err != nil {
			b.Fatal(err)
		}
		return time.Since(t0)
	}
	plain := func() time.Duration {
		dst := filepath.Join(b.TempDir(), "copy")
		t0 := time.Now()
		resp, err := http.Get(p.URL)
		if err != nil {
			b.Fatal(err)
		}
		f, err := os.Create(dst)
		if err != nil {
			b.Fatal(err)
		}
		_, err = io.Copy(f, resp.Body)
		resp.Body.Close()
		f.Close()
		if err != nil {
			b.Fatal(err)
		}
		return time.Since(t0)
	}
	var ins, cps []float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for r := 0; r < 5; r++ {
			if r%2 == 0 {
				ins = append(ins, install().Seconds())
				cps = append(cps, plain().Seconds())
			} else {
				cps = append(cps, plain().Seconds())
				ins = append(ins, install().Seconds())
			}
		}
	}
	b.StopTimer()
	med := func(v []float64) float64 { s := slices.Clone(v); slices.Sort(s); return s[len(s)/2] }
	b.ReportMetric(med(ins)*1000, "install_ms")
	b.ReportMetric(med(cps)*1000, "plain_download_ms")
	b.ReportMetric(med(ins)/med(cps), "ratio")
}
