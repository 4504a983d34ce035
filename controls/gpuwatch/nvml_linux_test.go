//go:build linux && cgo

package gpuwatch

import (
	"context"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"

	"github.com/minisgg/studio-worker/controls"
)

// TestNVMLRealDriver opens the machine's NVML. Where the NVIDIA driver is
// absent (no libnvidia-ml.so.1) it checks the donor's reason and skips.
func TestNVMLRealDriver(t *testing.T) {
	src, closeFn, err := openNVML(Options{ProcRoot: "/proc", BusyShare: DefaultBusyShare})
	if err != nil {
		if strings.Contains(err.Error(), "libnvidia-ml.so.1 is not installed") || strings.Contains(err.Error(), "not running") {
			t.Skipf("no NVIDIA driver on this machine: %v", err)
		}
		t.Fatalf("NVML: %v", err)
	}
	defer func() {
		if err := closeFn(); err != nil {
			t.Error(err)
		}
		if _, err := src.sample(context.Background()); err == nil {
			t.Error("a sample after Close called into the unloaded library")
		}
	}()
	s, err := src.sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(s.Source, "NVML") || !s.TemperatureKnown || s.TemperatureC <= 0 || s.TemperatureC > 120 {
		t.Fatalf("sample %+v", s)
	}
	t.Logf("%s: %d processes using a GPU, %.0f °C, %.1f W (known %v)", s.Source, len(s.Processes), s.TemperatureC, s.PowerW, s.PowerKnown)
}

func TestNVMLInitErrors(t *testing.T) {
	for ret, want := range map[nvml.Return]string{
		nvml.ERROR_LIBRARY_NOT_FOUND: "no NVIDIA driver (libnvidia-ml.so.1 is not installed)",
		nvml.ERROR_DRIVER_NOT_LOADED: "the NVIDIA driver is installed but not running",
		nvml.ERROR_NO_PERMISSION:     "no permission to read the NVIDIA driver",
	} {
		lib := &mock.Interface{InitFunc: func() nvml.Return { return ret }}
		if _, err := openNVMLLib(lib, "/proc", DefaultBusyShare); err == nil || err.Error() != want {
			t.Errorf("Init %d: %v, want %q", ret, err, want)
		}
	}
	shut := 0
	lib := &mock.Interface{
		InitFunc:           func() nvml.Return { return nvml.SUCCESS },
		DeviceGetCountFunc: func() (int, nvml.Return) { return 0, nvml.SUCCESS },
		ShutdownFunc:       func() nvml.Return { shut++; return nvml.SUCCESS },
	}
	if _, err := openNVMLLib(lib, "/proc", DefaultBusyShare); err == nil || shut != 1 {
		t.Fatalf("no GPU: err %v, shutdowns %d; want an error and NVML shut down", err, shut)
	}
}

// nvmlGPU is a driver's answers for one GPU (go-nvml's generated mock).
func nvmlGPU(name string, temp uint32, mw uint32, compute, graphics []nvml.ProcessInfo, util []nvml.ProcessUtilizationSample, utilRet nvml.Return, seen *[]uint64) *mock.Device {
	return &mock.Device{
		GetNameFunc: func() (string, nvml.Return) { return name, nvml.SUCCESS },
		GetTemperatureFunc: func(s nvml.TemperatureSensors) (uint32, nvml.Return) {
			if s != nvml.TEMPERATURE_GPU {
				return 0, nvml.ERROR_INVALID_ARGUMENT
			}
			return temp, nvml.SUCCESS
		},
		GetPowerUsageFunc:               func() (uint32, nvml.Return) { return mw, nvml.SUCCESS },
		GetComputeRunningProcessesFunc:  func() ([]nvml.ProcessInfo, nvml.Return) { return compute, nvml.SUCCESS },
		GetGraphicsRunningProcessesFunc: func() ([]nvml.ProcessInfo, nvml.Return) { return graphics, nvml.SUCCESS },
		GetProcessUtilizationFunc: func(last uint64) ([]nvml.ProcessUtilizationSample, nvml.Return) {
			*seen = append(*seen, last)
			return util, utilRet
		},
	}
}

func TestNVMLBusyRule(t *testing.T) {
	names := map[int]string{10: "/usr/lib/xorg/Xorg", 11: "/usr/bin/gnome-shell", 12: "/usr/lib/firefox/firefox", 13: "/opt/game/SpaceGame", 14: "/usr/bin/python3", 15: "/usr/local/bin/ollama"}
	graphics := []nvml.ProcessInfo{{Pid: 10, UsedGpuMemory: 200 << 20}, {Pid: 11, UsedGpuMemory: 300 << 20}, {Pid: 12, UsedGpuMemory: 100 << 20}, {Pid: 13, UsedGpuMemory: math.MaxUint64}}
	compute := []nvml.ProcessInfo{{Pid: 14, UsedGpuMemory: 4 << 30}, {Pid: 15, UsedGpuMemory: 8 << 30}}
	util := []nvml.ProcessUtilizationSample{
		{Pid: 11, TimeStamp: 100, SmUtil: 60},                                       // the compositor: never counts
		{Pid: 12, TimeStamp: 100, SmUtil: 4}, {Pid: 12, TimeStamp: 200, DecUtil: 8}, // a video: mean 6%
		{Pid: 13, TimeStamp: 150, SmUtil: 97}, {Pid: 13, TimeStamp: 250, SmUtil: 91},
		{Pid: 14, TimeStamp: 300, SmUtil: 5, EncUtil: 30}, // encoding
		// ollama (15) holds 8 GiB but has no sample: idle.
	}
	var seen []uint64
	dev0 := nvmlGPU("NVIDIA GeForce RTX 4070", 64, 182_400, compute, graphics, util, nvml.SUCCESS, &seen)
	var seen1 []uint64
	// A second, older GPU without per-process use: its compute process
	// counts, its graphics-only processes (a browser, Xorg) do not.
	dev1 := nvmlGPU("NVIDIA GeForce GTX 980", 71, 95_000, []nvml.ProcessInfo{{Pid: 16, UsedGpuMemory: 1 << 20}},
		[]nvml.ProcessInfo{{Pid: 17, UsedGpuMemory: 90 << 20}, {Pid: 10, UsedGpuMemory: 20 << 20}}, nil, nvml.ERROR_NOT_SUPPORTED, &seen1)
	names[16] = `C:\tools\miner.exe`
	names[17] = "/usr/lib/chromium/chromium"
	shut := 0
	lib := &mock.Interface{
		InitFunc:           func() nvml.Return { return nvml.SUCCESS },
		DeviceGetCountFunc: func() (int, nvml.Return) { return 2, nvml.SUCCESS },
		DeviceGetHandleByIndexFunc: func(i int) (nvml.Device, nvml.Return) {
			return []nvml.Device{dev0, dev1}[i], nvml.SUCCESS
		},
		SystemGetDriverVersionFunc: func() (string, nvml.Return) { return "550.54.14", nvml.SUCCESS },
		SystemGetProcessNameFunc: func(pid int) (string, nvml.Return) {
			if n, ok := names[pid]; ok {
				return n, nvml.SUCCESS
			}
			return "", nvml.ERROR_NOT_FOUND
		},
		ShutdownFunc: func() nvml.Return { shut++; return nvml.SUCCESS },
	}
	src, err := openNVMLLib(lib, t.TempDir(), DefaultBusyShare)
	if err != nil {
		t.Fatal(err)
	}
	s, err := src.sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := controls.GPUSample{
		Processes: []controls.GPUProcess{
			{PID: 14, Name: "python3", Device: "NVIDIA GeForce RTX 4070", MemoryBytes: 4 << 30},
			{PID: 13, Name: "SpaceGame", Device: "NVIDIA GeForce RTX 4070"}, // WDDM-style "not available" memory
			{PID: 16, Name: "miner.exe", Device: "NVIDIA GeForce GTX 980", MemoryBytes: 1 << 20},
		},
		ProcessesKnown: true, TemperatureC: 71, TemperatureKnown: true, PowerW: 182.4, PowerKnown: true,
		Source: "NVML (driver 550.54.14)",
	}
	if !reflect.DeepEqual(s, want) {
		t.Fatalf("sample\n%+v\nwant\n%+v", s, want)
	}

	// The next reading asks for samples after the newest one seen; "not
	// found" means nobody used the GPU since: only the GPU without
	// per-process use still lists its process.
	dev0.GetProcessUtilizationFunc = func(last uint64) ([]nvml.ProcessUtilizationSample, nvml.Return) {
		seen = append(seen, last)
		return nil, nvml.ERROR_NOT_FOUND
	}
	s, err = src.sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Processes) != 1 || s.Processes[0].PID != 16 {
		t.Fatalf("idle GPU: %+v", s.Processes)
	}
	if !reflect.DeepEqual(seen, []uint64{0, 300}) {
		t.Fatalf("utilisation asked since %v, want [0 300]", seen)
	}

	// A GPU that lists no process and one whose readings fail.
	for _, d := range []*mock.Device{dev0, dev1} {
		d.GetComputeRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) { return nil, nvml.ERROR_GPU_IS_LOST }
		d.GetGraphicsRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) { return nil, nvml.ERROR_GPU_IS_LOST }
		d.GetTemperatureFunc = func(nvml.TemperatureSensors) (uint32, nvml.Return) { return 0, nvml.ERROR_GPU_IS_LOST }
		d.GetPowerUsageFunc = func() (uint32, nvml.Return) { return 0, nvml.ERROR_NOT_SUPPORTED }
	}
	s, err = src.sample(context.Background())
	if err == nil || s.ProcessesKnown || s.TemperatureKnown || s.PowerKnown {
		t.Fatalf("lost GPUs: %+v, %v", s, err)
	}
	if !strings.Contains(err.Error(), "NVIDIA GeForce RTX 4070 does not list its processes") {
		t.Fatalf("lost GPUs: %v", err)
	}

	if err := src.close(); err != nil || shut != 1 {
		t.Fatalf("close: %v, shutdowns %d", err, shut)
	}
	if err := src.close(); err != nil || shut != 1 {
		t.Fatalf("second close: %v, shutdowns %d", err, shut)
	}
	if _, err := src.sample(context.Background()); err == nil || !strings.Contains(err.Error(), "shut down") {
		t.Fatalf("after close: %v", err)
	}
}
