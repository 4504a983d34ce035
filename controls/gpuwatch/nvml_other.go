//go:build !(linux && cgo)

package gpuwatch

import (
	"errors"
	"runtime"
)

// openNVML: go-nvml loads libnvidia-ml with dlopen through cgo and links
// only on Linux, so other builds read NVIDIA GPUs through nvidia-smi.
func openNVML(Options) (source, func() error, error) {
	return nil, nil, errors.New("NVML is not read in-process on " + runtime.GOOS + " (nvidia-smi is used)")
}
