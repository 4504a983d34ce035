package engine

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// virtualDisk is a disk of capacity bytes holding the store's root: its
// free space is the capacity less the bytes of the files under the root, as
// they are on disk now.
func virtualDisk(root string, capacity uint64) func(string) (uint64, error) {
	return func(string) (uint64, error) {
		var used uint64
		filepath.WalkDir(root, func(_ string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				if fi, err := d.Info(); err == nil {
					used += uint64(fi.Size())
				}
			}
			return nil
		})
		if used >= capacity {
			return 0, nil
		}
		return capacity - used, nil
	}
}

// streamRandom serves n random bytes without a Content-Length (chunked),
// counting what it managed to send.
func streamRandom(t *testing.T, n int, announce int64, sent *atomic.Int64) string {
	t.Helper()
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if announce >= 0 {
			w.Header().Set("Content-Length", fmt.Sprint(announce))
		}
		rng := rand.New(rand.NewPCG(1, 2))
		buf := make([]byte, 256<<10)
		for i := range buf {
			buf[i] = byte(rng.Uint32())
		}
		copy(buf, "GGUF") // starts like a model, so only the space stops it
		for left := n; left > 0; {
			k := min(left, len(buf))
			m, err := w.Write(buf[:k])
			sent.Add(int64(m))
			if err != nil {
				return
			}
			left -= k
		}
	})
	return srv.URL
}

func newDiskStore(t *testing.T, capacity, reserve uint64) *Store {
	t.Helper()
	root := filepath.Join(t.TempDir(), "models")
	st := NewStore(root, StoreOptions{FreeSpace: virtualDisk(root, capacity), ResumeBackoff: 1, Reserve: func() uint64 { return reserve }})
	t.Cleanup(st.Sync)
	return st
}

// TestEnsureAnnouncedSizeOverFreeSpace is issue 10 item 12's case: a server
// announcing 10 GB for a model offered without approxBytes, into a 50 MB
// disk: refused on the headers, before a byte is written, retryable.
func TestEnsureAnnouncedSizeOverFreeSpace(t *testing.T) {
	st := newDiskStore(t, 50<<20, 0)
	var sent atomic.Int64
	url := streamRandom(t, 1<<20, 10<<30, &sent)
	_, err := st.Ensure(context.Background(), "m", []ModelFile{{Role: RoleModel, URL: url + "/m.gguf", Filename: "m.gguf"}}, nil)
	var se *spaceError
	if !errors.As(err, &se) || !IsRetryable(err) || !strings.Contains(err.Error(), "announces 10.00 GB") {
		t.Fatalf("got %v", err)
	}
	dir, _ := st.ModelDir("m")
	mustNotExist(t, filepath.Join(dir, "m.gguf"+partSuffix))
}

// TestEnsureUnannouncedSizeStopsAtTheReserve: with no size anywhere, the
// download stops at the donor's reserve while writing, and deletes its .part.
func TestEnsureUnannouncedSizeStopsAtTheReserve(t *testing.T) {
	const mib = 1 << 20
	st := newDiskStore(t, 40*mib, 10*mib)
	var sent atomic.Int64
	url := streamRandom(t, 64*mib, -1, &sent)
	_, err := st.Ensure(context.Background(), "m", []ModelFile{{Role: RoleModel, URL: url + "/m.gguf", Filename: "m.gguf"}}, nil)
	var se *spaceError
	if !errors.As(err, &se) || !IsRetryable(err) || !strings.Contains(err.Error(), "kept free for the rest of this computer") || !strings.Contains(err.Error(), "deleted") {
		t.Fatalf("got %v", err)
	}
	dir, _ := st.ModelDir("m")
	mustNotExist(t, filepath.Join(dir, "m.gguf"+partSuffix))
	if free, _ := st.FreeSpace(); free < 10*mib {
		t.Fatalf("the disk was left with %d bytes free, below the reserve", free)
	}
}

// TestEnsurePreflightKeepsTheReserve: approxBytes that would eat into the
// reserve are refused before any request.
func TestEnsurePreflightKeepsTheReserve(t *testing.T) {
	st := newDiskStore(t, 20<<20, 12<<20)
	var sent atomic.Int64
	url := streamRandom(t, 1<<20, -1, &sent)
	_, err := st.Ensure(context.Background(), "m", []ModelFile{{Role: RoleModel, URL: url + "/m.gguf", Filename: "m.gguf", ApproxBytes: 9 << 20}}, nil)
	var se *spaceError
	if !errors.As(err, &se) || sent.Load() != 0 {
		t.Fatalf("got %v after %d bytes sent", err, sent.Load())
	}
}
