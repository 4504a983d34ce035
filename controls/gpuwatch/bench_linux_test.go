package gpuwatch

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"
)

// BenchmarkPollCost measures what one poll of the probes costs on this
// machine's real /proc: the program list (Programs.Running) and the DRM
// fdinfo reading (readDRM), each against the baseline of listing /proc
// alone, in alternating order, median of the rounds. Figures:
// programs_ms, drm_ms, proc_list_ms, and ratio = the program list over
// the baseline.
func BenchmarkPollCost(b *testing.B) {
	ctx := context.Background()
	progs := NewPrograms(ProgramsOptions{})
	names := []string{"blender", "Game.exe", "steam"}
	list := func() {
		if _, err := os.ReadDir("/proc"); err != nil {
			b.Fatal(err)
		}
	}
	run := func() {
		if _, err := progs.Running(ctx, names); err != nil {
			b.Fatal(err)
		}
	}
	drm := func() {
		if _, err := readDRM(ctx, "/proc"); err != nil {
			b.Fatal(err)
		}
	}
	timeIt := func(f func()) float64 {
		t := time.Now()
		f()
		return float64(time.Since(t).Microseconds()) / 1000
	}
	var base, prog, dr []float64
	for i := 0; i < b.N; i++ {
		if i%2 == 0 {
			base = append(base, timeIt(list))
			prog = append(prog, timeIt(run))
			dr = append(dr, timeIt(drm))
		} else {
			dr = append(dr, timeIt(drm))
			prog = append(prog, timeIt(run))
			base = append(base, timeIt(list))
		}
	}
	fds, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	pids, _ := filepath.Glob("/proc/[0-9]*")
	b.Logf("%d processes, %d open files readable", len(pids), len(fds))
	m := func(v []float64) float64 {
		s := append([]float64(nil), v...)
		sort.Float64s(s)
		return s[len(s)/2]
	}
	b.ReportMetric(m(prog), "programs_ms")
	b.ReportMetric(m(dr), "drm_ms")
	b.ReportMetric(m(base), "proc_list_ms")
	if m(base) > 0 {
		b.ReportMetric(m(prog)/m(base), "ratio")
	}
}
