package llama

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/minisgg/studio-worker/engine"
)

// Accel is the kind of processor a llama.cpp runtime build computes on.
type Accel string

const (
	AccelCPU    Accel = "CPU"
	AccelCUDA   Accel = "CUDA"
	AccelVulkan Accel = "Vulkan"
	AccelMetal  Accel = "Metal"
)

// metadataFile is the build record npm's llama.cpp packages carry; every
// runtime folder keeps it (packaging/runtimes.json lists it).
const metadataFile = "_nlcBuildMetadata.json"

// RuntimeInfo says which llama.cpp runtime this process uses and why.
type RuntimeInfo struct {
	// Variant is the build's name as in packaging/runtimes.json
	// ("linux-x64", "win-x64-cuda", ...), from its build record; "" when
	// the folder has none.
	Variant string
	// Accel is what the folder computes on: the build's own GPU backend,
	// or one installed beside a CPU build (AddOn).
	Accel Accel
	// AddOn names a GPU backend library installed beside a CPU build (the
	// Linux studio-worker-vulkan package adds libggml-vulkan.so); "" when
	// the build itself carries its backend.
	AddOn string
	Dir   string
	// Found says where the folder came from: "setting",
	// $STUDIO_WORKER_LLAMA_LIB, "next to the program", ...
	Found string
	// Release is the llama.cpp release of the build ("" when unknown).
	Release string

	// Loaded is true once the libraries are loaded in this process.
	Loaded bool
	// Devices are the GPUs ggml sees once loaded (the CPU left out).
	Devices []engine.GPUDevice
	// MachineGPUs are the GPUs the system itself reports (nvidia-smi,
	// sysfs), whatever the runtime sees; nil when none is known.
	MachineGPUs []engine.GPUDevice
	// Problem says why another runtime than the one found is used, or why
	// none is (a GPU runtime that failed its check in a child process).
	Problem string
	// Advice tells the donor what to install when this computer has a GPU
	// that the loaded runtime cannot use; "" when there is nothing to do.
	Advice string
}

// buildMetadata is the part of _nlcBuildMetadata.json we read.
type buildMetadata struct {
	BuildOptions struct {
		Platform string          `json:"platform"`
		Arch     string          `json:"arch"`
		GPU      json.RawMessage `json:"gpu"` // false, or "cuda" / "vulkan" / "metal"
		LlamaCpp struct {
			Release string `json:"release"`
		} `json:"llamaCpp"`
	} `json:"buildOptions"`
}

// gpuBackends are the ggml GPU backends a folder can hold, by library name.
var gpuBackends = []struct {
	name  string // ggml-<name>
	accel Accel
}{
	{"cuda", AccelCUDA},
	{"vulkan", AccelVulkan},
	{"metal", AccelMetal},
}

// ReadRuntimeInfo describes the runtime in dir without loading it: the
// build record says which build it is, and a GPU backend library beside a
// CPU build is an add-on. A folder without a build record is judged by
// its backend libraries alone.
func ReadRuntimeInfo(dir string) (RuntimeInfo, error) {
	info := RuntimeInfo{Dir: dir, Accel: AccelCPU}
	record := filepath.Join(dir, metadataFile)
	var recErr error
	b, err := os.ReadFile(record)
	switch {
	case err == nil:
		var md buildMetadata
		if err := json.Unmarshal(b, &md); err != nil {
			recErr = fmt.Errorf("the runtime's build record %s is unreadable: %v", record, err)
			break
		}
		bo := md.BuildOptions
		gpu, err := parseGPUField(bo.GPU)
		if err != nil {
			recErr = fmt.Errorf("the runtime's build record %s: %v", record, err)
			break
		}
		info.Release = bo.LlamaCpp.Release
		if bo.Platform != "" && bo.Arch != "" {
			info.Variant = bo.Platform + "-" + bo.Arch
			if gpu != "" {
				info.Variant += "-" + gpu
			}
		}
		if gpu != "" {
			info.Accel = accelOf(gpu)
			return info, nil
		}
	case !os.IsNotExist(err):
		recErr = fmt.Errorf("cannot read the runtime's build record: %v", err)
	}
	// A CPU build, or a folder without a usable record: any GPU backend
	// library in it is one ggml_backend_load_all_from_path will load.
	for _, gb := range gpuBackends {
		if lib := backendLibIn(dir, gb.name); lib != "" {
			info.Accel = gb.accel
			if info.Variant != "" {
				info.AddOn = lib
			}
			break
		}
	}
	return info, recErr
}

// parseGPUField reads the record's gpu field: false, or a backend name.
func parseGPUField(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" || string(raw) == "false" {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fmt.Errorf("gpu is %s, not false or a backend name", raw)
	}
	return strings.ToLower(s), nil
}

func accelOf(gpu string) Accel {
	for _, gb := range gpuBackends {
		if gb.name == gpu {
			return gb.accel
		}
	}
	// A backend this worker does not know by name: still a GPU build, and
	// the donor should see its own name.
	return Accel(gpu)
}

// backendLibIn returns the file name of ggml's <name> backend in dir, ""
// when there is none. npm names them libggml-<name>.so on Linux and macOS
// and ggml-<name>.dll on Windows.
func backendLibIn(dir, name string) string {
	for _, f := range []string{"libggml-" + name + ".so", "ggml-" + name + ".dll", "libggml-" + name + ".dylib"} {
		if st, err := os.Stat(filepath.Join(dir, f)); err == nil && !st.IsDir() {
			return f
		}
	}
	return ""
}

// GPU says whether the folder has a GPU backend.
func (r RuntimeInfo) GPU() bool { return r.Accel != AccelCPU && r.Accel != "" }

// what names the build for a sentence: "CPU build", "CUDA build", "CPU
// build with the Vulkan add-on".
func (r RuntimeInfo) what() string {
	if r.AddOn != "" {
		return "CPU build with the " + string(r.Accel) + " add-on (" + r.AddOn + ")"
	}
	return string(r.Accel) + " build"
}

// Summary is the one line that says which runtime this is, where it came
// from and what it computes on.
func (r RuntimeInfo) Summary() string {
	var b strings.Builder
	b.WriteString("llama.cpp runtime: ")
	if r.Loaded && r.GPU() && len(r.Devices) > 0 {
		d := r.Devices[0]
		fmt.Fprintf(&b, "%s backend loaded, using %s (%s)", r.Accel, d.Name, gb(d.TotalBytes))
		if len(r.Devices) > 1 {
			fmt.Fprintf(&b, " and %d more GPU(s)", len(r.Devices)-1)
		}
		fmt.Fprintf(&b, "; %s from %s", r.what(), r.origin())
	} else {
		fmt.Fprintf(&b, "%s from %s", r.what(), r.origin())
		switch {
		case !r.GPU():
			b.WriteString("; no GPU backend in it")
		case r.Loaded:
			fmt.Fprintf(&b, "; its %s backend sees no GPU, so it runs on the CPU", r.Accel)
		}
	}
	if r.Release != "" {
		b.WriteString("; llama.cpp " + r.Release)
	}
	return b.String()
}

func (r RuntimeInfo) origin() string {
	if r.Found == "" {
		return r.Dir
	}
	return r.Dir + " (" + r.Found + ")"
}

func gb(b uint64) string { return fmt.Sprintf("%.0f GB", float64(b)/float64(1<<30)) }

// advise says what the donor can install when the machine has a GPU that
// the runtime does not use. goos is a parameter so that every platform's
// wording is tested on any machine.
func advise(goos string, r RuntimeInfo) string {
	if len(r.MachineGPUs) == 0 || (r.GPU() && (!r.Loaded || len(r.Devices) > 0)) {
		return ""
	}
	gpu := r.MachineGPUs[0].Name
	nvidia := strings.Contains(strings.ToLower(gpu), "nvidia")
	var problem string
	if r.GPU() {
		problem = fmt.Sprintf("This computer has a GPU (%s), but the %s runtime's backend does not see it, so text jobs run on the CPU.", gpu, r.Accel)
	} else {
		problem = fmt.Sprintf("This computer has a GPU (%s), but the llama.cpp runtime is a CPU build, so text jobs run on the CPU.", gpu)
	}
	switch goos {
	case "linux":
		switch r.Accel {
		case AccelVulkan:
			return problem + " Install the Vulkan driver for your GPU (for NVIDIA, the driver's Vulkan support; for AMD and Intel, Mesa's), then restart Studio Worker."
		case AccelCUDA:
			return problem + " Check the NVIDIA driver (nvidia-smi must list the GPU) and that the CUDA runtime libraries the build needs are installed, then restart Studio Worker."
		}
		s := problem + " To use the GPU, install the studio-worker-vulkan package (sudo apt install studio-worker-vulkan)"
		if nvidia {
			s += ", or point the llama library folder in settings at a CUDA runtime (the CUDA 13 build needs an NVIDIA driver newer than the 580 series)"
		}
		return s + ", then restart Studio Worker."
	case "windows":
		if r.GPU() {
			return problem + " Update your GPU's driver, then restart Studio Worker."
		}
		// The installer carries the CPU runtime alone; the GPU one comes
		// as a runtime pack from the release feed (engine/packs).
		return problem + " Studio Worker fetches the Vulkan or CUDA runtime for it from its release feed when one works here (the Logs page says what happened); updating the GPU's driver and restarting Studio Worker gives it another try."
	case "darwin":
		return problem + " The Metal runtime is built into Studio Worker for Apple silicon: reinstall Studio Worker from its .dmg."
	}
	return problem
}

// machineGPUs asks the system (nvidia-smi, sysfs) which GPUs it has,
// leaving ggml out: the question is whether the runtime misses one. A
// variable so that tests can stand in for the machine.
var machineGPUs = func(ctx context.Context) []engine.GPUDevice {
	info := engine.NewSystemProbe(engine.SystemProbeOptions{Probers: []engine.DeviceProber{}}).Probe(ctx)
	return info.Devices
}

// Runtime describes the llama.cpp runtime this process loaded (Loaded is
// false when none did).
func Runtime() RuntimeInfo {
	runtimeState.mu.Lock()
	defer runtimeState.mu.Unlock()
	return runtimeState.info
}

// Runtime describes the llama.cpp runtime the engine uses: which build,
// from where and why, the GPUs it sees, and advice for the donor.
func (e *Engine) Runtime() RuntimeInfo { return Runtime() }

func thisOS() string { return runtime.GOOS }
