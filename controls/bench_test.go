package controls

import (
	"testing"
	"time"
)

// BenchmarkDecide is one decision with every control on and a week of
// work hours: the worker takes one on every offer, heartbeat (5 s) and
// snapshot.
func BenchmarkDecide(b *testing.B) {
	var w [7]string
	for d := range w {
		w[d] = "07:00-09:00, 18:00-23:30"
	}
	sch, err := ParseWeek(w)
	if err != nil {
		b.Fatal(err)
	}
	g := NewGate(Config{OnlyWhenIdle: true, PauseWhenGPUBusy: true, Programs: []string{"blender"}, MaxTemperatureC: 80, MaxPowerW: 200, Schedule: &sch}, time.UTC, nil, nil)
	g.ObserveIdle(t0, time.Hour, nil)
	g.ObserveGPU(t0, GPUSample{ProcessesKnown: true, Processes: []GPUProcess{{PID: 1, Name: "game"}}, TemperatureKnown: true, TemperatureC: 60}, nil)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		_ = g.Decide(t0.Add(time.Duration(i) * time.Second))
	}
}
