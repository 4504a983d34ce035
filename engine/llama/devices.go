package llama

import (
	"errors"

	yz "github.com/hybridgroup/yzma/pkg/llama"

	"github.com/minisgg/studio-worker/engine"
)

// Devices lists the GPUs (and integrated GPUs) that the loaded ggml backends
// see, with their total and free memory, through ggml's backend device API.
// This is the first source of GPU facts: it sees exactly what llama.cpp will
// offload to, whatever the vendor. The CPU device is left out.
func Devices() ([]engine.GPUDevice, error) {
	runtimeState.mu.Lock()
	defer runtimeState.mu.Unlock()
	return devicesLocked()
}

// devicesLocked is Devices with runtimeState.mu held.
func devicesLocked() ([]engine.GPUDevice, error) {
	if !runtimeState.loaded {
		return nil, errors.New("llama.cpp libraries are not loaded")
	}
	var out []engine.GPUDevice
	n := yz.GGMLBackendDeviceCount()
	for i := uint64(0); i < n; i++ {
		dev := yz.GGMLBackendDeviceGet(i)
		if dev == 0 {
			continue
		}
		switch yz.GGMLBackendDevType(dev) {
		case yz.GGMLBackendDeviceTypeGPU, yz.GGMLBackendDeviceTypeIGPU:
		default:
			continue
		}
		free, total := yz.GGMLBackendDeviceMemory(dev)
		if total == 0 {
			// A backend that cannot tell its memory says nothing useful;
			// leave it to the other probes rather than report 0 GB.
			continue
		}
		name := yz.GGMLBackendDeviceDescription(dev)
		if name == "" {
			name = yz.GGMLBackendDeviceName(dev)
		}
		out = append(out, engine.GPUDevice{Name: name, TotalBytes: total, FreeBytes: free, Source: "ggml"})
	}
	return out, nil
}

// RegisterGPUProber makes Devices the first GPU probe of the engine package.
// Call it once the runtime has loaded.
func RegisterGPUProber() (unregister func()) {
	return engine.RegisterProber("ggml", Devices)
}
