package gpuwatch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/minisgg/studio-worker/controls"
)

func TestParseSMIProcesses(t *testing.T) {
	out := "" +
		"4242, 5120, NVIDIA GeForce RTX 4070, /usr/bin/blender\n" +
		"  777 , [N/A], NVIDIA GeForce RTX 4070, C:\\Program Files\\Game, Inc\\game.exe\n" + // WDDM: no memory figure; a comma in the path
		"901, 64, [N/A], [Insufficient Permissions]\n" +
		"\n"
	got, err := parseSMIProcesses([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	want := []controls.GPUProcess{
		{PID: 4242, Name: "blender", Device: "NVIDIA GeForce RTX 4070", MemoryBytes: 5120 << 20},
		{PID: 777, Name: "game.exe", Device: "NVIDIA GeForce RTX 4070"},
		{PID: 901, MemoryBytes: 64 << 20},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	for _, empty := range []string{"", "\n", "No running processes found\n"} {
		got, err := parseSMIProcesses([]byte(empty))
		if err != nil || got == nil || len(got) != 0 {
			t.Errorf("%q: %+v, %v; want an empty, known list", empty, got, err)
		}
	}
	for _, bad := range []string{
		"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n",
		"4242, 5120\n",              // fields missing
		"[N/A], 10, GPU, x\n",       // no PID
		"-3, 10, GPU, x\n",          // not a PID
		"4242, 1, GPU, a\nbroken\n", // one bad line spoils the list
	} {
		if got, err := parseSMIProcesses([]byte(bad)); err == nil {
			t.Errorf("%q: read as %+v, want an error", bad, got)
		}
	}
}

func TestParseSMIGPUs(t *testing.T) {
	cases := []struct {
		out  string
		want smiReadings
	}{
		{"45, 30.12\n", smiReadings{45, true, 30.12, true}},
		{"45, 30.12\n71, 250.50\n", smiReadings{71, true, 250.5, true}},
		{"45, [N/A]\n", smiReadings{45, true, 0, false}},
		{"[Not Supported], [Not Supported]\n", smiReadings{}},
		{"N/A, \n", smiReadings{}},
		{"50, [N/A]\n40, 90.5\n", smiReadings{50, true, 90.5, true}},
		{"61 C, 120.00 W\n", smiReadings{61, true, 120, true}}, // units, were nounits ignored
		{"NaN, 3\n", smiReadings{0, false, 3, true}},
	}
	for _, c := range cases {
		got, err := parseSMIGPUs([]byte(c.out))
		if err != nil || got != c.want {
			t.Errorf("%q: %+v, %v; want %+v", c.out, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "\n", "45\n", "45, 30, 12\n", "No devices were found\n"} {
		if got, err := parseSMIGPUs([]byte(bad)); err == nil {
			t.Errorf("%q: read as %+v, want an error", bad, got)
		}
	}
}

// fakeSMI puts a stand-in nvidia-smi first on PATH: it answers the
// process query with procs and the GPU query with gpus, or, when fail is
// set, fails with exit code 9 and the driver's message as the real one
// does. On Unix it is a shell script; on Windows a copy of this test
// program named nvidia-smi.exe (fakeSMIMain), run the way the probe runs
// it there (no console window).
func fakeSMI(t *testing.T, procs, gpus string, fail bool) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "gpuwatch-smi-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) }) // best effort under Wine
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	if runtime.GOOS == "windows" {
		self, err := os.Executable()
		if err != nil {
			t.Skipf("this system does not say which program runs: %v", err)
		}
		data, err := os.ReadFile(self)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "nvidia-smi.exe")
		if err := os.WriteFile(path, data, 0o755); err != nil {
			t.Fatal(err)
		}
		mode := "ok"
		if fail {
			mode = "fail"
		}
		t.Setenv(fakeSMIEnv, mode)
		t.Setenv(fakeSMIEnv+"_PROCS", procs)
		t.Setenv(fakeSMIEnv+"_GPUS", gpus)
		return path
	}
	script := "#!/bin/sh\n"
	if fail {
		script += "echo \"" + smiDriverFailure + "\"\nexit 9\n"
	} else {
		script += "case \"$1\" in\n" +
			"--query-compute-apps=pid,used_memory,gpu_name,process_name) [ \"$2\" = --format=csv,noheader,nounits ] || exit 2; printf '%s' '" + procs + "' ;;\n" +
			"--query-gpu=temperature.gpu,power.draw) [ \"$2\" = --format=csv,noheader,nounits ] || exit 2; printf '%s' '" + gpus + "' ;;\n" +
			"*) echo \"unknown option $1\" >&2; exit 2 ;;\nesac\n"
	}
	path := filepath.Join(dir, "nvidia-smi")
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

const (
	fakeSMIEnv       = "GPUWATCH_TEST_FAKE_NVIDIA_SMI"
	smiDriverFailure = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running."
)

// fakeSMIMain is the stand-in nvidia-smi.exe's main (see TestMain).
func fakeSMIMain(mode string, args []string) int {
	if mode == "fail" {
		fmt.Println(smiDriverFailure)
		return 9
	}
	if len(args) != 2 || args[1] != "--format=csv,noheader,nounits" {
		fmt.Fprintf(os.Stderr, "unknown options %q\n", args)
		return 2
	}
	switch args[0] {
	case "--query-compute-apps=pid,used_memory,gpu_name,process_name":
		fmt.Print(os.Getenv(fakeSMIEnv + "_PROCS"))
	case "--query-gpu=temperature.gpu,power.draw":
		fmt.Print(os.Getenv(fakeSMIEnv + "_GPUS"))
	default:
		fmt.Fprintf(os.Stderr, "unknown option %s\n", args[0])
		return 2
	}
	return 0
}

func TestSMIRunner(t *testing.T) {
	path := fakeSMI(t, "4242, 5120, NVIDIA GeForce RTX 4070, /usr/bin/blender\n", "63, 182.40\n", false)
	p := New(Options{NoNVML: true, NoDRM: true})
	defer p.Close()
	if got := p.Sources(); !reflect.DeepEqual(got, []string{"nvidia-smi"}) {
		t.Fatalf("sources %q (PATH has %s)", got, path)
	}
	s, err := p.Sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := controls.GPUSample{
		Processes:      []controls.GPUProcess{{PID: 4242, Name: "blender", Device: "NVIDIA GeForce RTX 4070", MemoryBytes: 5120 << 20}},
		ProcessesKnown: true, TemperatureC: 63, TemperatureKnown: true, PowerW: 182.4, PowerKnown: true,
		Source: "nvidia-smi",
	}
	if !reflect.DeepEqual(s, want) {
		t.Fatalf("sample %+v\nwant   %+v", s, want)
	}
}

func TestSMIRunnerFails(t *testing.T) {
	fakeSMI(t, "", "", true)
	p := New(Options{NoNVML: true, NoDRM: true})
	defer p.Close()
	_, err := p.Sample(context.Background())
	if err == nil || !strings.Contains(err.Error(), "couldn't communicate with the NVIDIA driver") {
		t.Fatalf("err = %v, want nvidia-smi's own message", err)
	}
	if errors.Is(err, controls.ErrUnknown) {
		t.Fatalf("a failing driver is a failure, not an absent source: %v", err)
	}
	// The message is the same on every poll, so it is logged once.
	_, err2 := p.Sample(context.Background())
	if err2 == nil || err2.Error() != err.Error() {
		t.Fatalf("second poll: %v, first: %v", err2, err)
	}

	// A half answer: processes understood, GPU readings not.
	fakeSMIPartial := fakeSMI(t, "", "garbage\n", false)
	p2 := New(Options{NoNVML: true, NoDRM: true, NvidiaSMI: fakeSMIPartial})
	s, err := p2.Sample(context.Background())
	if err != nil || !s.ProcessesKnown || len(s.Processes) != 0 || s.TemperatureKnown || s.PowerKnown {
		t.Fatalf("partial: %+v, %v", s, err)
	}
}

func TestSMIRunnerHangs(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("the hanging nvidia-smi is a shell script")
	}
	dir, err := os.MkdirTemp("", "gpuwatch-smi-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	path := filepath.Join(dir, "nvidia-smi")
	// A wedged driver: nvidia-smi never answers.
	if err := os.WriteFile(path, []byte("#!/bin/sh\nexec sleep 600\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	p := New(Options{NoNVML: true, NoDRM: true, NvidiaSMI: path})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err = p.Sample(ctx)
	if err == nil || !(errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "did not answer in time")) {
		t.Fatalf("err = %v, want the deadline", err)
	}
}

func TestNoSource(t *testing.T) {
	none := filepath.Join(os.TempDir(), "gpuwatch-nothing-here", t.Name())
	t.Setenv("PATH", none)
	p := New(Options{NoNVML: true, SysRoot: none, ProcRoot: none})
	defer p.Close()
	if len(p.Sources()) != 0 {
		t.Fatalf("sources %q on an empty machine", p.Sources())
	}
	_, err := p.Sample(context.Background())
	if !errors.Is(err, controls.ErrUnknown) || !strings.Contains(err.Error(), "nvidia-smi is not installed") {
		t.Fatalf("err = %v, want ErrUnknown naming what is missing", err)
	}
	t.Log(err)
	if p.Close() != nil || p.Close() != nil {
		t.Fatal("Close of a probe without NVML failed")
	}
}
