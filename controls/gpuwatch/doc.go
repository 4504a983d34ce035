// Package gpuwatch reads the machine for the controls decision (issue
// #12): which processes use a GPU, how hot and power-hungry the GPUs run
// (Probe, a controls.GPUProbe), and which of the donor's named programs
// run (Programs, a controls.ProgramProbe). It only reads: it never changes
// a driver setting (no power limits, no clocks).
//
// Sources by platform:
//   - Linux: NVML through github.com/NVIDIA/go-nvml for NVIDIA GPUs (the
//     library is dlopened at New, so a machine without the NVIDIA driver
//     builds and starts; a build without cgo uses nvidia-smi instead), and
//     the DRM fdinfo counters with the cards' hwmon sensors for AMD, Intel
//     and other DRM GPUs; /proc for the program list.
//   - Windows: nvidia-smi (go-nvml links on Linux only), run without a
//     console window; the process snapshot for the program list.
//   - macOS: no GPU process source (Probe reports unknown); ps for the
//     program list.
//
// "Using the GPU" is a rule, not a list of holders: a desktop always has
// processes holding the GPU (Xorg, the compositor, a browser), and an idle
// desktop must not read as busy. See DefaultBusyShare, displayServers,
// nvmlSource and drmSource for the rule and its sources.
//
// The package does not know the worker's own processes: the decision
// (controls) leaves them out.
package gpuwatch
