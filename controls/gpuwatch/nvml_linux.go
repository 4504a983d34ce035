//go:build linux && cgo

package gpuwatch

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/minisgg/studio-worker/controls"
)

// openNVML loads libnvidia-ml.so.1 (go-nvml dlopens it in Init, so a
// machine without the NVIDIA driver builds, starts and gets an error
// here) and finds the GPUs.
func openNVML(opts Options) (source, func() error, error) {
	s, err := openNVMLLib(nvml.New(), opts.ProcRoot, opts.BusyShare)
	if err != nil {
		return nil, nil, err
	}
	return s, s.close, nil
}

// nvmlSource reads NVIDIA GPUs through NVML: each GPU's core temperature
// (nvmlDeviceGetTemperature, NVML_TEMPERATURE_GPU, °C), power draw
// (nvmlDeviceGetPowerUsage, mW) and the processes with a compute or a
// graphics context on it (nvmlDeviceGetComputeRunningProcesses,
// nvmlDeviceGetGraphicsRunningProcesses).
//
// Which listed processes count as using the GPU (NVML's graphics list
// always holds the desktop: Xorg, gnome-shell, a browser):
//   - display servers never count (displayServers);
//   - where the driver gives per-process utilisation
//     (nvmlDeviceGetProcessUtilization: SM, encoder and decoder use in %
//     per sample since the previous reading), a process counts when its
//     mean over the samples of the largest of the three reaches
//     busyShare; a listed process with no sample used nothing. So an idle
//     browser or an idle CUDA program that only holds memory does not
//     count, a game or a render does;
//   - where it does not (older GPUs and drivers answer "not supported"),
//     every process with a compute (CUDA) context counts, and no process
//     with only a graphics context does: on such a GPU the graphics list
//     cannot tell a game from an idle browser, so an idle desktop would
//     read as busy; games are seen through the donor's program list.
type nvmlSource struct {
	lib       nvml.Interface
	procRoot  string
	busyShare float64
	label     string

	mu      sync.Mutex
	closed  bool
	devices []nvmlDev
}

type nvmlDev struct {
	dev  nvml.Device
	name string
	// lastSeen is the newest utilisation sample's timestamp (µs), where
	// the next nvmlDeviceGetProcessUtilization starts.
	lastSeen uint64
}

func openNVMLLib(lib nvml.Interface, procRoot string, busyShare float64) (*nvmlSource, error) {
	if ret := lib.Init(); ret != nvml.SUCCESS {
		return nil, nvmlInitError(ret)
	}
	fail := func(err error) (*nvmlSource, error) {
		lib.Shutdown()
		return nil, err
	}
	count, ret := lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return fail(fmt.Errorf("NVML cannot count the NVIDIA GPUs: %s", nvmlString(ret)))
	}
	s := &nvmlSource{lib: lib, procRoot: procRoot, busyShare: busyShare, label: "NVML"}
	for i := 0; i < count; i++ {
		dev, ret := lib.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			continue // a lost or inaccessible GPU; the others still count
		}
		name, ret := dev.GetName()
		if ret != nvml.SUCCESS {
			name = fmt.Sprintf("NVIDIA GPU %d", i)
		}
		s.devices = append(s.devices, nvmlDev{dev: dev, name: name})
	}
	if len(s.devices) == 0 {
		return fail(errors.New("NVML lists no NVIDIA GPU it can read"))
	}
	if v, ret := lib.SystemGetDriverVersion(); ret == nvml.SUCCESS && v != "" {
		s.label = "NVML (driver " + v + ")"
	}
	return s, nil
}

// nvmlInitError says in a donor's words why NVML did not start.
func nvmlInitError(ret nvml.Return) error {
	switch ret {
	case nvml.ERROR_LIBRARY_NOT_FOUND:
		return errors.New("no NVIDIA driver (libnvidia-ml.so.1 is not installed)")
	case nvml.ERROR_DRIVER_NOT_LOADED:
		return errors.New("the NVIDIA driver is installed but not running")
	case nvml.ERROR_NO_PERMISSION:
		return errors.New("no permission to read the NVIDIA driver")
	}
	return fmt.Errorf("the NVIDIA driver did not answer (NVML: %s)", nvmlString(ret))
}

// nvmlString is NVML's text for ret; Return.Error asks the library, which
// must not happen after Shutdown.
func nvmlString(ret nvml.Return) string {
	return fmt.Sprintf("%s (%d)", ret.Error(), int32(ret))
}

func (s *nvmlSource) name() string { return s.label }

func (s *nvmlSource) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	// After Shutdown go-nvml closes the library: nothing may call into it.
	s.closed = true
	if ret := s.lib.Shutdown(); ret != nvml.SUCCESS {
		return fmt.Errorf("NVML did not shut down: %d", int32(ret))
	}
	return nil
}

func (s *nvmlSource) sample(ctx context.Context) (controls.GPUSample, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return controls.GPUSample{}, errors.New("NVML was shut down")
	}
	out := controls.GPUSample{Source: s.label}
	var problems []string
	seen := map[int]bool{}
	for i := range s.devices {
		if err := ctx.Err(); err != nil {
			return controls.GPUSample{}, err
		}
		d := &s.devices[i]
		if t, ret := d.dev.GetTemperature(nvml.TEMPERATURE_GPU); ret == nvml.SUCCESS {
			if c := float64(t); !out.TemperatureKnown || c > out.TemperatureC {
				out.TemperatureC, out.TemperatureKnown = c, true
			}
		}
		if mw, ret := d.dev.GetPowerUsage(); ret == nvml.SUCCESS {
			if w := float64(mw) / 1000; !out.PowerKnown || w > out.PowerW {
				out.PowerW, out.PowerKnown = w, true
			}
		}
		compute, cret := d.dev.GetComputeRunningProcesses()
		graphics, gret := d.dev.GetGraphicsRunningProcesses()
		if cret != nvml.SUCCESS && gret != nvml.SUCCESS {
			problems = append(problems, fmt.Sprintf("%s does not list its processes (NVML: %s)", d.name, nvmlString(cret)))
			continue
		}
		out.ProcessesKnown = true
		util := s.utilisation(d)
		for i, pi := range append(compute, graphics...) {
			pid := int(pi.Pid)
			if pid <= 0 || seen[pid] {
				continue
			}
			if util == nil && i >= len(compute) {
				continue // a graphics context and no use figure: the desktop's
			}
			name := s.processName(pid)
			if isDisplayServer(name) {
				continue
			}
			if util != nil && util[pid] < s.busyShare*100 {
				continue
			}
			seen[pid] = true
			mem := pi.UsedGpuMemory
			if mem == math.MaxUint64 { // NVML_VALUE_NOT_AVAILABLE (Windows WDDM)
				mem = 0
			}
			out.Processes = append(out.Processes, controls.GPUProcess{PID: pid, Name: name, Device: d.name, MemoryBytes: mem})
		}
	}
	if out.ProcessesKnown && out.Processes == nil {
		out.Processes = []controls.GPUProcess{}
	}
	if len(problems) > 0 && !out.ProcessesKnown {
		return out, errors.New(problems[0])
	}
	return out, nil
}

// utilisation returns each process's mean use of the GPU (largest of SM,
// encoder and decoder, in %) over the samples since the previous call, or
// nil where the driver does not give it. NVML answers "not found" when no
// process used the GPU since then: everyone's use is 0.
func (s *nvmlSource) utilisation(d *nvmlDev) map[int]float64 {
	samples, ret := d.dev.GetProcessUtilization(d.lastSeen)
	switch ret {
	case nvml.SUCCESS:
	case nvml.ERROR_NOT_FOUND:
		return map[int]float64{}
	default:
		return nil
	}
	sum := map[int]float64{}
	n := map[int]int{}
	for _, u := range samples {
		d.lastSeen = max(d.lastSeen, u.TimeStamp)
		pid := int(u.Pid)
		sum[pid] += float64(max(u.SmUtil, u.EncUtil, u.DecUtil))
		n[pid]++
	}
	for pid := range sum {
		sum[pid] /= float64(n[pid])
	}
	return sum
}

// processName asks NVML for the process's path (it sees other users'
// processes too), else reads /proc.
func (s *nvmlSource) processName(pid int) string {
	if p, ret := s.lib.SystemGetProcessName(pid); ret == nvml.SUCCESS && p != "" {
		return baseName(p)
	}
	return procName(s.procRoot, pid)
}
