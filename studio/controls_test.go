package studio

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minisgg/studio-worker/controls"
	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/settings"
)

// fakeProbes answer with what the test sets; every method is safe for
// concurrent use.
type fakeProbes struct {
	mu       sync.Mutex
	idle     time.Duration
	idleErr  error
	gpu      controls.GPUSample
	running  []string
	idleCall int
}

func (f *fakeProbes) IdleTime(context.Context) (time.Duration, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.idleCall++
	return f.idle, f.idleErr
}
func (f *fakeProbes) Source() string { return "fake" }
func (f *fakeProbes) Sample(context.Context) (controls.GPUSample, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.gpu, nil
}
func (f *fakeProbes) Running(_ context.Context, names []string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, r := range f.running {
		for _, n := range names {
			if strings.EqualFold(r, n) {
				out = append(out, r)
			}
		}
	}
	return out, nil
}
func (f *fakeProbes) set(fn func(*fakeProbes)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// controlHarness is a worker with fake probes read every 5 s of its fake
// clock; step advances the clock by one beat and waits for that look.
type controlHarness struct {
	*harness
	probes *fakeProbes
	polled chan struct{}
}

func newControlHarness(t *testing.T, edit func(*settings.Settings)) *controlHarness {
	t.Helper()
	h := &harness{runner: newFakeRunner(), clock: NewFakeClock(workerT0)}
	h.set = settings.Default()
	h.set.VRAMBudgetGB = 8
	edit(&h.set)
	ch := &controlHarness{harness: h, probes: &fakeProbes{}, polled: make(chan struct{}, 1)}
	h.w = NewWorker(WorkerConfig{
		Settings: h.settings, Runner: h.runner, Creds: settings.NewFileCredentialStore(t.TempDir()),
		Clock: h.clock, MachineName: "test-box", Username: "tester", Location: time.UTC,
		Probes: &Probes{Idle: ch.probes, GPU: ch.probes, Programs: ch.probes,
			Own:       func(pid int) bool { return pid == 4242 },
			afterPoll: func() { ch.polled <- struct{}{} }},
	})
	t.Cleanup(func() {
		h.w.lifeCancel()
		done := make(chan struct{})
		go func() { h.w.jobs.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("a job goroutine outlived its test")
		}
	})
	ch.wait(t) // the first look, at once
	return ch
}

func (c *controlHarness) wait(t *testing.T) {
	t.Helper()
	select {
	case <-c.polled:
	case <-time.After(10 * time.Second):
		t.Fatal("the probes were not read")
	}
}

func (c *controlHarness) step(t *testing.T, n int) {
	t.Helper()
	for range n {
		c.clock.Advance(DefaultControlPoll)
		c.wait(t)
	}
}

func TestWorkerOnlyWhenIdleHoldsOffersAndHeartbeat(t *testing.T) {
	c := newControlHarness(t, func(s *settings.Settings) { s.OnlyWhenIdle = true })
	caps := c.w.Capabilities()
	if caps.AutoEnabled || !caps.OnlyWhenIdle || caps.UserPresence != "active" {
		t.Fatalf("in use: autoEnabled %v onlyWhenIdle %v presence %q", caps.AutoEnabled, caps.OnlyWhenIdle, caps.UserPresence)
	}
	s := newFakeSender()
	c.w.HandleOffer(s, llmClaim("j1", 1, "hi"))
	wantReject(t, s.next(t), "j1", controls.ReasonNotIdle, RejectPaused)
	if snap := c.w.Snapshot(); snap.Paused || !snap.Controls.Held(controls.ControlAway) {
		t.Fatalf("snapshot: paused %v, holds %+v", snap.Paused, snap.Controls.Holds)
	}

	// Away for 2 minutes: the next look lets work through.
	c.probes.set(func(f *fakeProbes) { f.idle = 2 * time.Minute })
	c.step(t, 1)
	caps = c.w.Capabilities()
	if !caps.AutoEnabled || caps.UserPresence != "idle" {
		t.Fatalf("away: %+v", caps)
	}
	c.runner.runFn = blockingRun(make(chan struct{}), true)
	c.w.HandleOffer(s, llmClaim("j2", 1, "hi"))
	if _, ok := s.next(t).(Accept); !ok {
		t.Fatal("not accepted while away")
	}
	<-c.runner.started
	// Back at the keyboard: the running job carries on (§5.4).
	c.probes.set(func(f *fakeProbes) { f.idle = time.Second })
	c.step(t, 1)
	if snap := c.w.Snapshot(); snap.Current == nil || snap.Current.Outcome != OutcomeRunning || snap.Controls.MayWork {
		t.Fatalf("came back mid-job: %+v", snap.Controls)
	}
	s.none(t)

	// A probe that fails: presence unknown, left out of the heartbeat,
	// and held (unknown counts as active).
	c.probes.set(func(f *fakeProbes) { f.idleErr = fmt.Errorf("no display: %w", controls.ErrUnknown) })
	c.step(t, 1)
	caps = c.w.Capabilities()
	if caps.AutoEnabled || caps.UserPresence != "" {
		t.Fatalf("unknown: %+v", caps)
	}
}

func TestWorkerPresenceIsReportedWithTheSettingOff(t *testing.T) {
	c := newControlHarness(t, func(*settings.Settings) {})
	c.probes.set(func(f *fakeProbes) { f.idle = time.Hour })
	c.step(t, 1)
	if caps := c.w.Capabilities(); !caps.AutoEnabled || caps.OnlyWhenIdle || caps.UserPresence != "idle" {
		t.Fatalf("%+v", caps)
	}
}

func TestWorkerGPUBusyHysteresisOnTheWorkersClock(t *testing.T) {
	c := newControlHarness(t, func(s *settings.Settings) { s.PauseWhenGPUBusy = true })
	// Our own engine process never counts.
	c.probes.set(func(f *fakeProbes) {
		f.gpu = controls.GPUSample{ProcessesKnown: true, Processes: []controls.GPUProcess{{PID: 4242, Name: "studio-worker"}}}
	})
	c.step(t, 4)
	if !c.w.Snapshot().Controls.MayWork {
		t.Fatal("held by our own engine")
	}
	c.probes.set(func(f *fakeProbes) {
		f.gpu.Processes = append(f.gpu.Processes, controls.GPUProcess{PID: 77, Name: "blender"})
	})
	busyFrom := c.clock.Now().Add(DefaultControlPoll)
	c.step(t, 2) // busy seen at +5 s and +10 s: 5 s of busy
	if !c.w.Snapshot().Controls.MayWork {
		t.Fatal("held after 5 s")
	}
	c.step(t, 1) // 10 s
	snap := c.w.Snapshot()
	if snap.Controls.MayWork || snap.Controls.Holds[0].Reason != "GPU busy (blender)" || !snap.Controls.Holds[0].Since.Equal(busyFrom.Add(10*time.Second)) {
		t.Fatalf("after 10 s busy: %+v", snap.Controls)
	}
	if caps := c.w.Capabilities(); caps.AutoEnabled {
		t.Fatal("heartbeat still says autoEnabled")
	}
	s := newFakeSender()
	c.w.HandleOffer(s, llmClaim("j1", 1, "hi"))
	wantReject(t, s.next(t), "j1", "the GPU is busy with another program (blender)", RejectPaused)

	c.probes.set(func(f *fakeProbes) { f.gpu.Processes = f.gpu.Processes[:1] })
	c.step(t, 12) // free seen from the first of these looks: 55 s
	if c.w.Snapshot().Controls.MayWork {
		t.Fatal("released after 55 s free")
	}
	c.step(t, 1) // 60 s
	if !c.w.Snapshot().Controls.MayWork || !c.w.Capabilities().AutoEnabled {
		t.Fatal("still held after 60 s free")
	}
	// Turning the setting off applies without a restart.
	c.probes.set(func(f *fakeProbes) {
		f.gpu.Processes = append(f.gpu.Processes, controls.GPUProcess{PID: 78, Name: "game"})
	})
	c.step(t, 3)
	if c.w.Snapshot().Controls.MayWork {
		t.Fatal("not held by the game")
	}
	c.mu.Lock()
	c.set.PauseWhenGPUBusy = false
	c.mu.Unlock()
	c.w.ApplySettings()
	if !c.w.Snapshot().Controls.MayWork {
		t.Fatal("still held after the setting went off")
	}
}

func TestWorkerHoldStopsTheJobWhenTheDonorChoseSo(t *testing.T) {
	for _, stopNow := range []bool{false, true} {
		t.Run(fmt.Sprintf("stop=%v", stopNow), func(t *testing.T) {
			c := newControlHarness(t, func(s *settings.Settings) {
				s.PausePrograms = "game.exe"
				s.StopJobWhenBusy = stopNow
			})
			release := make(chan struct{})
			s := newFakeSender()
			c.runBlocked(t, s, release, true)
			c.probes.set(func(f *fakeProbes) { f.running = []string{"game.exe"} })
			c.step(t, 3) // seen at 0, 5, 10 s
			snap := c.w.Snapshot()
			if snap.Controls.MayWork || snap.Paused {
				t.Fatalf("held %v, paused %v", !snap.Controls.MayWork, snap.Paused)
			}
			if !stopNow {
				s.none(t)
				close(release)
				if _, ok := s.next(t).(CompleteJSON); !ok {
					t.Fatal("the job did not finish")
				}
				return
			}
			f, ok := s.next(t).(Fail)
			if !ok || !f.Retryable || f.Error != "stopped because this computer needed it: game.exe running" {
				t.Fatalf("frame %#v", f)
			}
			waitIdle(t, c.w)
			if snap := c.w.Snapshot(); snap.Paused || snap.State == StatePaused {
				t.Fatalf("a control's stop became the donor's pause: %+v", snap)
			}
			// The game ends: after 60 s free, work resumes by itself.
			c.probes.set(func(f *fakeProbes) { f.running = nil })
			c.step(t, 13)
			if !c.w.Snapshot().Controls.MayWork {
				t.Fatal("still held")
			}
			c.runner.runFn = blockingRun(release, true)
			c.w.HandleOffer(s, llmClaim("j2", 1, "hi"))
			if _, ok := s.next(t).(Accept); !ok {
				t.Fatal("not taking jobs after the hold")
			}
			close(release)
			s.next(t)
		})
	}
}

func TestWorkerScheduleHoldsOutsideWorkHours(t *testing.T) {
	// workerT0 is Friday 2 January 2026, 03:04 UTC.
	h := newControlHarness(t, func(s *settings.Settings) {
		s.WorkHoursOn = true
		s.WorkHours.Friday = "18:00-23:00"
	})
	s := newFakeSender()
	h.w.HandleOffer(s, llmClaim("j1", 1, "hi"))
	wantReject(t, s.next(t), "j1", controls.ReasonSchedule, RejectPaused)
	d := h.w.Snapshot().Controls
	if d.MayWork || !d.NextAllows || !d.NextChange.Equal(time.Date(2026, 1, 2, 18, 0, 0, 0, time.UTC)) {
		t.Fatalf("decision %+v", d)
	}
	if h.w.Capabilities().AutoEnabled {
		t.Fatal("autoEnabled outside the hours")
	}
	// The local API is never held back (§5.4).
	h.runner.runFn = blockingRun(closedChan(), true)
	if _, err := h.w.RunLocal(context.Background(), 0, engine.Job{ID: "local-1", Model: "tiny.gguf",
		Task: engine.Task{Kind: engine.KindLLM, LLM: &engine.LLMParams{Messages: []engine.ChatMessage{{Role: "user", Content: "hi"}}}}}, nil); err != nil {
		t.Fatalf("local job while held: %v", err)
	}
	<-h.runner.started
	h.clock.Advance(15 * time.Hour) // 18:04
	h.runner.runFn = blockingRun(closedChan(), true)
	h.w.HandleOffer(s, llmClaim("j2", 1, "hi"))
	if _, ok := s.next(t).(Accept); !ok {
		t.Fatal("not accepted inside the hours")
	}
	s.next(t)
	if d := h.w.Snapshot().Controls; !d.MayWork || d.NextAllows || d.NextChange.Hour() != 23 {
		t.Fatalf("inside: %+v", d)
	}
}

func closedChan() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}

func TestWorkerPauseForIsTheDecisionsPauseHold(t *testing.T) {
	h := newHarness(t)
	h.w.PauseFor(time.Hour)
	d := h.w.Snapshot().Controls
	if d.MayWork || len(d.Holds) != 1 || d.Holds[0].Control != controls.ControlPause ||
		!d.Holds[0].Until.Equal(workerT0.Add(time.Hour)) || !d.Holds[0].Since.Equal(workerT0) {
		t.Fatalf("%+v", d)
	}
	h.w.Resume()
	if d := h.w.Snapshot().Controls; !d.MayWork {
		t.Fatalf("after resume %+v", d)
	}
}
