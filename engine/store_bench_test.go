package engine

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkModelDownload measures the store's download (stream to .part,
// sha256, size check, fsync, rename, record) against a plain HTTP GET copied
// into a file with io.Copy, both from the same loopback server in the same
// run. Metrics: store-MB/s, copy-MB/s and ratio (store ÷ copy; goal >= 0.9).
func BenchmarkModelDownload(b *testing.B) {
	bl := newBlob(64<<20, 99)
	size := int64(len(bl.data))
	srv := httptest.NewServer(http.HandlerFunc(bl.serve))
	defer srv.Close()
	dir := b.TempDir()
	st := NewStore(filepath.Join(dir, "models"), StoreOptions{HTTP: srv.Client()})
	file := ModelFile{Role: RoleModel, URL: srv.URL + "/m.gguf", Filename: "m.gguf", ApproxBytes: uint64(size), SHA256: bl.sum}

	plain := func() time.Duration {
		start := time.Now()
		resp, err := srv.Client().Get(srv.URL + "/m.gguf")
		if err != nil {
			b.Fatal(err)
		}
		out, err := os.Create(filepath.Join(dir, "plain.bin"))
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(out, resp.Body)
		resp.Body.Close()
		if err == nil {
			err = out.Close()
		}
		if err != nil || n != size {
			b.Fatalf("plain copy: %d bytes, %v", n, err)
		}
		d := time.Since(start)
		os.Remove(out.Name())
		return d
	}
	store := func() time.Duration {
		start := time.Now()
		if _, err := st.Ensure(context.Background(), "bench", []ModelFile{file}, nil); err != nil {
			b.Fatal(err)
		}
		d := time.Since(start)
		if err := st.Delete("bench"); err != nil {
			b.Fatal(err)
		}
		return d
	}
	plain() // warm the connection pool and the page cache once
	var tStore, tPlain time.Duration
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Alternate the order so that neither side always runs on a warm cache.
		if i%2 == 0 {
			tPlain += plain()
			tStore += store()
		} else {
			tStore += store()
			tPlain += plain()
		}
	}
	b.StopTimer()
	mbps := func(d time.Duration) float64 { return float64(size) * float64(b.N) / d.Seconds() / 1e6 }
	b.ReportMetric(mbps(tStore), "store-MB/s")
	b.ReportMetric(mbps(tPlain), "copy-MB/s")
	b.ReportMetric(tPlain.Seconds()/tStore.Seconds(), "ratio")
}
