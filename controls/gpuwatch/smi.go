package gpuwatch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/minisgg/studio-worker/controls"
)

// smiTimeout bounds one nvidia-smi run: a wedged driver can make it hang.
const smiTimeout = 10 * time.Second

// The nvidia-smi queries. process_name comes last in the process query
// because a Windows path may hold a comma and the CSV is not quoted.
var (
	smiProcessArgs = []string{"--query-compute-apps=pid,used_memory,gpu_name,process_name", "--format=csv,noheader,nounits"}
	smiGPUArgs     = []string{"--query-gpu=temperature.gpu,power.draw", "--format=csv,noheader,nounits"}
)

// smiSource reads NVIDIA GPUs through the nvidia-smi program where NVML
// cannot be loaded in-process (Windows, a build without cgo). It lists
// compute processes only: nvidia-smi has no query for graphics processes,
// so a game on Windows is seen by the program list (Programs), not here.
// Every compute process counts as using the GPU: nvidia-smi's query gives
// no per-process utilisation.
type smiSource struct {
	path string
	run  func(ctx context.Context, path string, args ...string) ([]byte, error)
}

func newSMISource(path string) *smiSource {
	return &smiSource{path: path, run: runSMI}
}

// runSMI runs nvidia-smi without a console window, for at most
// smiTimeout or the caller's deadline, whichever comes first. A
// failing run's error carries the first line nvidia-smi printed ("NVIDIA-
// SMI has failed because it couldn't communicate with the NVIDIA driver.").
func runSMI(ctx context.Context, path string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, smiTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	hideWindow(cmd)
	// Once it is killed, a child it left holding the output pipes does
	// not keep this call waiting.
	cmd.WaitDelay = time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, errors.New("nvidia-smi did not answer in time")
		}
		msg := firstLine(stderr.String())
		if msg == "" {
			msg = firstLine(stdout.String())
		}
		if msg != "" {
			return nil, fmt.Errorf("nvidia-smi failed (%v): %s", err, msg)
		}
		return nil, fmt.Errorf("nvidia-smi failed: %w", err)
	}
	return stdout.Bytes(), nil
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return strings.TrimSpace(s)
}

func (s *smiSource) name() string { return "nvidia-smi" }

func (s *smiSource) sample(ctx context.Context) (controls.GPUSample, error) {
	out := controls.GPUSample{Source: s.name()}
	var problems []string
	if b, err := s.run(ctx, s.path, smiProcessArgs...); err != nil {
		problems = append(problems, err.Error())
	} else if procs, err := parseSMIProcesses(b); err != nil {
		problems = append(problems, err.Error())
	} else {
		out.Processes, out.ProcessesKnown = procs, true
	}
	if ctx.Err() != nil {
		return controls.GPUSample{}, ctx.Err()
	}
	if b, err := s.run(ctx, s.path, smiGPUArgs...); err != nil {
		problems = append(problems, err.Error())
	} else if r, err := parseSMIGPUs(b); err != nil {
		problems = append(problems, err.Error())
	} else {
		out.TemperatureC, out.TemperatureKnown = r.TemperatureC, r.TemperatureKnown
		out.PowerW, out.PowerKnown = r.PowerW, r.PowerKnown
	}
	if !out.ProcessesKnown && !out.TemperatureKnown && !out.PowerKnown {
		return controls.GPUSample{}, errors.New(strings.Join(dedupe(problems), "; "))
	}
	return out, nil
}

// smiValue reads one nvidia-smi CSV field: ok is false for the
// placeholders it prints where a value is missing ("[N/A]", "N/A",
// "[Not Supported]", "[Insufficient Permissions]", "[Unknown Error]", an
// empty field) and for anything that is not a number. A unit nvidia-smi
// adds without nounits (" W", " MiB", " C") is dropped.
func smiValue(field string) (float64, bool) {
	f := strings.TrimSpace(field)
	if f == "" || strings.HasPrefix(f, "[") || strings.EqualFold(f, "N/A") {
		return 0, false
	}
	if i := strings.IndexByte(f, ' '); i >= 0 {
		f = f[:i]
	}
	v, err := strconv.ParseFloat(f, 64)
	if err != nil || v != v { // NaN
		return 0, false
	}
	return v, true
}

// parseSMIProcesses reads the output of smiProcessArgs: lines of
// "pid, used_memory MiB, gpu_name, process_name". A missing memory figure
// or name ("[N/A]" on Windows WDDM, "[Insufficient Permissions]") reads
// as unknown (0, ""); a line without a PID makes the whole output not
// understood, because a process it hides might be the one that matters.
func parseSMIProcesses(b []byte) ([]controls.GPUProcess, error) {
	procs := []controls.GPUProcess{}
	var bad []string
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.EqualFold(line, "No running processes found") {
			continue
		}
		f := strings.SplitN(line, ",", 4)
		pid, err := strconv.Atoi(strings.TrimSpace(f[0]))
		if err != nil || pid <= 0 || len(f) < 4 {
			bad = append(bad, line)
			continue
		}
		p := controls.GPUProcess{PID: pid}
		if mib, ok := smiValue(f[1]); ok && mib > 0 {
			p.MemoryBytes = uint64(mib * (1 << 20))
		}
		if d := strings.TrimSpace(f[2]); !strings.HasPrefix(d, "[") {
			p.Device = d
		}
		if n := strings.TrimSpace(f[3]); !strings.HasPrefix(n, "[") {
			p.Name = baseName(n)
		}
		procs = append(procs, p)
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("nvidia-smi's process list was not understood: %q", bad[0])
	}
	return procs, nil
}

// smiReadings are the hottest temperature and highest power draw over
// all GPUs nvidia-smi lists.
type smiReadings struct {
	TemperatureC     float64
	TemperatureKnown bool
	PowerW           float64
	PowerKnown       bool
}

// parseSMIGPUs reads the output of smiGPUArgs: a line
// "temperature.gpu °C, power.draw W" per GPU. A GPU that does not report
// one of them ("[N/A]", "[Not Supported]") leaves it to the others; a
// line with the wrong number of fields makes the output not understood.
func parseSMIGPUs(b []byte) (smiReadings, error) {
	var r smiReadings
	lines := 0
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		f := strings.Split(line, ",")
		if len(f) != 2 {
			return smiReadings{}, fmt.Errorf("nvidia-smi's GPU readings were not understood: %q", line)
		}
		lines++
		if t, ok := smiValue(f[0]); ok && (!r.TemperatureKnown || t > r.TemperatureC) {
			r.TemperatureC, r.TemperatureKnown = t, true
		}
		if w, ok := smiValue(f[1]); ok && (!r.PowerKnown || w > r.PowerW) {
			r.PowerW, r.PowerKnown = w, true
		}
	}
	if lines == 0 {
		return smiReadings{}, errors.New("nvidia-smi listed no GPU")
	}
	return r, nil
}

func dedupe(ss []string) []string {
	var out []string
	for _, s := range ss {
		dup := false
		for _, o := range out {
			if o == s {
				dup = true
			}
		}
		if !dup {
			out = append(out, s)
		}
	}
	return out
}
