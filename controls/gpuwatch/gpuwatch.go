package gpuwatch

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/minisgg/studio-worker/controls"
)

// Options configures New. The zero value reads the real machine.
type Options struct {
	// ProcRoot is the proc file system (Linux); "" means "/proc".
	ProcRoot string
	// SysRoot is the sysfs root (Linux); "" means "/sys".
	SysRoot string
	// BusyShare is the engine share (0..1) that makes a process count as
	// using the GPU where a source measures per-process use; 0 means
	// DefaultBusyShare.
	BusyShare float64
	// NvidiaSMI is the nvidia-smi program; "" means look for it on PATH
	// (and, on Windows, where the NVIDIA driver installs it).
	NvidiaSMI string
	// NoNVML, NoNvidiaSMI and NoDRM leave a source out (tests).
	NoNVML, NoNvidiaSMI, NoDRM bool
	// Now is the clock the DRM source measures intervals with; nil means
	// time.Now.
	Now func() time.Time
}

// source is one way of reading GPUs. sample may return a partly known
// sample together with an error that says what is missing.
type source interface {
	name() string
	sample(ctx context.Context) (controls.GPUSample, error)
}

// Probe is the controls.GPUProbe of this machine. It reads, in this
// order, and merges what they know:
//   - NVIDIA GPUs through NVML (github.com/NVIDIA/go-nvml; Linux builds
//     with cgo), loaded once by New and shut down by Close; where NVML
//     cannot be loaded, the nvidia-smi program (see nvmlSource and
//     smiSource for which processes count);
//   - on Linux, the other GPUs (AMD, Intel, ARM) through the DRM fdinfo
//     counters of the processes this user may read and the cards' hwmon
//     temperature and power (see drmSource).
//
// Processes of several sources are merged by PID; the temperature is the
// hottest and the power the highest any source reports. Sample returns an
// error only when no source knows anything: it wraps controls.ErrUnknown
// where this machine has no source or none can tell yet, with a reason a
// donor can read; its text stays the same from poll to poll so that it is
// logged once. A Probe is safe for concurrent use.
type Probe struct {
	sources []source
	// absent says why there is no source at all ("" when there is one).
	absent string
	close  func() error
	once   sync.Once
}

var _ controls.GPUProbe = (*Probe)(nil)

// New finds this machine's GPU sources. It never fails: a machine without
// any reads as unknown on every Sample. Call Close when done.
func New(opts Options) *Probe {
	if opts.ProcRoot == "" {
		opts.ProcRoot = "/proc"
	}
	if opts.SysRoot == "" {
		opts.SysRoot = "/sys"
	}
	if opts.BusyShare <= 0 {
		opts.BusyShare = DefaultBusyShare
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	p := &Probe{}
	var missing []string
	nvidia := false
	if !opts.NoNVML {
		src, closeFn, err := openNVML(opts)
		if err == nil {
			p.sources = append(p.sources, src)
			p.close = closeFn
			nvidia = true
		} else {
			missing = append(missing, err.Error())
		}
	}
	if !nvidia && !opts.NoNvidiaSMI {
		if path := findSMI(opts.NvidiaSMI); path != "" {
			p.sources = append(p.sources, newSMISource(path))
		} else {
			missing = append(missing, "nvidia-smi is not installed")
		}
	}
	if runtime.GOOS == "linux" && !opts.NoDRM {
		if drivers := drmDrivers(opts.SysRoot); len(drivers) > 0 {
			p.sources = append(p.sources, newDRMSource(context.Background(), opts.ProcRoot, opts.SysRoot, opts.BusyShare, opts.Now))
		} else {
			missing = append(missing, "no AMD or Intel GPU is listed in "+filepath.Join(opts.SysRoot, "class", "drm"))
		}
	}
	if len(p.sources) == 0 {
		if len(missing) == 0 {
			missing = append(missing, "no GPU source is used on "+runtime.GOOS)
		}
		p.absent = "no GPU can be read: " + strings.Join(missing, "; ")
	}
	return p
}

// Sources names the sources New found ("NVML (driver 550.54.14)",
// "DRM fdinfo"), for the log and the Settings page; empty when none.
func (p *Probe) Sources() []string {
	var out []string
	for _, s := range p.sources {
		out = append(out, s.name())
	}
	return out
}

// Sample reads every source once. See Probe for how they are merged.
func (p *Probe) Sample(ctx context.Context) (controls.GPUSample, error) {
	if p.absent != "" {
		return controls.GPUSample{}, unknownf("%s", p.absent)
	}
	var out controls.GPUSample
	var names []string
	var problems []string
	allUnknown := true
	byPID := map[int]int{}
	for _, src := range p.sources {
		s, err := src.sample(ctx)
		if ctx.Err() != nil {
			return controls.GPUSample{}, ctx.Err()
		}
		if err != nil {
			problems = append(problems, err.Error())
			allUnknown = allUnknown && errors.Is(err, controls.ErrUnknown)
		}
		known := false
		if s.ProcessesKnown {
			known = true
			out.ProcessesKnown = true
			for _, proc := range s.Processes {
				if i, dup := byPID[proc.PID]; dup {
					q := &out.Processes[i]
					if q.Name == "" {
						q.Name = proc.Name
					}
					if q.Device == "" {
						q.Device = proc.Device
					}
					q.MemoryBytes = max(q.MemoryBytes, proc.MemoryBytes)
					continue
				}
				byPID[proc.PID] = len(out.Processes)
				out.Processes = append(out.Processes, proc)
			}
		}
		if s.TemperatureKnown {
			known = true
			if !out.TemperatureKnown || s.TemperatureC > out.TemperatureC {
				out.TemperatureC, out.TemperatureKnown = s.TemperatureC, true
			}
		}
		if s.PowerKnown {
			known = true
			if !out.PowerKnown || s.PowerW > out.PowerW {
				out.PowerW, out.PowerKnown = s.PowerW, true
			}
		}
		if known {
			names = append(names, src.name())
		}
	}
	if len(names) == 0 {
		msg := strings.Join(dedupe(problems), "; ")
		if allUnknown {
			return controls.GPUSample{}, unknownf("%s", msg)
		}
		return controls.GPUSample{}, errors.New(msg)
	}
	if out.ProcessesKnown && out.Processes == nil {
		out.Processes = []controls.GPUProcess{}
	}
	sortProcesses(out.Processes)
	out.Source = strings.Join(names, " + ")
	return out, nil
}

// Close shuts NVML down (once); later Samples of NVML fail.
func (p *Probe) Close() error {
	var err error
	p.once.Do(func() {
		if p.close != nil {
			err = p.close()
		}
	})
	return err
}

func sortProcesses(ps []controls.GPUProcess) {
	sort.Slice(ps, func(i, j int) bool { return ps[i].PID < ps[j].PID })
}

// findSMI returns the nvidia-smi to run: the given path, else the one on
// PATH, else one where the driver installs it; "" when there is none.
func findSMI(given string) string {
	if given != "" {
		if _, err := os.Stat(given); err == nil {
			return given
		}
		return ""
	}
	if path, err := exec.LookPath("nvidia-smi"); err == nil {
		return path
	}
	for _, c := range smiCandidates() {
		if _, err := os.Stat(c); err == nil {
			return c
		}
	}
	return ""
}
