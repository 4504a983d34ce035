package engine

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// GPUDevice is one accelerator and its memory.
type GPUDevice struct {
	Name       string
	TotalBytes uint64
	FreeBytes  uint64
	Source     string // which probe found it: "ggml", "nvidia-smi", "sysfs", ...
}

// VRAMInfo is what is known about the machine's GPU memory. When Known is
// false nothing was found and the figures are meaningless: unknown is never
// reported as 0 GB.
type VRAMInfo struct {
	Known      bool
	Devices    []GPUDevice
	TotalBytes uint64 // sum over devices
	FreeBytes  uint64 // sum over devices
	Source     string
}

// TotalGB is the total in GB (2^30 bytes), 0 when unknown — the value the
// protocol's vramTotalGb field wants.
func (v VRAMInfo) TotalGB() float64 {
	if !v.Known {
		return 0
	}
	return bytesToGB(v.TotalBytes)
}

// LargestFree is the most free memory on one device.
func (v VRAMInfo) LargestFree() uint64 {
	var m uint64
	for _, d := range v.Devices {
		m = max(m, d.FreeBytes)
	}
	return m
}

func bytesToGB(b uint64) float64 { return float64(b) / float64(1<<30) }
func gbToBytes(gb float64) uint64 {
	if gb <= 0 {
		return 0
	}
	return uint64(gb * float64(1<<30))
}

func infoFrom(devs []GPUDevice, source string) VRAMInfo {
	v := VRAMInfo{Known: len(devs) > 0, Devices: devs, Source: source}
	for _, d := range devs {
		v.TotalBytes += d.TotalBytes
		v.FreeBytes += d.FreeBytes
	}
	return v
}

// DeviceProber lists GPU devices with their memory. An engine that has a
// better view (ggml's backend device API, through its loaded library)
// registers one with RegisterProber.
type DeviceProber func() ([]GPUDevice, error)

var (
	probersMu sync.Mutex
	probers   []namedProber
)

type namedProber struct {
	name string
	fn   DeviceProber
}

// RegisterProber adds a device prober that is asked before the system
// probes (NVML-less: nvidia-smi, sysfs). A second registration under the
// same name replaces the first. The returned function unregisters it.
func RegisterProber(name string, p DeviceProber) (unregister func()) {
	probersMu.Lock()
	defer probersMu.Unlock()
	for i := range probers {
		if probers[i].name == name {
			probers = append(probers[:i], probers[i+1:]...)
			break
		}
	}
	probers = append(probers, namedProber{name, p})
	return func() {
		probersMu.Lock()
		defer probersMu.Unlock()
		for i := range probers {
			if probers[i].name == name {
				probers = append(probers[:i], probers[i+1:]...)
				return
			}
		}
	}
}

func registeredProbers() []namedProber {
	probersMu.Lock()
	defer probersMu.Unlock()
	return append([]namedProber(nil), probers...)
}

// GPUProbe answers what is known about GPU memory right now.
type GPUProbe interface {
	Probe(ctx context.Context) VRAMInfo
}

// CommandRunner runs a program and returns its standard output.
type CommandRunner func(ctx context.Context, name string, args ...string) ([]byte, error)

// SystemProbeOptions make the system probe testable: the command runner and
// the sysfs root are injectable.
type SystemProbeOptions struct {
	Run       CommandRunner // nil: exec the real program
	SysfsRoot string        // "" means "/"; only read on Linux
	// Probers are asked first; nil means the registered ones.
	Probers []DeviceProber
	Log     *slog.Logger
}

// SystemProbe tries, in order: registered device probers (ggml through a
// loaded engine library), nvidia-smi, and the AMD sysfs files. It only
// sizes the VRAM budget, once; the donor controls' live readings (GPU
// processes, temperature, power) come from controls/gpuwatch, which uses
// NVML where the driver has it.
type SystemProbe struct {
	run       CommandRunner
	sysfsRoot string
	probers   []DeviceProber
	log       *slog.Logger
}

// NewSystemProbe returns a probe for this machine.
func NewSystemProbe(opts SystemProbeOptions) *SystemProbe {
	run := opts.Run
	if run == nil {
		run = execRunner
	}
	root := opts.SysfsRoot
	if root == "" {
		root = "/"
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &SystemProbe{run: run, sysfsRoot: root, probers: opts.Probers, log: log}
}

func execRunner(ctx context.Context, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil && stderr.Len() > 0 {
		err = fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return out, err
}

// Probe returns the first source that knows something; Known=false when
// none does.
func (p *SystemProbe) Probe(ctx context.Context) VRAMInfo {
	if p.probers != nil {
		for i, fn := range p.probers {
			if v, ok := p.tryProber(fmt.Sprintf("prober %d", i), fn); ok {
				return v
			}
		}
	} else {
		for _, np := range registeredProbers() {
			if v, ok := p.tryProber(np.name, np.fn); ok {
				return v
			}
		}
	}
	if out, err := p.run(ctx, "nvidia-smi", "--query-gpu=name,memory.total,memory.free", "--format=csv,noheader,nounits"); err == nil {
		devs, perr := ParseNvidiaSMI(out)
		if perr == nil && len(devs) > 0 {
			return infoFrom(devs, "nvidia-smi")
		}
		p.log.Debug("nvidia-smi output not understood", "op", "gpu", "err", perr)
	} else {
		p.log.Debug("nvidia-smi not usable", "op", "gpu", "err", err)
	}
	if devs, err := ReadAMDSysfs(p.sysfsRoot); err == nil && len(devs) > 0 {
		return infoFrom(devs, "sysfs")
	} else if err != nil {
		p.log.Debug("sysfs GPU memory not readable", "op", "gpu", "err", err)
	}
	return VRAMInfo{}
}

func (p *SystemProbe) tryProber(name string, fn DeviceProber) (v VRAMInfo, ok bool) {
	defer func() {
		if r := recover(); r != nil {
			p.log.Warn("GPU prober panicked", "op", "gpu", "prober", name, "panic", fmt.Sprint(r))
			ok = false
		}
	}()
	devs, err := fn()
	if err != nil {
		p.log.Debug("GPU prober failed", "op", "gpu", "prober", name, "err", err)
		return VRAMInfo{}, false
	}
	// A device reporting no memory tells us nothing (a CPU "device" or a
	// driver that would not say): leave it out rather than count 0 GB.
	var kept []GPUDevice
	for _, d := range devs {
		if d.TotalBytes > 0 {
			if d.Source == "" {
				d.Source = name
			}
			kept = append(kept, d)
		}
	}
	if len(kept) == 0 {
		return VRAMInfo{}, false
	}
	return infoFrom(kept, name), true
}

// ParseNvidiaSMI reads `nvidia-smi --query-gpu=name,memory.total,memory.free
// --format=csv,noheader,nounits`: one line per GPU, sizes in MiB. Lines it
// cannot read ("[N/A]", "[Not Supported]") are skipped.
func ParseNvidiaSMI(out []byte) ([]GPUDevice, error) {
	var devs []GPUDevice
	sc := bufio.NewScanner(bytes.NewReader(out))
	var bad []string
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		// The name may itself contain commas; the last two fields are numbers.
		i := strings.LastIndexByte(line, ',')
		j := -1
		if i > 0 {
			j = strings.LastIndexByte(line[:i], ',')
		}
		if j <= 0 {
			bad = append(bad, line)
			continue
		}
		name := strings.TrimSpace(line[:j])
		total, err1 := strconv.ParseFloat(strings.TrimSpace(line[j+1:i]), 64)
		free, err2 := strconv.ParseFloat(strings.TrimSpace(line[i+1:]), 64)
		if err1 != nil || err2 != nil || total <= 0 || free < 0 {
			bad = append(bad, line)
			continue
		}
		devs = append(devs, GPUDevice{Name: name, TotalBytes: uint64(total * (1 << 20)), FreeBytes: uint64(free * (1 << 20)), Source: "nvidia-smi"})
	}
	if len(devs) == 0 {
		if len(bad) > 0 {
			return nil, fmt.Errorf("unreadable nvidia-smi lines: %q", bad)
		}
		return nil, errors.New("nvidia-smi listed no GPU")
	}
	return devs, nil
}

var cardRe = regexp.MustCompile(`^card[0-9]+$`)

// ReadAMDSysfs reads /sys/class/drm/card*/device/mem_info_vram_{total,used}
// under root (amdgpu's driver files; bytes).
func ReadAMDSysfs(root string) ([]GPUDevice, error) {
	base := filepath.Join(root, "sys", "class", "drm")
	entries, err := os.ReadDir(base)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		// card0-DP-1 and friends are connectors of card0, not more GPUs.
		if cardRe.MatchString(e.Name()) {
			names = append(names, e.Name())
		}
	}
	sort.Slice(names, func(i, j int) bool {
		a, _ := strconv.Atoi(strings.TrimPrefix(names[i], "card"))
		b, _ := strconv.Atoi(strings.TrimPrefix(names[j], "card"))
		return a < b
	})
	var devs []GPUDevice
	for _, card := range names {
		dev := filepath.Join(base, card, "device")
		total, err := readUintFile(filepath.Join(dev, "mem_info_vram_total"))
		if err != nil || total == 0 {
			continue
		}
		used, err := readUintFile(filepath.Join(dev, "mem_info_vram_used"))
		if err != nil || used > total {
			continue // total alone cannot say what is free
		}
		name := "AMD GPU (" + card + ")"
		if b, err := os.ReadFile(filepath.Join(dev, "product_name")); err == nil && strings.TrimSpace(string(b)) != "" {
			name = strings.TrimSpace(string(b))
		}
		devs = append(devs, GPUDevice{Name: name, TotalBytes: total, FreeBytes: total - used, Source: "sysfs"})
	}
	return devs, nil
}

func readUintFile(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
}
