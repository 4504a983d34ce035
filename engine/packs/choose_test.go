package packs

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/minisgg/studio-worker/release"
)

// feedPacks is a feed's pack list as a release would carry it: llama.cpp
// for Linux (CPU, Vulkan, two CUDA builds), Windows (CPU, Vulkan, CUDA)
// and Apple silicon (Metal), and stable-diffusion.cpp's CPU builds.
func feedPacks() []release.Pack {
	p := func(rt, os, arch, backend, minDriver, variant string) release.Pack {
		return release.Pack{Runtime: rt, Version: "v0.5.0", OS: os, Arch: arch, Backend: backend, MinDriver: minDriver, Variant: variant, Format: "tar.xz"}
	}
	return []release.Pack{
		p("llama", "linux", "amd64", "cpu", "", "linux-x64"),
		p("llama", "linux", "amd64", "cuda", "525.60", "linux-x64-cuda12"),
		p("llama", "linux", "amd64", "vulkan", "", "linux-x64-vulkan"),
		p("llama", "linux", "amd64", "cuda", "580.65", "linux-x64-cuda"),
		p("llama", "windows", "amd64", "cpu", "", "win-x64"),
		p("llama", "windows", "amd64", "vulkan", "", "win-x64-vulkan"),
		p("llama", "windows", "amd64", "cuda", "580.88", "win-x64-cuda"),
		p("llama", "darwin", "arm64", "metal", "", "mac-arm64-metal"),
		p("sd", "linux", "amd64", "cpu", "", "linux-x64"),
		p("sd", "windows", "amd64", "cpu", "", "win-x64"),
	}
}

func variants(ps []release.Pack) string {
	var v []string
	for _, p := range ps {
		v = append(v, p.Variant)
	}
	return strings.Join(v, " ")
}

func TestChooseOnFakeMachines(t *testing.T) {
	linux := func(driver string, vulkan bool) Machine {
		return Machine{OS: "linux", Arch: "amd64", NVIDIADriver: driver, VulkanLoader: vulkan}
	}
	cases := []struct {
		name    string
		runtime string
		m       Machine
		want    string // variants in the order to try
		skipped string // a phrase one of Choice.Skipped holds
		wantErr string
	}{
		{"new NVIDIA driver and Vulkan: newest CUDA, older CUDA, Vulkan, CPU", "llama", linux("580.95.05", true),
			"linux-x64-cuda linux-x64-cuda12 linux-x64-vulkan linux-x64", "", ""},
		{"driver between the two CUDA builds: the older CUDA", "llama", linux("535.104.05", true),
			"linux-x64-cuda12 linux-x64-vulkan linux-x64", "needs NVIDIA driver 580.65 or newer; this computer has 535.104.05", ""},
		{"driver equal to the minimum is enough", "llama", linux("525.60", false),
			"linux-x64-cuda12 linux-x64", "needs the Vulkan loader", ""},
		{"driver too old for every CUDA pack: Vulkan", "llama", linux("470.256.02", true),
			"linux-x64-vulkan linux-x64", "needs NVIDIA driver 525.60 or newer; this computer has 470.256.02", ""},
		{"no driver, no loader: CPU", "llama", linux("", false),
			"linux-x64", "needs an NVIDIA driver, and this computer has none", ""},
		{"AMD or Intel GPU with a Vulkan loader: Vulkan", "llama", linux("", true),
			"linux-x64-vulkan linux-x64", "", ""},
		{"leading zeros compare as numbers (525.105 > 525.60)", "llama", linux("525.105.17", false),
			"linux-x64-cuda12 linux-x64", "", ""},
		{"Windows with an NVIDIA driver too old for CUDA 13", "llama", Machine{OS: "windows", Arch: "amd64", NVIDIADriver: "566.36", VulkanLoader: true},
			"win-x64-vulkan win-x64", "needs NVIDIA driver 580.88 or newer", ""},
		{"Apple silicon: Metal", "llama", Machine{OS: "darwin", Arch: "arm64", AppleSilicon: true},
			"mac-arm64-metal", "", ""},
		{"images on Linux: the CPU build", "sd", linux("580.95.05", true), "linux-x64", "", ""},
		{"a platform the feed has nothing for", "llama", Machine{OS: "linux", Arch: "arm64", VulkanLoader: true},
			"", "", "no llama.cpp runtime pack this computer (linux/arm64, no NVIDIA driver, Vulkan loader) can run; it has packs for linux/amd64, windows/amd64, darwin/arm64 only"},
		{"Metal without Apple silicon", "llama", Machine{OS: "darwin", Arch: "arm64"},
			"", "", "the Metal pack mac-arm64-metal needs a Mac with Apple silicon"},
		{"images on a Mac: none", "sd", Machine{OS: "darwin", Arch: "arm64", AppleSilicon: true},
			"", "", "it has packs for linux/amd64, windows/amd64 only"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Choose(feedPacks(), tc.runtime, tc.m)
			if tc.wantErr != "" {
				if err == nil || !errors.Is(err, ErrNoPack) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want ErrNoPack saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := variants(c.Packs); got != tc.want {
				t.Errorf("packs = %q, want %q", got, tc.want)
			}
			if tc.skipped != "" && !strings.Contains(strings.Join(c.Skipped, "\n"), tc.skipped) {
				t.Errorf("skipped = %q, want one saying %q", c.Skipped, tc.skipped)
			}
		})
	}
}

func TestChooseRefusesBadPacks(t *testing.T) {
	m := Machine{OS: "linux", Arch: "amd64", NVIDIADriver: "580.95.05", VulkanLoader: true}
	ps := []release.Pack{
		{Runtime: "llama", OS: "linux", Arch: "amd64", Backend: "rocm", Variant: "linux-x64-rocm"},
		{Runtime: "llama", OS: "linux", Arch: "amd64", Backend: "cuda", MinDriver: "latest", Variant: "linux-x64-cuda"},
		{Runtime: "llama", OS: "linux", Arch: "amd64", Backend: "cpu", Variant: "linux-x64"},
	}
	c, err := Choose(ps, "llama", m)
	if err != nil {
		t.Fatal(err)
	}
	if got := variants(c.Packs); got != "linux-x64" {
		t.Errorf("packs = %q, want the CPU pack alone", got)
	}
	all := strings.Join(c.Skipped, "\n")
	for _, want := range []string{`backend this version does not know ("rocm")`, `minimum NVIDIA driver "latest" that is not a driver version`} {
		if !strings.Contains(all, want) {
			t.Errorf("skipped = %q, want %q", c.Skipped, want)
		}
	}
}

func TestForMachineRefusesAnotherOS(t *testing.T) {
	p := release.Pack{Runtime: "sd", Version: "master-827-97d2990", OS: "windows", Arch: "amd64", Backend: "cpu", Variant: "win-x64"}
	err := ForMachine(p, Machine{OS: "linux", Arch: "amd64"})
	if !errors.Is(err, ErrOtherPlatform) {
		t.Fatalf("err = %v, want ErrOtherPlatform", err)
	}
	want := "win-x64 (stable-diffusion.cpp master-827-97d2990) is for windows/amd64, and this computer is linux/amd64; it was not installed"
	if !strings.Contains(err.Error(), want) {
		t.Errorf("err = %q, want it to say %q", err, want)
	}
}

func TestCompareDriver(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
		ok   bool
	}{
		{"535.104.05", "535.54.03", 1, true},
		{"525.60", "525.60.13", -1, true},
		{"580.65", "580.65.0", 0, true},
		{"576.02", "580.88", -1, true},
		{"580", "525.60", 0, false},
		{"", "525.60", 0, false},
		{"5x5.60", "525.60", 0, false},
	} {
		got, ok := compareDriver(tc.a, tc.b)
		if got != tc.want || ok != tc.ok {
			t.Errorf("compareDriver(%q, %q) = %d, %v; want %d, %v", tc.a, tc.b, got, ok, tc.want, tc.ok)
		}
	}
}

// fakeEnv is a machine's files and programs for detect.
func fakeEnv(goos, goarch string, files map[string]string, smi string) probeEnv {
	return probeEnv{
		goos: goos, goarch: goarch,
		readFile: func(p string) ([]byte, error) {
			if s, ok := files[p]; ok {
				return []byte(s), nil
			}
			return nil, os.ErrNotExist
		},
		exists: func(p string) bool { _, ok := files[p]; return ok },
		run: func(_ context.Context, name string, _ ...string) ([]byte, error) {
			if name == "nvidia-smi" && smi != "" {
				return []byte(smi), nil
			}
			return nil, errors.New("executable file not found in $PATH")
		},
		getenv: func(k string) string {
			if k == "SystemRoot" && goos == "windows" {
				return `C:\Windows`
			}
			return ""
		},
	}
}

func TestDetectMachine(t *testing.T) {
	const proc = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.95.05  Release Build  (dvs-builder@U16-I3-B03-4-3)  Tue Sep 23 09:32:56 UTC 2025\nGCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n"
	cases := []struct {
		name string
		env  probeEnv
		want Machine
	}{
		{"linux, NVIDIA module and Vulkan loader", fakeEnv("linux", "amd64", map[string]string{
			"/proc/driver/nvidia/version": proc, "/usr/lib/x86_64-linux-gnu/libvulkan.so.1": ""}, ""),
			Machine{OS: "linux", Arch: "amd64", NVIDIADriver: "580.95.05", VulkanLoader: true}},
		{"linux, no module: nvidia-smi", fakeEnv("linux", "amd64", nil, "535.104.05\n535.104.05\n"),
			Machine{OS: "linux", Arch: "amd64", NVIDIADriver: "535.104.05"}},
		{"linux, nothing", fakeEnv("linux", "amd64", map[string]string{"/proc/driver/nvidia/version": "garbage"}, "No devices were found\n"),
			Machine{OS: "linux", Arch: "amd64"}},
		{"windows, driver and loader", fakeEnv("windows", "amd64", map[string]string{`C:\Windows/System32/vulkan-1.dll`: ""}, "576.02\r\n"),
			Machine{OS: "windows", Arch: "amd64", NVIDIADriver: "576.02", VulkanLoader: true}},
		{"mac on Apple silicon", fakeEnv("darwin", "arm64", nil, "999.1"),
			Machine{OS: "darwin", Arch: "arm64", AppleSilicon: true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := detect(context.Background(), tc.env)
			got.Found = nil
			if got.String() != tc.want.String() || got.NVIDIADriver != tc.want.NVIDIADriver {
				t.Errorf("detect = %s (driver %q), want %s (driver %q)", got, got.NVIDIADriver, tc.want, tc.want.NVIDIADriver)
			}
		})
	}
}
