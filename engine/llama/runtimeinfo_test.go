package llama

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/minisgg/studio-worker/engine"
)

// record is an _nlcBuildMetadata.json as npm's packages write it.
func record(platform, arch, gpu, release string) string {
	return `{"buildOptions":{"customCmakeOptions":{},"progressLogs":true,"platform":"` + platform +
		`","platformInfo":{"name":"Ubuntu","version":"22.04"},"arch":"` + arch + `","gpu":` + gpu +
		`,"llamaCpp":{"repo":"ggml-org/llama.cpp","release":"` + release + `"}}}`
}

// fixture makes a runtime folder holding files (name -> content).
func fixture(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestReadRuntimeInfo(t *testing.T) {
	cases := []struct {
		name    string
		files   map[string]string
		variant string
		accel   Accel
		addOn   string
		release string
		wantErr string
	}{
		{"linux CPU build", map[string]string{metadataFile: record("linux", "x64", "false", "v0.5.0"), "libllama.so": ""},
			"linux-x64", AccelCPU, "", "v0.5.0", ""},
		{"linux CPU build with the Vulkan add-on", map[string]string{metadataFile: record("linux", "x64", "false", "v0.5.0"), "libggml-vulkan.so": ""},
			"linux-x64", AccelVulkan, "libggml-vulkan.so", "v0.5.0", ""},
		{"linux CUDA build", map[string]string{metadataFile: record("linux", "x64", `"cuda"`, "v0.5.0"), "libggml-cuda.so": ""},
			"linux-x64-cuda", AccelCUDA, "", "v0.5.0", ""},
		{"linux Vulkan build", map[string]string{metadataFile: record("linux", "x64", `"vulkan"`, "v0.5.0"), "libggml-vulkan.so": ""},
			"linux-x64-vulkan", AccelVulkan, "", "v0.5.0", ""},
		{"windows Vulkan build", map[string]string{metadataFile: record("win", "x64", `"vulkan"`, "v0.4.0"), "ggml-vulkan.dll": ""},
			"win-x64-vulkan", AccelVulkan, "", "v0.4.0", ""},
		{"windows CPU build", map[string]string{metadataFile: record("win", "x64", "false", "v0.4.0")},
			"win-x64", AccelCPU, "", "v0.4.0", ""},
		{"mac Metal build", map[string]string{metadataFile: record("mac", "arm64", `"metal"`, "v0.4.0"), "libggml-metal.so": ""},
			"mac-arm64-metal", AccelMetal, "", "v0.4.0", ""},
		{"a backend this worker does not name", map[string]string{metadataFile: record("linux", "x64", `"ROCm"`, "v0.5.0")},
			"linux-x64-rocm", Accel("rocm"), "", "v0.5.0", ""},
		{"no record, a CUDA DLL", map[string]string{"ggml-cuda.dll": ""},
			"", AccelCUDA, "", "", ""},
		{"no record, no backend", map[string]string{"libllama.so": ""},
			"", AccelCPU, "", "", ""},
		{"corrupt record, judged by its files", map[string]string{metadataFile: `{"buildOptions":`, "libggml-vulkan.so": ""},
			"", AccelVulkan, "", "", "unreadable"},
		{"gpu field of the wrong type", map[string]string{metadataFile: record("linux", "x64", "3", "v0.5.0")},
			"", AccelCPU, "", "", "not false or a backend name"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := fixture(t, c.files)
			info, err := ReadRuntimeInfo(dir)
			if c.wantErr == "" && err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			if c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)) {
				t.Fatalf("error %v, want one saying %q", err, c.wantErr)
			}
			if info.Variant != c.variant || info.Accel != c.accel || info.AddOn != c.addOn || info.Release != c.release || info.Dir != dir {
				t.Errorf("got %+v, want variant %q accel %q add-on %q release %q", info, c.variant, c.accel, c.addOn, c.release)
			}
			if info.GPU() != (c.accel != AccelCPU) {
				t.Errorf("GPU() = %v for %s", info.GPU(), c.accel)
			}
		})
	}
}

// TestReadRuntimeInfoOfFetchedRuntimes reads the build records of the
// runtimes `make runtime` and the packaging steps fetched: each folder's
// name is its variant, and the accel its suffix.
func TestReadRuntimeInfoOfFetchedRuntimes(t *testing.T) {
	root := filepath.Join("..", "..", "runtime", "llama")
	ents, err := os.ReadDir(root)
	if err != nil || len(ents) == 0 {
		t.Skip("needs fetched runtimes in runtime/llama (make runtime)")
	}
	want := map[string]Accel{"": AccelCPU, "cuda": AccelCUDA, "vulkan": AccelVulkan, "metal": AccelMetal}
	for _, e := range ents {
		dir := filepath.Join(root, e.Name())
		if _, err := os.Stat(filepath.Join(dir, metadataFile)); err != nil {
			continue
		}
		info, err := ReadRuntimeInfo(dir)
		if err != nil {
			t.Errorf("%s: %v", e.Name(), err)
			continue
		}
		parts := strings.SplitN(e.Name(), "-", 3)
		suffix := ""
		if len(parts) == 3 {
			suffix = parts[2]
		}
		if info.Variant != e.Name() || info.Accel != want[suffix] || info.AddOn != "" || info.Release == "" {
			t.Errorf("%s: %+v", e.Name(), info)
		}
	}
}

func TestSummary(t *testing.T) {
	rtx := engine.GPUDevice{Name: "NVIDIA GeForce RTX 4090", TotalBytes: 24 << 30, FreeBytes: 23 << 30}
	cases := []struct {
		name string
		info RuntimeInfo
		want []string
	}{
		{"CPU build", RuntimeInfo{Accel: AccelCPU, Dir: "/opt/studio-worker/lib", Found: "next to the program", Release: "v0.5.0", Loaded: true},
			[]string{"llama.cpp runtime: CPU build from /opt/studio-worker/lib (next to the program); no GPU backend in it; llama.cpp v0.5.0"}},
		{"Vulkan in use", RuntimeInfo{Accel: AccelVulkan, Dir: "/x", Found: "setting", Loaded: true, Devices: []engine.GPUDevice{rtx}},
			[]string{"Vulkan backend loaded, using NVIDIA GeForce RTX 4090 (24 GB); Vulkan build from /x (setting)"}},
		{"add-on in use", RuntimeInfo{Accel: AccelVulkan, AddOn: "libggml-vulkan.so", Dir: "/opt/studio-worker/lib", Loaded: true, Devices: []engine.GPUDevice{rtx, rtx}},
			[]string{"Vulkan backend loaded, using NVIDIA GeForce RTX 4090 (24 GB) and 1 more GPU(s)", "CPU build with the Vulkan add-on (libggml-vulkan.so)"}},
		{"GPU build that sees no GPU", RuntimeInfo{Accel: AccelCUDA, Dir: "/c", Loaded: true},
			[]string{"CUDA build from /c; its CUDA backend sees no GPU, so it runs on the CPU"}},
		{"not loaded", RuntimeInfo{Accel: AccelCUDA, Dir: "/c", Found: LibEnv},
			[]string{"llama.cpp runtime: CUDA build from /c (" + LibEnv + ")"}},
	}
	for _, c := range cases {
		got := c.info.Summary()
		for _, w := range c.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: %q lacks %q", c.name, got, w)
			}
		}
		if strings.Contains(got, "\n") {
			t.Errorf("%s: summary is not one line: %q", c.name, got)
		}
	}
}

func TestAdvice(t *testing.T) {
	nv := []engine.GPUDevice{{Name: "NVIDIA GeForce RTX 3060", TotalBytes: 12 << 30}}
	amd := []engine.GPUDevice{{Name: "Radeon RX 7900 XTX", TotalBytes: 24 << 30}}
	cpu := RuntimeInfo{Accel: AccelCPU, Loaded: true}
	withGPUs := func(r RuntimeInfo, d []engine.GPUDevice) RuntimeInfo { r.MachineGPUs = d; return r }
	vulkanBlind := RuntimeInfo{Accel: AccelVulkan, AddOn: "libggml-vulkan.so", Loaded: true}
	vulkanSees := RuntimeInfo{Accel: AccelVulkan, Loaded: true, Devices: nv}
	cases := []struct {
		name, goos string
		info       RuntimeInfo
		want, not  []string // "" want: no advice at all
	}{
		{"no GPU in the machine", "linux", cpu, nil, nil},
		{"GPU runtime using the GPU", "linux", withGPUs(vulkanSees, nv), nil, nil},
		{"GPU runtime not loaded yet", "linux", withGPUs(RuntimeInfo{Accel: AccelCUDA}, nv), nil, nil},
		{"linux NVIDIA, CPU build", "linux", withGPUs(cpu, nv),
			[]string{"NVIDIA GeForce RTX 3060", "CPU build", "studio-worker-vulkan", "CUDA runtime", "NVIDIA driver newer than the 580 series"}, nil},
		{"linux AMD, CPU build", "linux", withGPUs(cpu, amd),
			[]string{"Radeon RX 7900 XTX", "studio-worker-vulkan"}, []string{"CUDA"}},
		{"linux Vulkan add-on that sees no GPU", "linux", withGPUs(vulkanBlind, nv),
			[]string{"does not see it", "Vulkan driver"}, []string{"apt install"}},
		{"linux CUDA build that sees no GPU", "linux", withGPUs(RuntimeInfo{Accel: AccelCUDA, Loaded: true}, nv),
			[]string{"nvidia-smi", "CUDA runtime libraries"}, nil},
		{"windows CPU build", "windows", withGPUs(cpu, nv),
			[]string{"fetches the Vulkan or CUDA runtime for it from its release feed", "driver"}, []string{"apt", "installer"}},
		{"windows GPU build that sees no GPU", "windows", withGPUs(RuntimeInfo{Accel: AccelCUDA, Loaded: true}, nv),
			[]string{"driver"}, []string{"installer"}},
		{"macOS", "darwin", withGPUs(cpu, []engine.GPUDevice{{Name: "Apple M2", TotalBytes: 16 << 30}}),
			[]string{"Metal runtime is built into Studio Worker"}, nil},
	}
	for _, c := range cases {
		got := advise(c.goos, c.info)
		if c.want == nil {
			if got != "" {
				t.Errorf("%s: advice %q, want none", c.name, got)
			}
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: advice %q lacks %q", c.name, got, w)
			}
		}
		for _, n := range c.not {
			if strings.Contains(got, n) {
				t.Errorf("%s: advice %q should not say %q", c.name, got, n)
			}
		}
	}
}

func TestLibNotFoundWording(t *testing.T) {
	installed := (&LibNotFoundError{Looked: []string{"/opt/studio-worker/lib (next to the program: no libllama.so)"}}).Error()
	if !strings.Contains(installed, "missing from this installation") || !strings.Contains(installed, "Reinstall Studio Worker") ||
		strings.Contains(installed, "make runtime") || !strings.Contains(installed, "/opt/studio-worker/lib") {
		t.Errorf("installed program: %q", installed)
	}
	dev := (&LibNotFoundError{Looked: []string{"/src/bin/lib (x)"}, SourceTree: "/src"}).Error()
	if !strings.Contains(dev, "make runtime") || !strings.Contains(dev, "/src") || !strings.Contains(dev, LibEnv) {
		t.Errorf("source tree: %q", dev)
	}

	tree := t.TempDir()
	bin := filepath.Join(tree, "bin")
	os.Mkdir(bin, 0o755)
	if got := sourceTree(bin); got != "" {
		t.Errorf("no go.mod yet, got source tree %q", got)
	}
	os.WriteFile(filepath.Join(tree, "go.mod"), []byte("module x\n"), 0o644)
	if got := sourceTree(bin); got != tree {
		t.Errorf("sourceTree(%s) = %q, want %q", bin, got, tree)
	}
}

// TestRuntimeReportOnThisMachine loads the runtime and holds its report
// against what the system says: when nvidia-smi or sysfs finds a GPU that
// the runtime does not use, the advice must name it; without one, there is
// no advice.
func TestRuntimeReportOnThisMachine(t *testing.T) {
	needLibs(t)
	if _, err := LoadRuntime("", nil); err != nil {
		t.Fatal(err)
	}
	info := Runtime()
	gpus := machineGPUs(context.Background())
	t.Logf("%s", info.Summary())
	for _, g := range gpus {
		t.Logf("the system reports %s (%s, %s)", g.Name, gb(g.TotalBytes), g.Source)
	}
	t.Logf("advice: %q", info.Advice)
	if !info.Loaded || info.Dir == "" || info.Found == "" {
		t.Fatalf("report of a loaded runtime: %+v", info)
	}
	unused := !info.GPU() || len(info.Devices) == 0
	switch {
	case len(gpus) > 0 && unused && !strings.Contains(info.Advice, gpus[0].Name):
		t.Errorf("the machine's %s goes unused, and the advice does not say so: %q", gpus[0].Name, info.Advice)
	case (len(gpus) == 0 || !unused) && info.Advice != "":
		t.Errorf("advice without an unused GPU: %q", info.Advice)
	}
}
