package engine

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
)

// TestEnsureOnARealSmallDisk does the same on a real 50 MB tmpfs, which
// needs root to mount.
func TestEnsureOnARealSmallDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs for a real small disk needs root")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=50m"); err != nil {
		t.Skipf("cannot mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, 0) })
	root := filepath.Join(dir, "models")
	st := NewStore(root, StoreOptions{ResumeBackoff: 1})
	t.Cleanup(st.Sync)
	var sent atomic.Int64
	// 10 GB announced: refused on the headers.
	_, err := st.Ensure(context.Background(), "m", []ModelFile{{Role: RoleModel, URL: streamRandom(t, 1<<20, 10<<30, &sent) + "/m.gguf", Filename: "m.gguf"}}, nil)
	if !errors.As(err, new(*spaceError)) {
		t.Fatalf("10 GB announced: %v", err)
	}
	// 80 MB with no size: the disk fills, the .part is deleted, the disk
	// is free again.
	_, err = st.Ensure(context.Background(), "m", []ModelFile{{Role: RoleModel, URL: streamRandom(t, 80<<20, -1, &sent) + "/m.gguf", Filename: "m.gguf"}}, nil)
	if err == nil || !IsRetryable(err) || !strings.Contains(err.Error(), "deleted") {
		t.Fatalf("80 MB unannounced: %v", err)
	}
	mdir, _ := st.ModelDir("m")
	mustNotExist(t, filepath.Join(mdir, "m.gguf"+partSuffix))
	if free, _ := st.FreeSpace(); free < 45<<20 {
		t.Fatalf("%d bytes free after the failed download", free)
	}
	t.Log(err)
}
