package llama

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/minisgg/studio-worker/engine"
)

// TestDevicesThroughGGML lists the GPUs the loaded backends see. On a
// CPU-only runtime it must find none (and never a 0-byte GPU); with
// STUDIO_WORKER_EXPECT_GPU=1 (set on a GPU machine with a GPU runtime) it
// must find one with real memory, and the engine's probe must take it.
func TestDevicesThroughGGML(t *testing.T) {
	needLibs(t)
	dir, err := LoadRuntime("", nil)
	if err != nil {
		t.Fatal(err)
	}
	devs, err := Devices()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range devs {
		t.Logf("ggml device %q: %.1f GiB total, %.1f GiB free", d.Name,
			float64(d.TotalBytes)/(1<<30), float64(d.FreeBytes)/(1<<30))
		if d.TotalBytes == 0 || d.FreeBytes > d.TotalBytes {
			t.Errorf("device %q reports impossible memory: free %d of %d", d.Name, d.FreeBytes, d.TotalBytes)
		}
	}
	if os.Getenv("STUDIO_WORKER_EXPECT_GPU") == "1" {
		if len(devs) == 0 {
			t.Fatal("a GPU was expected but ggml reports none")
		}
		unregister := RegisterGPUProber()
		defer unregister()
		info := engine.NewSystemProbe(engine.SystemProbeOptions{}).Probe(context.Background())
		if !info.Known || info.Source != "ggml" || info.TotalBytes != devs[0].TotalBytes {
			t.Fatalf("engine probe = %+v, want the ggml device first", info)
		}
	} else if filepath.Base(dir) == "linux-x64" && len(devs) != 0 {
		t.Fatalf("the CPU runtime reports GPUs: %+v", devs)
	}
}
