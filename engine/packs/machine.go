// Package packs fetches native runtime packs (llama.cpp, stable-diffusion.cpp)
// from the signed release feed for the GPU of this computer: it picks the
// best pack the machine can run (Choose), downloads it with progress,
// checks its size and sha256, unpacks it atomically into the data folder
// (engine.PacksDir), tries a GPU pack in a child process first and falls
// back to the CPU pack, saying why (Installer.Ensure). Issue #14, item 2.
package packs

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Machine is what the choice of a runtime pack depends on. DetectMachine
// reads this computer; tests describe fake ones.
type Machine struct {
	OS   string // GOOS: "linux", "windows", "darwin"
	Arch string // GOARCH: "amd64", "arm64"
	// NVIDIADriver is the installed NVIDIA driver's version ("535.104.05"),
	// "" when there is no NVIDIA driver.
	NVIDIADriver string
	// VulkanLoader says whether the Vulkan loader library is installed
	// (libvulkan.so.1, vulkan-1.dll, or MoltenVK / libvulkan.1.dylib).
	VulkanLoader bool
	// AppleSilicon is a Mac with an Apple GPU (Metal).
	AppleSilicon bool
	// Found says where each fact came from, for the log and
	// `version --verbose` ("NVIDIA driver 535.104.05 (/proc/driver/nvidia/version)").
	Found []string
}

// Platform is "os/arch", as the feed's packs are keyed.
func (m Machine) Platform() string { return m.OS + "/" + m.Arch }

// String sums the machine up in one line.
func (m Machine) String() string {
	parts := []string{m.Platform()}
	if m.NVIDIADriver != "" {
		parts = append(parts, "NVIDIA driver "+m.NVIDIADriver)
	} else {
		parts = append(parts, "no NVIDIA driver")
	}
	if m.VulkanLoader {
		parts = append(parts, "Vulkan loader")
	} else {
		parts = append(parts, "no Vulkan loader")
	}
	if m.AppleSilicon {
		parts = append(parts, "Apple silicon")
	}
	return strings.Join(parts, ", ")
}

// probeEnv is what detection reads, so that every platform's rules run in
// tests on any machine.
type probeEnv struct {
	goos, goarch string
	readFile     func(string) ([]byte, error)
	exists       func(string) bool
	run          func(ctx context.Context, name string, args ...string) ([]byte, error)
	getenv       func(string) string
}

func realEnv() probeEnv {
	return probeEnv{
		goos: runtime.GOOS, goarch: runtime.GOARCH,
		readFile: os.ReadFile,
		exists: func(p string) bool {
			st, err := os.Stat(p)
			return err == nil && !st.IsDir()
		},
		run: func(ctx context.Context, name string, args ...string) ([]byte, error) {
			ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			return exec.CommandContext(ctx, name, args...).Output()
		},
		getenv: os.Getenv,
	}
}

// DetectMachine reads this computer: the NVIDIA driver's version (Linux:
// /proc/driver/nvidia/version, else nvidia-smi; Windows and others:
// nvidia-smi, which NVIDIA's driver installs), whether a Vulkan loader is
// installed (its library in the system's library folders), and Apple
// silicon (darwin/arm64). NVML is not used: its Go binding needs cgo, and
// these read the same driver.
func DetectMachine(ctx context.Context) Machine { return detect(ctx, realEnv()) }

func detect(ctx context.Context, env probeEnv) Machine {
	m := Machine{OS: env.goos, Arch: env.goarch}
	m.AppleSilicon = env.goos == "darwin" && env.goarch == "arm64"
	if env.goos == "linux" {
		const proc = "/proc/driver/nvidia/version"
		if b, err := env.readFile(proc); err == nil {
			if v := parseProcNvidiaVersion(b); v != "" {
				m.NVIDIADriver = v
				m.Found = append(m.Found, fmt.Sprintf("NVIDIA driver %s (%s)", v, proc))
			}
		}
	}
	if m.NVIDIADriver == "" && env.goos != "darwin" {
		if out, err := env.run(ctx, "nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"); err == nil {
			if v := parseSMIDriver(out); v != "" {
				m.NVIDIADriver = v
				m.Found = append(m.Found, fmt.Sprintf("NVIDIA driver %s (nvidia-smi)", v))
			}
		}
	}
	for _, p := range vulkanLoaderPaths(env) {
		if env.exists(p) {
			m.VulkanLoader = true
			m.Found = append(m.Found, "Vulkan loader "+p)
			break
		}
	}
	return m
}

// parseProcNvidiaVersion reads the driver version from the kernel module's
// banner: "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat
// Aug 19 01:15:15 UTC 2023" (also "... Open Kernel Module for x86_64 ...").
func parseProcNvidiaVersion(b []byte) string {
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "NVRM version:") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if driverVersionLike(f) {
				return f
			}
		}
	}
	return ""
}

// parseSMIDriver reads `nvidia-smi --query-gpu=driver_version
// --format=csv,noheader`: one line per GPU, the same driver on each.
func parseSMIDriver(out []byte) string {
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.TrimSpace(line); driverVersionLike(f) {
			return f
		}
	}
	return ""
}

// driverVersionLike is "number.number[.number]" (NVIDIA's driver versions:
// "535.104.05", "580.65", Windows' "576.02").
func driverVersionLike(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) < 2 || len(parts) > 4 {
		return false
	}
	for _, p := range parts {
		if p == "" || strings.Trim(p, "0123456789") != "" {
			return false
		}
	}
	return true
}

// vulkanLoaderPaths lists where the Vulkan loader is installed on env's
// platform: the distributions' library folders and LD_LIBRARY_PATH on
// Linux, System32 on Windows, Homebrew and the Vulkan SDK's folders
// (MoltenVK) on macOS.
func vulkanLoaderPaths(env probeEnv) []string {
	var paths []string
	switch env.goos {
	case "windows":
		root := env.getenv("SystemRoot")
		if root == "" {
			root = `C:\Windows`
		}
		paths = append(paths, filepath.Join(root, "System32", "vulkan-1.dll"))
	case "darwin":
		for _, d := range []string{"/usr/local/lib", "/opt/homebrew/lib"} {
			paths = append(paths, filepath.Join(d, "libvulkan.1.dylib"), filepath.Join(d, "libMoltenVK.dylib"))
		}
	default:
		var dirs []string
		for _, d := range filepath.SplitList(env.getenv("LD_LIBRARY_PATH")) {
			if d != "" {
				dirs = append(dirs, d)
			}
		}
		multiarch := map[string]string{"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}[env.goarch]
		if multiarch != "" {
			dirs = append(dirs, "/usr/lib/"+multiarch, "/lib/"+multiarch)
		}
		dirs = append(dirs, "/usr/lib64", "/lib64", "/usr/lib", "/lib", "/usr/local/lib")
		for _, d := range dirs {
			paths = append(paths, filepath.Join(d, "libvulkan.so.1"))
		}
	}
	return paths
}

// compareDriver compares two NVIDIA driver versions number by number
// ("535.104.05" > "535.54.03"; a missing part counts as 0). It returns -1,
// 0 or 1, and false when either is not a driver version. NVIDIA's versions
// are not semver (a leading zero in "05" is part of the format), hence
// this and not a semver library.
func compareDriver(a, b string) (int, bool) {
	if !driverVersionLike(a) || !driverVersionLike(b) {
		return 0, false
	}
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < max(len(pa), len(pb)); i++ {
		var x, y int
		if i < len(pa) {
			x, _ = strconv.Atoi(pa[i])
		}
		if i < len(pb) {
			y, _ = strconv.Atoi(pb[i])
		}
		switch {
		case x < y:
			return -1, true
		case x > y:
			return 1, true
		}
	}
	return 0, true
}
