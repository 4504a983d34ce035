package controls

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
	_ "time/tzdata" // the DST tests need Europe/Berlin on any machine
)

var t0 = time.Date(2026, 3, 4, 14, 0, 0, 0, time.UTC) // a Wednesday

type logs struct {
	mu    sync.Mutex
	lines []string
}

func (l *logs) log(level, msg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, level+": "+msg)
}

func (l *logs) count(sub string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.lines {
		if strings.Contains(s, sub) {
			n++
		}
	}
	return n
}

func TestNothingHoldsByDefault(t *testing.T) {
	g := NewGate(Config{}, time.UTC, nil, nil)
	d := g.Decide(t0)
	if !d.MayWork || len(d.Holds) != 0 || d.Line() != "" || d.OfferReason() != "" {
		t.Fatalf("fresh gate: %+v", d)
	}
	// Probes that read nothing of interest change nothing while their
	// controls are off.
	g.ObserveIdle(t0, 0, nil)
	g.ObserveGPU(t0, GPUSample{ProcessesKnown: true, Processes: []GPUProcess{{PID: 9, Name: "blender"}}, TemperatureKnown: true, TemperatureC: 99}, nil)
	g.ObservePrograms(t0, []string{"game"}, nil)
	for i := range 30 {
		g.ObserveGPU(t0.Add(time.Duration(i)*5*time.Second), GPUSample{ProcessesKnown: true, Processes: []GPUProcess{{PID: 9, Name: "blender"}}}, nil)
	}
	if d := g.Decide(t0.Add(time.Hour)); !d.MayWork {
		t.Fatalf("controls off but held: %+v", d.Holds)
	}
}

func TestPauseIsOneControl(t *testing.T) {
	g := NewGate(Config{}, time.UTC, nil, nil)
	until := t0.Add(time.Hour)
	g.SetPause(true, t0, until)
	d := g.Decide(t0.Add(time.Minute))
	if d.MayWork || len(d.Holds) != 1 || d.Holds[0].Control != ControlPause || d.Holds[0].Since != t0 || d.Holds[0].Until != until {
		t.Fatalf("paused: %+v", d)
	}
	if d.OfferReason() != ReasonPaused || d.Machine() {
		t.Fatalf("offer reason %q machine %v", d.OfferReason(), d.Machine())
	}
	g.SetPause(false, time.Time{}, time.Time{})
	if !g.Decide(t0).MayWork {
		t.Fatal("still held after resume")
	}
}

func TestOnlyWhenIdleEdges(t *testing.T) {
	l := &logs{}
	g := NewGate(Config{OnlyWhenIdle: true}, time.UTC, nil, l.log)
	// No reading yet: unknown counts as active (§5.4).
	d := g.Decide(t0)
	if d.MayWork || d.Presence != PresenceUnknown || !d.Held(ControlAway) || d.OfferReason() != ReasonNotIdle {
		t.Fatalf("before a reading: %+v", d)
	}
	g.ObserveIdle(t0, DefaultIdleAfter-time.Nanosecond, nil)
	if d := g.Decide(t0); d.MayWork || d.Presence != PresenceActive || d.Holds[0].Reason != "you are using this computer" {
		t.Fatalf("just under 120 s: %+v", d)
	}
	at := t0.Add(5 * time.Second)
	g.ObserveIdle(at, DefaultIdleAfter, nil) // exactly 120 s is idle
	if d := g.Decide(at); !d.MayWork || d.Presence != PresenceIdle {
		t.Fatalf("at 120 s: %+v", d)
	}
	back := at.Add(5 * time.Second)
	g.ObserveIdle(back, time.Second, nil)
	if d := g.Decide(back); d.MayWork || d.Holds[0].Since != back {
		t.Fatalf("back at the keyboard: %+v", d)
	}
	// The setting's own threshold.
	g.SetConfig(Config{OnlyWhenIdle: true, IdleAfter: 30 * time.Second})
	g.ObserveIdle(back.Add(5*time.Second), 30*time.Second, nil)
	if d := g.Decide(back); !d.MayWork {
		t.Fatalf("30 s threshold: %+v", d)
	}
	// Off: presence is still reported, nothing holds.
	g.SetConfig(Config{})
	g.ObserveIdle(back.Add(10*time.Second), 0, nil)
	if d := g.Decide(back); !d.MayWork || d.OnlyWhenIdle || d.Presence != PresenceActive {
		t.Fatalf("setting off: %+v", d)
	}
}

// A person at the keyboard since 14:00 who turns "only when I'm away" on
// at 14:05 has held the worker since 14:05, not since 14:00.
func TestOnlyWhenIdleHoldBeginsWhenTurnedOn(t *testing.T) {
	g := NewGate(Config{}, time.UTC, nil, nil)
	g.ObserveIdle(t0, 0, nil)
	g.ObserveIdle(t0.Add(time.Minute), 0, nil)
	if d := g.Decide(t0.Add(time.Minute)); !d.MayWork {
		t.Fatalf("setting off: %+v", d)
	}
	on := t0.Add(5 * time.Minute)
	g.SetConfig(Config{OnlyWhenIdle: true})
	if d := g.Decide(on); d.MayWork || d.Holds[0].Since != on {
		t.Fatalf("turned on at %v: %+v", on, d.Holds)
	}
	// Saving other settings keeps the time; away and back moves it on.
	g.SetConfig(Config{OnlyWhenIdle: true, MaxPowerW: 300})
	if d := g.Decide(on.Add(time.Minute)); d.Holds[0].Since != on {
		t.Fatalf("after another save: %+v", d.Holds)
	}
	g.ObserveIdle(on.Add(3*time.Minute), 3*time.Minute, nil)
	back := on.Add(4 * time.Minute)
	g.ObserveIdle(back, time.Second, nil)
	if d := g.Decide(back); d.Holds[0].Since != back {
		t.Fatalf("back at the keyboard: %+v", d.Holds)
	}
	// Off and on again: the hold begins anew.
	g.SetConfig(Config{})
	g.Decide(back.Add(time.Minute))
	again := back.Add(2 * time.Minute)
	g.SetConfig(Config{OnlyWhenIdle: true})
	if d := g.Decide(again); d.Holds[0].Since != again {
		t.Fatalf("turned on again: %+v", d.Holds)
	}
}

func TestProbeFailureLoggedOnceAndRecovery(t *testing.T) {
	l := &logs{}
	g := NewGate(Config{OnlyWhenIdle: true}, time.UTC, nil, l.log)
	g.ObserveIdle(t0, time.Hour, nil)
	if !g.Decide(t0).MayWork {
		t.Fatal("idle for an hour but held")
	}
	boom := fmt.Errorf("no X display: %w", ErrUnknown)
	for i := range 10 {
		g.ObserveIdle(t0.Add(time.Duration(i+1)*5*time.Second), 0, boom)
	}
	d := g.Decide(t0.Add(time.Minute))
	if d.MayWork || d.Presence != PresenceUnknown || !strings.Contains(d.Line(), "cannot be told") {
		t.Fatalf("failing probe: %+v", d)
	}
	if n := l.count("info: cannot tell whether someone uses this computer"); n != 1 {
		t.Fatalf("failure logged %d times, want once: %q", n, l.lines)
	}
	g.ObserveIdle(t0.Add(2*time.Minute), time.Hour, nil)
	if n := l.count("can be read again"); n != 1 {
		t.Fatalf("recovery logged %d times", n)
	}
	if !g.Decide(t0.Add(2 * time.Minute)).MayWork {
		t.Fatal("held after recovery")
	}
	// A new failure is logged again; one that is not "no source here"
	// is a warning.
	g.ObserveIdle(t0.Add(3*time.Minute), 0, errors.New("X server closed the connection"))
	if n := l.count("warn: cannot tell whether"); n != 1 {
		t.Fatalf("second failure logged %d times as a warning, want 1: %q", n, l.lines)
	}
}

func busy(names ...string) GPUSample {
	s := GPUSample{ProcessesKnown: true, Source: "fake"}
	for i, n := range names {
		s.Processes = append(s.Processes, GPUProcess{PID: 100 + i, Name: n})
	}
	return s
}

func TestGPUBusyHysteresisEdges(t *testing.T) {
	g := NewGate(Config{PauseWhenGPUBusy: true}, time.UTC, nil, nil)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	g.ObserveGPU(at(0), busy("blender"), nil)
	g.ObserveGPU(at(5), busy("blender"), nil)
	g.ObserveGPU(at(9), busy("blender"), nil)
	if !g.Decide(at(9)).MayWork {
		t.Fatal("held after 9 s busy; the threshold is 10 s")
	}
	g.ObserveGPU(at(10), busy("blender"), nil)
	d := g.Decide(at(10))
	if d.MayWork || d.Holds[0].Control != ControlGPU || d.Holds[0].Since != at(10) || d.Holds[0].Reason != "GPU busy (blender)" || !d.Machine() {
		t.Fatalf("busy for 10 s: %+v", d)
	}
	// Free for 59 s: still held; a busy blip restarts the free run.
	g.ObserveGPU(at(11), busy(), nil)
	g.ObserveGPU(at(70), busy(), nil)
	if d := g.Decide(at(70)); d.MayWork || d.Holds[0].Reason != "GPU free again after blender (waiting 60 s)" || d.Holds[0].Since != at(10) {
		t.Fatalf("released after 59 s free, or a reason that is no longer true; the threshold is 60 s: %+v", d)
	}
	g.ObserveGPU(at(71), busy("blender"), nil)
	g.ObserveGPU(at(72), busy(), nil)
	g.ObserveGPU(at(131), busy(), nil)
	if g.Decide(at(131)).MayWork {
		t.Fatal("released 59 s after the blip")
	}
	g.ObserveGPU(at(132), busy(), nil)
	if d := g.Decide(at(132)); !d.MayWork {
		t.Fatalf("free for 60 s but held: %+v", d)
	}
	// A busy blip shorter than 10 s never holds.
	g.ObserveGPU(at(200), busy("game"), nil)
	g.ObserveGPU(at(205), busy(), nil)
	g.ObserveGPU(at(215), busy("game"), nil)
	g.ObserveGPU(at(224), busy("game"), nil)
	if !g.Decide(at(224)).MayWork {
		t.Fatal("held by short busy runs")
	}
}

func TestGPUBusySettingsAndOwnProcesses(t *testing.T) {
	own := map[int]bool{100: true}
	g := NewGate(Config{PauseWhenGPUBusy: true, BusyAfter: 2 * time.Second, FreeAfter: 3 * time.Second}, time.UTC,
		func(pid int) bool { return own[pid] }, nil)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	// Our own engine (PID 100) never counts.
	for s := range 20 {
		g.ObserveGPU(at(s), busy("studio-worker"), nil)
	}
	if !g.Decide(at(20)).MayWork {
		t.Fatal("held by our own process")
	}
	s := busy("studio-worker", "game")
	g.ObserveGPU(at(20), s, nil)
	g.ObserveGPU(at(22), s, nil)
	if d := g.Decide(at(22)); d.MayWork || d.Holds[0].Reason != "GPU busy (game)" {
		t.Fatalf("busy 2 s with busy_after 2 s: %+v", d)
	}
	g.ObserveGPU(at(23), busy("studio-worker"), nil)
	g.ObserveGPU(at(26), busy("studio-worker"), nil)
	if !g.Decide(at(26)).MayWork {
		t.Fatal("free 3 s with free_after 3 s but held")
	}
	// Turning the setting off lets go at once.
	g.ObserveGPU(at(30), s, nil)
	g.ObserveGPU(at(40), s, nil)
	if g.Decide(at(40)).MayWork {
		t.Fatal("not held")
	}
	g.SetConfig(Config{})
	if !g.Decide(at(40)).MayWork {
		t.Fatal("held after the setting went off")
	}
}

func TestGPUProbeFailureCountsAsFree(t *testing.T) {
	l := &logs{}
	g := NewGate(Config{PauseWhenGPUBusy: true}, time.UTC, nil, l.log)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	g.ObserveGPU(at(0), busy("game"), nil)
	g.ObserveGPU(at(10), busy("game"), nil)
	if g.Decide(at(10)).MayWork {
		t.Fatal("not held")
	}
	fail := errors.New("nvidia-smi: exit status 9")
	for s := 15; s <= 75; s += 5 {
		g.ObserveGPU(at(s), GPUSample{}, fail)
	}
	if !g.Decide(at(75)).MayWork {
		t.Fatal("a failing probe kept the hold past 60 s")
	}
	if n := l.count("could not read the GPU"); n != 1 {
		t.Fatalf("failure logged %d times", n)
	}
	g.ObserveGPU(at(76), busy(), nil)
	if n := l.count("can be read again (fake)"); n != 1 {
		t.Fatalf("recovery logged %d times: %q", n, l.lines)
	}
	// No driver at all: said once, at info.
	g.ObserveGPU(at(80), GPUSample{}, fmt.Errorf("no NVIDIA driver: %w", ErrUnknown))
	g.ObserveGPU(at(85), GPUSample{}, fmt.Errorf("no NVIDIA driver: %w", ErrUnknown))
	if n := l.count("info: GPU use cannot be read here"); n != 1 {
		t.Fatalf("unknown logged %d times: %q", n, l.lines)
	}
	// The Settings page is told why, while a control needs the GPU.
	if d := g.Decide(at(85)); d.GPUUnknown != "no NVIDIA driver" {
		t.Fatalf("GPUUnknown %q", d.GPUUnknown)
	}
	g.ObserveGPU(at(90), GPUSample{}, fmt.Errorf("%w: no GPU can be read: nvidia-smi is not installed", ErrUnknown))
	if d := g.Decide(at(90)); d.GPUUnknown != "no GPU can be read: nvidia-smi is not installed" {
		t.Fatalf("GPUUnknown %q", d.GPUUnknown)
	}
	g.SetConfig(Config{Programs: []string{"blender"}})
	if d := g.Decide(at(90)); d.GPUUnknown != "" {
		t.Fatalf("GPUUnknown %q with no control that needs the GPU", d.GPUUnknown)
	}
	g.SetConfig(Config{MaxTemperatureC: 80})
	g.ObserveGPU(at(95), GPUSample{Source: "fake", TemperatureKnown: true, TemperatureC: 50}, nil)
	if d := g.Decide(at(95)); d.GPUUnknown != "" {
		t.Fatalf("GPUUnknown %q after a good reading", d.GPUUnknown)
	}
}

func TestProgramsHysteresis(t *testing.T) {
	l := &logs{}
	g := NewGate(Config{Programs: []string{"blender", "game.exe"}}, time.UTC, nil, l.log)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	g.ObservePrograms(at(0), []string{"blender"}, nil)
	g.ObservePrograms(at(9), []string{"blender"}, nil)
	if !g.Decide(at(9)).MayWork {
		t.Fatal("held at 9 s")
	}
	g.ObservePrograms(at(10), []string{"blender"}, nil)
	d := g.Decide(at(10))
	if d.MayWork || d.Holds[0].Control != ControlPrograms || d.Holds[0].Reason != "blender running" {
		t.Fatalf("at 10 s: %+v", d)
	}
	g.ObservePrograms(at(11), nil, errors.New("cannot read /proc"))
	g.ObservePrograms(at(70), nil, errors.New("cannot read /proc"))
	if d := g.Decide(at(70)); d.MayWork || d.Holds[0].Reason != "blender just closed (waiting 60 s)" || d.OfferReason() != "one of the donor's programs is running (blender)" {
		t.Fatalf("at 59 s free, the hold must stay and name what it waits after: %+v", d)
	}
	g.ObservePrograms(at(71), nil, nil)
	if !g.Decide(at(71)).MayWork {
		t.Fatal("held 60 s after the last sighting")
	}
	if l.count("could not list the running programs") != 1 || l.count("can be listed again") != 1 {
		t.Fatalf("logs: %q", l.lines)
	}
}

func TestTemperatureAndPowerCeilings(t *testing.T) {
	g := NewGate(Config{MaxTemperatureC: 80, MaxPowerW: 200}, time.UTC, nil, nil)
	reading := func(c, w float64) GPUSample {
		return GPUSample{TemperatureKnown: true, TemperatureC: c, PowerKnown: true, PowerW: w}
	}
	steps := []struct {
		c, w       float64
		temp, powr bool
	}{
		{80, 200, false, false}, // at the ceiling: not above
		{80.5, 200, true, false},
		{76, 201, true, true}, // 76 is not below 80-5
		{75, 181, true, true}, // 75 is not below 75; 181 not below 180
		{74.9, 179, false, false},
		{79, 190, false, false}, // below the ceiling: stays released
	}
	for i, s := range steps {
		now := t0.Add(time.Duration(i) * time.Second)
		g.ObserveGPU(now, reading(s.c, s.w), nil)
		d := g.Decide(now)
		if d.Held(ControlTemperature) != s.temp || d.Held(ControlPower) != s.powr {
			t.Fatalf("step %d (%.1f °C, %.0f W): holds %+v", i, s.c, s.w, d.Holds)
		}
	}
	g.ObserveGPU(t0, reading(90, 300), nil)
	d := g.Decide(t0)
	if d.Line() != "GPU at 90 °C, above your 80 °C ceiling; GPU drawing 300 W, above your 200 W ceiling" {
		t.Fatalf("line %q", d.Line())
	}
	// Unknown readings hold nothing.
	g.ObserveGPU(t0, GPUSample{}, nil)
	if !g.Decide(t0).MayWork {
		t.Fatal("held on unknown readings")
	}
}

func TestHoldOrderAndStopJob(t *testing.T) {
	week := [7]string{}
	sch, err := ParseWeek(week) // no hours at all
	if err != nil {
		t.Fatal(err)
	}
	g := NewGate(Config{OnlyWhenIdle: true, Schedule: &sch, StopJob: true, MaxTemperatureC: 50}, time.UTC, nil, nil)
	g.SetPause(true, t0, time.Time{})
	g.ObserveGPU(t0, GPUSample{TemperatureKnown: true, TemperatureC: 60}, nil)
	d := g.Decide(t0)
	var got []Control
	for _, h := range d.Holds {
		got = append(got, h.Control)
	}
	if fmt.Sprint(got) != "[pause schedule away temperature]" || !d.StopJob || !d.Machine() || d.OfferReason() != ReasonPaused {
		t.Fatalf("holds %v, %+v", got, d)
	}
}
