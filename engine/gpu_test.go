package engine

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

const mib = 1 << 20

func TestParseNvidiaSMI(t *testing.T) {
	for _, tc := range []struct {
		name string
		out  string
		want []GPUDevice
		ok   bool
	}{
		{"one GPU", "NVIDIA GeForce RTX 3060, 12288, 11870\n", []GPUDevice{
			{Name: "NVIDIA GeForce RTX 3060", TotalBytes: 12288 * mib, FreeBytes: 11870 * mib, Source: "nvidia-smi"},
		}, true},
		{"two GPUs, CRLF", "NVIDIA A100-SXM4-80GB, 81920, 81000\r\nTesla T4, 15360, 15000\r\n", []GPUDevice{
			{Name: "NVIDIA A100-SXM4-80GB", TotalBytes: 81920 * mib, FreeBytes: 81000 * mib, Source: "nvidia-smi"},
			{Name: "Tesla T4", TotalBytes: 15360 * mib, FreeBytes: 15000 * mib, Source: "nvidia-smi"},
		}, true},
		{"comma in name", "Quadro RTX, Max-Q, 8192, 100\n", []GPUDevice{
			{Name: "Quadro RTX, Max-Q", TotalBytes: 8192 * mib, FreeBytes: 100 * mib, Source: "nvidia-smi"},
		}, true},
		{"unsupported line skipped", "GRID vGPU, [N/A], [N/A]\nTesla T4, 15360, 15000\n", []GPUDevice{
			{Name: "Tesla T4", TotalBytes: 15360 * mib, FreeBytes: 15000 * mib, Source: "nvidia-smi"},
		}, true},
		{"nothing readable", "GRID vGPU, [N/A], [N/A]\n", nil, false},
		{"driver error text", "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n", nil, false},
		{"empty", "", nil, false},
		{"zero total", "Broken, 0, 0\n", nil, false},
	} {
		got, err := ParseNvidiaSMI([]byte(tc.out))
		if (err == nil) != tc.ok || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: got %+v, %v; want %+v", tc.name, got, err, tc.want)
		}
	}
}

func writeSysfs(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for p, content := range files {
		full := filepath.Join(root, "sys/class/drm", p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestReadAMDSysfs(t *testing.T) {
	root := t.TempDir()
	writeSysfs(t, root, map[string]string{
		"card1/device/mem_info_vram_total": "17163091968\n",
		"card1/device/mem_info_vram_used":  "1073741824\n",
		"card1/device/product_name":        "AMD Radeon RX 6800\n",
		// A connector of card1: must not count as another GPU.
		"card1-DP-1/device/mem_info_vram_total": "17163091968\n",
		"card1-DP-1/device/mem_info_vram_used":  "0\n",
		"card0/device/vendor":                   "0x8086\n", // an Intel iGPU without the files
		"card10/device/mem_info_vram_total":     "8589934592",
		"card10/device/mem_info_vram_used":      "9999999999", // more used than total: nonsense
		"card2/device/mem_info_vram_total":      "8589934592",
		"card2/device/mem_info_vram_used":       "0",
	})
	got, err := ReadAMDSysfs(root)
	if err != nil {
		t.Fatal(err)
	}
	want := []GPUDevice{
		{Name: "AMD Radeon RX 6800", TotalBytes: 17163091968, FreeBytes: 17163091968 - 1073741824, Source: "sysfs"},
		{Name: "AMD GPU (card2)", TotalBytes: 8589934592, FreeBytes: 8589934592, Source: "sysfs"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	if _, err := ReadAMDSysfs(t.TempDir()); err == nil {
		t.Fatal("a machine without /sys/class/drm must say so")
	}
}

func fakeRunner(out string, err error, calls *int) CommandRunner {
	return func(ctx context.Context, name string, args ...string) ([]byte, error) {
		*calls++
		if name != "nvidia-smi" {
			return nil, errors.New("unexpected program " + name)
		}
		return []byte(out), err
	}
}

func TestSystemProbeOrder(t *testing.T) {
	amd := t.TempDir()
	writeSysfs(t, amd, map[string]string{
		"card0/device/mem_info_vram_total": "8589934592",
		"card0/device/mem_info_vram_used":  "4294967296",
	})
	ggml := func() ([]GPUDevice, error) {
		return []GPUDevice{{Name: "CPU", TotalBytes: 0}, {Name: "CUDA0", TotalBytes: 24 << 30, FreeBytes: 20 << 30}}, nil
	}
	failing := func() ([]GPUDevice, error) { return nil, errors.New("no backend") }
	panicking := func() ([]GPUDevice, error) { panic("bad library") }

	var calls int
	v := NewSystemProbe(SystemProbeOptions{Probers: []DeviceProber{panicking, failing, ggml}, Run: fakeRunner("", errors.New("not found"), &calls), SysfsRoot: amd}).Probe(context.Background())
	if !v.Known || v.TotalBytes != 24<<30 || v.FreeBytes != 20<<30 || len(v.Devices) != 1 || v.Devices[0].Name != "CUDA0" || calls != 0 {
		t.Fatalf("ggml prober first: %+v (nvidia-smi calls %d)", v, calls)
	}

	v = NewSystemProbe(SystemProbeOptions{Probers: []DeviceProber{failing}, Run: fakeRunner("Tesla T4, 15360, 15000\n", nil, &calls), SysfsRoot: amd}).Probe(context.Background())
	if !v.Known || v.Source != "nvidia-smi" || v.TotalBytes != 15360*mib {
		t.Fatalf("nvidia-smi second: %+v", v)
	}

	v = NewSystemProbe(SystemProbeOptions{Probers: []DeviceProber{failing}, Run: fakeRunner("", errors.New("exec: not found"), &calls), SysfsRoot: amd}).Probe(context.Background())
	if !v.Known || v.Source != "sysfs" || v.FreeBytes != 4294967296 || v.TotalGB() != 8 {
		t.Fatalf("sysfs third: %+v", v)
	}

	v = NewSystemProbe(SystemProbeOptions{Probers: []DeviceProber{failing}, Run: fakeRunner("", errors.New("exec: not found"), &calls), SysfsRoot: t.TempDir()}).Probe(context.Background())
	if v.Known || v.TotalGB() != 0 || len(v.Devices) != 0 {
		t.Fatalf("nothing known must stay unknown: %+v", v)
	}
}

func TestRegisterProber(t *testing.T) {
	var calls int
	unregister := RegisterProber("test-ggml", func() ([]GPUDevice, error) {
		return []GPUDevice{{Name: "Vulkan0", TotalBytes: 8 << 30, FreeBytes: 7 << 30}}, nil
	})
	p := NewSystemProbe(SystemProbeOptions{Run: fakeRunner("", errors.New("none"), &calls), SysfsRoot: t.TempDir()})
	v := p.Probe(context.Background())
	if !v.Known || v.Source != "test-ggml" || v.Devices[0].Source != "test-ggml" {
		t.Fatalf("registered prober: %+v", v)
	}
	unregister()
	if v := p.Probe(context.Background()); v.Known {
		t.Fatalf("after unregister: %+v", v)
	}
}

// TestSystemProbeOnThisMachine checks the real probe where a GPU is there:
// what nvidia-smi says must come back as known memory, never as 0 GB.
func TestSystemProbeOnThisMachine(t *testing.T) {
	out, err := execRunner(context.Background(), "nvidia-smi", "--query-gpu=name,memory.total,memory.free", "--format=csv,noheader,nounits")
	if err != nil {
		t.Skip("needs a working nvidia-smi (an NVIDIA GPU and its driver): ", err)
	}
	want, err := ParseNvidiaSMI(out)
	if err != nil {
		t.Fatalf("nvidia-smi output %q: %v", out, err)
	}
	v := NewSystemProbe(SystemProbeOptions{Probers: []DeviceProber{}}).Probe(context.Background())
	if !v.Known || len(v.Devices) != len(want) || v.TotalBytes == 0 || v.Devices[0].Name != want[0].Name {
		t.Fatalf("probe = %+v, nvidia-smi says %+v", v, want)
	}
	t.Logf("%s: %d device(s), %.1f GB total, %.1f GB free; first %q", v.Source, len(v.Devices), v.TotalGB(), bytesToGB(v.FreeBytes), v.Devices[0].Name)
}
