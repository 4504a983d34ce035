package llama

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"testing"

	"github.com/minisgg/studio-worker/engine"
)

// childEnv makes the test binary act as `studio-worker runtime-check`
// (TestMain): "check" runs the real check, "crash" dies the way a CUDA
// build whose PTX the driver cannot compile does, "fail" fails in order.
const childEnv = "LLAMA_TEST_CHECK_CHILD"

// ptxLine is what ggml printed on the H100 before aborting (docs/gpu-checks.md).
const ptxLine = "CUDA error: the provided PTX was compiled with an unsupported toolchain."

func runAsChild(mode, dir string) int {
	switch mode {
	case "check":
		return RuntimeCheckMain([]string{dir}, os.Stdout, os.Stderr)
	case "crash":
		fmt.Fprintln(os.Stderr, "ggml_cuda_init: found 1 CUDA devices:")
		fmt.Fprintln(os.Stderr, ptxLine)
		fmt.Fprintln(os.Stderr, "  current device: 0, in function ggml_cuda_kernel_can_use_pdl at ggml-cuda/common.cuh:1045")
		fmt.Fprintln(os.Stderr, "/llama.cpp/ggml/src/ggml-cuda/ggml-cuda.cu:88: CUDA error")
		// Die by the signal, as ggml_abort does, after the Go runtime's own
		// dump: more lines after the cause for reasonLine to see past.
		debug.SetTraceback("crash")
		p, _ := os.FindProcess(os.Getpid())
		p.Signal(syscall.SIGABRT)
		select {}
	case "fail":
		fmt.Fprintln(os.Stderr, "ggml_vulkan: something was said first")
		fmt.Fprintln(os.Stderr, failPrefix+"loading a test model: out of device memory")
		return 1
	}
	return 3
}

// programElsewhere makes the runtime search see the program in an empty
// folder: a test binary built into a source tree's bin/ would otherwise
// find that tree's CPU runtime, as the real program rightly does.
func programElsewhere(t *testing.T) {
	t.Helper()
	prev := executable
	fake := filepath.Join(t.TempDir(), "bin", "studio-worker")
	executable = func() (string, error) { return fake, nil }
	t.Cleanup(func() { executable = prev })
}

// childChecker runs this test binary as the check's child in mode.
func childChecker(t *testing.T, mode string) RuntimeChecker {
	t.Helper()
	t.Setenv(childEnv, mode)
	return ChildChecker(os.Args[0], "runtime-check")
}

// runtimeTree makes <root>/<gpuName> holding a fake GPU runtime (its build
// record and an empty libllama) and, when cpu is set, <root>/<engine.PlatformVariant()>
// holding a fake CPU one.
func runtimeTree(t *testing.T, gpuName, gpuRecord string, cpu bool) (gpuDir, cpuDir string) {
	t.Helper()
	root := t.TempDir()
	gpuDir = filepath.Join(root, gpuName)
	os.Mkdir(gpuDir, 0o755)
	os.WriteFile(filepath.Join(gpuDir, metadataFile), []byte(gpuRecord), 0o644)
	os.WriteFile(filepath.Join(gpuDir, libFile()), nil, 0o644)
	if cpu {
		cpuDir = filepath.Join(root, engine.PlatformVariant())
		os.Mkdir(cpuDir, 0o755)
		os.WriteFile(filepath.Join(cpuDir, metadataFile), []byte(record("linux", "x64", "false", "v0.5.0")), 0o644)
		os.WriteFile(filepath.Join(cpuDir, libFile()), nil, 0o644)
	}
	return gpuDir, cpuDir
}

func TestReasonLine(t *testing.T) {
	cases := []struct{ out, want string }{
		{"noise\n" + ptxLine + "\n  current device: 0\n/x/ggml-cuda.cu:88: CUDA error\nSIGABRT: abort\n", ptxLine},
		{"a\n" + failPrefix + "no room\n", "no room"},
		{"ggml_vulkan: Error creating device\nbye\n", "ggml_vulkan: Error creating device"},
		{"first\r\nlast\r\n", "last"},
		{"", ""},
	}
	for _, c := range cases {
		if got := reasonLine(c.out); got != c.want {
			t.Errorf("reasonLine(%q) = %q, want %q", c.out, got, c.want)
		}
	}
	if got := reasonLine(strings.Repeat("x", 1000)); len([]rune(got)) != 301 {
		t.Errorf("a long line is cut to 300 characters and an ellipsis, got %d", len([]rune(got)))
	}
}

// A CUDA runtime whose child check crashes is not loaded; the CPU runtime
// beside it is, and the reason says what happened in words.
func TestChooseRuntimeFallsBackWhenTheChildCrashes(t *testing.T) {
	t.Setenv(LibEnv, "")
	gpuDir, cpuDir := runtimeTree(t, "linux-x64-cuda", record("linux", "x64", `"cuda"`, "v0.5.0"), true)
	info, err := chooseRuntime(context.Background(), libCandidate{dir: gpuDir, from: "setting"}, gpuDir, childChecker(t, "crash"))
	if err != nil {
		t.Fatal(err)
	}
	if info.Dir != cpuDir || info.Accel != AccelCPU || info.Found != "beside it" {
		t.Errorf("chose %+v, want the CPU runtime %s", info, cpuDir)
	}
	want := "the CUDA runtime in " + gpuDir + " crashed on this GPU (signal: aborted): " + ptxLine + "; using the CPU runtime in " + cpuDir + " instead"
	if info.Problem != want {
		t.Errorf("problem\n got %q\nwant %q", info.Problem, want)
	}
}

// Without a CPU runtime anywhere, the GPU runtime is refused with the reason
// (text jobs off) instead of taking the worker down.
func TestChooseRuntimeRefusesWhenNoCPURuntime(t *testing.T) {
	t.Setenv(LibEnv, "")
	programElsewhere(t)
	gpuDir, _ := runtimeTree(t, "win-x64-vulkan", record("win", "x64", `"vulkan"`, "v0.4.0"), false)
	_, err := chooseRuntime(context.Background(), libCandidate{dir: gpuDir, from: "setting"}, gpuDir, childChecker(t, "fail"))
	if err == nil {
		t.Fatal("a runtime that failed its check was chosen")
	}
	for _, w := range []string{"the Vulkan runtime in " + gpuDir + " failed its check: loading a test model: out of device memory", "text jobs are off"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%q lacks %q", err, w)
		}
	}
}

// A CPU runtime and a GPU one that passes are never replaced; without a
// checker (a program that cannot start itself) nothing is tried.
func TestChooseRuntimeKeepsWhatWorks(t *testing.T) {
	gpuDir, cpuDir := runtimeTree(t, "linux-x64-vulkan", record("linux", "x64", `"vulkan"`, "v0.5.0"), true)
	calls := 0
	pass := func(context.Context, string) error { calls++; return nil }
	if info, err := chooseRuntime(context.Background(), libCandidate{dir: cpuDir, from: "setting"}, "", pass); err != nil || info.Dir != cpuDir || calls != 0 {
		t.Errorf("CPU runtime: %+v %v, %d checks", info, err, calls)
	}
	if info, err := chooseRuntime(context.Background(), libCandidate{dir: gpuDir, from: "setting"}, "", pass); err != nil || info.Dir != gpuDir || info.Problem != "" || calls != 1 {
		t.Errorf("passing GPU runtime: %+v %v, %d checks", info, err, calls)
	}
	if info, err := chooseRuntime(context.Background(), libCandidate{dir: gpuDir, from: "setting"}, "", nil); err != nil || info.Dir != gpuDir {
		t.Errorf("no checker: %+v %v", info, err)
	}
	// The add-on of a CPU build is a GPU runtime too, and on Linux the
	// refusal says which package to remove.
	addOn := fixture(t, map[string]string{metadataFile: record("linux", "x64", "false", "v0.5.0"), libFile(): "", "libggml-vulkan.so": ""})
	t.Setenv(LibEnv, "")
	programElsewhere(t)
	fail := func(context.Context, string) error {
		return &CheckError{Crashed: true, Exit: "signal: segmentation fault"}
	}
	_, err := chooseRuntime(context.Background(), libCandidate{dir: addOn, from: "next to the program"}, "", fail)
	if err == nil || !strings.Contains(err.Error(), "the Vulkan add-on (libggml-vulkan.so) in "+addOn+" crashed on this GPU (signal: segmentation fault)") {
		t.Fatalf("add-on: %v", err)
	}
	if thisOS() == "linux" && !strings.Contains(err.Error(), "remove the studio-worker-vulkan package") {
		t.Errorf("add-on refusal should name the package: %v", err)
	}
}

// The real check, in a real child: the runtime loads, the tiny model runs.
func TestRuntimeCheckChildOnTheRealRuntime(t *testing.T) {
	dir := needLibs(t)
	if err := childChecker(t, "check")(context.Background(), dir); err != nil {
		t.Fatalf("the check failed on %s: %v", dir, err)
	}
	if err := childChecker(t, "check")(context.Background(), t.TempDir()); err == nil ||
		!strings.Contains(err.Error(), "failed its check") || !strings.Contains(err.Error(), "no "+libFile()) {
		t.Fatalf("a folder without libraries: %v", err)
	}
}

// TestEngineSurvivesACrashingGPURuntime runs the engine in a fresh process
// (the libraries load once per process) whose runtime folder is a CUDA
// build that crashes its check: the engine must come up, without LLM, and
// say why; with a CPU runtime beside it, it must serve on that one.
func TestEngineSurvivesACrashingGPURuntime(t *testing.T) {
	if os.Getenv("LLAMA_TEST_INNER") == "" {
		for _, withCPU := range []string{"", "1"} {
			if withCPU != "" {
				needLibs(t)
			}
			cmd := exec.Command(os.Args[0], "-test.run=^TestEngineSurvivesACrashingGPURuntime$", "-test.count=1", "-test.v")
			cmd.Env = append(os.Environ(), "LLAMA_TEST_INNER=1", "LLAMA_TEST_INNER_CPU="+withCPU)
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.Contains(string(out), "--- PASS") {
				t.Fatalf("inner run (CPU runtime beside it: %q) failed: %v\n%s", withCPU, err, out)
			}
		}
		return
	}
	realCPU := ""
	if os.Getenv("LLAMA_TEST_INNER_CPU") != "" {
		realCPU = needLibs(t)
	}
	t.Setenv(LibEnv, "")
	programElsewhere(t)
	gpuDir, cpuDir := runtimeTree(t, "linux-x64-cuda", record("linux", "x64", `"cuda"`, "v0.5.0"), false)
	if realCPU != "" {
		cpuDir = filepath.Join(filepath.Dir(gpuDir), engine.PlatformVariant())
		if err := os.Symlink(realCPU, cpuDir); err != nil {
			t.Skip("needs symbolic links: " + err.Error())
		}
	}
	SetRuntimeChecker(childChecker(t, "crash"))
	defer SetRuntimeChecker(nil)
	machineGPUs = func(context.Context) []engine.GPUDevice { return nil }
	rec := &recorder{}
	e := New(Config{LibDir: gpuDir, Threads: 1, Log: slog.New(rec)})
	if realCPU == "" {
		err := e.LibError()
		if err == nil || !strings.Contains(err.Error(), "crashed on this GPU") || !strings.Contains(err.Error(), ptxLine) {
			t.Fatalf("LibError = %v, want the crash in words", err)
		}
		if len(e.Kinds()) != 0 {
			t.Fatalf("advertises %v without a runtime", e.Kinds())
		}
		// Asked again (a settings change to the same folder), it does not
		// start another child to learn the same thing.
		SetRuntimeChecker(func(context.Context, string) error { return errors.New("checked twice") })
		if _, err := LoadRuntime(gpuDir, nil); err == nil || strings.Contains(err.Error(), "checked twice") {
			t.Fatalf("second load: %v", err)
		}
		return
	}
	if err := e.LibError(); err != nil {
		t.Fatalf("the CPU runtime beside it should serve: %v", err)
	}
	if k := e.Kinds(); len(k) != 1 || k[0] != engine.KindLLM {
		t.Fatalf("kinds %v", k)
	}
	info := e.Runtime()
	if !info.Loaded || info.Accel != AccelCPU || !strings.Contains(info.Problem, "crashed on this GPU") ||
		!strings.Contains(info.Problem, "using the CPU runtime in "+cpuDir) {
		t.Fatalf("runtime %+v", info)
	}
	if len(rec.find("crashed on this GPU")) == 0 || len(rec.find("llama.cpp runtime: CPU build from "+cpuDir)) == 0 {
		t.Fatal("the log should say what crashed and which runtime is used")
	}
}
