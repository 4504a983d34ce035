package studio

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/minisgg/studio-worker/controls"
)

// Probes are what the worker reads the machine with for the donor's
// controls (package controls). A nil probe leaves its reading unknown:
// presence unknown (only-when-idle then holds, §5.4), the GPU and the
// programs never busy.
type Probes struct {
	Idle     controls.IdleProbe
	GPU      controls.GPUProbe
	Programs controls.ProgramProbe
	// Own reports whether pid is this program or one of its engine
	// processes, which never count as "another process using the GPU".
	// nil: only this process (os.Getpid) counts as ours.
	Own func(pid int) bool
	// Every is how often they are read (default DefaultControlPoll, the
	// protocol's 5 s presence poll, §5.4).
	Every time.Duration

	afterPoll func() // tests: called after each look
}

// DefaultControlPoll is how often the probes are read and the work hours
// looked at.
const DefaultControlPoll = 5 * time.Second

// probeTimeout bounds one probe's reading (nvidia-smi can hang on a
// wedged driver); a reading that takes longer counts as failed.
const probeTimeout = 4 * time.Second

// ownProcess is this program's process id.
var ownProcess = os.Getpid()

// decideLocked is the one decision now. Called with w.mu held.
func (w *Worker) decideLocked() controls.Decision {
	return w.gate.Decide(w.clock.Now())
}

// setPausedLocked sets the donor's own pause and tells the decision.
// Called with w.mu held.
func (w *Worker) setPausedLocked(on bool) {
	if on && !w.paused {
		w.pausedSince = w.clock.Now()
	}
	w.paused = on
	var until time.Time
	if on {
		until = w.resumeAt
	}
	w.gate.SetPause(on, w.pausedSince, until)
}

// ownPID tells the gate which GPU processes are ours.
func (w *Worker) ownPID(pid int) bool {
	if p := w.cfg.Probes; p != nil && p.Own != nil {
		return p.Own(pid)
	}
	return pid == ownProcess
}

// controlLog is the gate's logger: probe failures (once), recoveries.
func (w *Worker) controlLog(level, msg string) {
	if level == "warn" {
		w.log.Warn(msg, "op", "controls")
		return
	}
	w.log.Info(msg, "op", "controls")
}

// watchControls reads the probes at once and then on every beat of the
// worker's clock until ctx ends.
func (w *Worker) watchControls(ctx context.Context) {
	every := w.cfg.Probes.Every
	if every <= 0 {
		every = DefaultControlPoll
	}
	t := w.clock.NewTicker(every)
	defer t.Stop()
	w.pollControls(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
			w.pollControls(ctx)
		}
	}
}

// pollControls takes one reading of each probe the settings need and
// applies the decision.
func (w *Worker) pollControls(ctx context.Context) {
	p := w.cfg.Probes
	cfg := w.gate.Config()
	now := w.clock.Now()
	read := func(f func(context.Context)) {
		pctx, cancel := context.WithTimeout(ctx, probeTimeout)
		defer cancel()
		f(pctx)
	}
	if p.Idle != nil {
		// Read whether or not only-when-idle is on: the heartbeat carries
		// userPresence either way (§3.3).
		read(func(c context.Context) {
			d, err := p.Idle.IdleTime(c)
			w.gate.ObserveIdle(now, d, err)
		})
	}
	if p.GPU != nil && (cfg.PauseWhenGPUBusy || cfg.MaxTemperatureC > 0 || cfg.MaxPowerW > 0) {
		read(func(c context.Context) {
			s, err := p.GPU.Sample(c)
			w.gate.ObserveGPU(now, s, err)
		})
	}
	if p.Programs != nil && len(cfg.Programs) > 0 {
		read(func(c context.Context) {
			names, err := p.Programs.Running(c, cfg.Programs)
			w.gate.ObservePrograms(now, names, err)
		})
	}
	if ctx.Err() == nil {
		w.checkControls()
	}
	if p.afterPoll != nil {
		p.afterPoll()
	}
}

// checkControls applies the decision after something fed it: it logs a
// control's hold beginning and ending, publishes the change, lets the
// resident models go when a hold begins while idle, and stops a running
// studio job when a control other than the donor's pause begins to hold
// and the donor chose "stop it now". That stop is not the donor's pause:
// when the hold ends, work resumes by itself. Local jobs are never held
// back (§5.4).
func (w *Worker) checkControls() {
	w.mu.Lock()
	dec := w.decideLocked()
	var now []controls.Control
	for _, h := range dec.Holds {
		now = append(now, h.Control)
	}
	before := w.holds
	w.holds = now
	changed := !slices.Equal(before, now)
	var stop *jobRun
	if jr := w.cur; dec.Machine() && dec.StopJob && jr != nil && !jr.local && !jr.stopped.Load() && jr.heldStop.Load() == nil {
		msg := "stopped because this computer needed it: " + machineLine(dec)
		jr.heldStop.Store(&msg)
		stop = jr
		w.halting++
	}
	w.mu.Unlock()
	if !changed && stop == nil {
		return
	}
	for _, h := range dec.Holds {
		if h.Control != controls.ControlPause && !slices.Contains(before, h.Control) {
			w.log.Info("not taking studio jobs: "+h.Reason, "op", "controls", "control", string(h.Control))
		}
	}
	for _, c := range before {
		if c != controls.ControlPause && !slices.Contains(now, c) {
			w.log.Info(fmt.Sprintf("the %s hold is over", controlWord(c)), "op", "controls", "control", string(c))
		}
	}
	if changed && dec.MayWork && len(before) > 0 {
		w.log.Info("taking studio jobs again", "op", "controls")
	}
	if stop != nil {
		w.log.Info("stopping job "+stop.claim.JobID+": "+machineLine(dec), "op", "controls", "job", stop.claim.JobID)
		stop.cancel()
		go w.haltEngines()
	} else if !dec.MayWork && len(before) == 0 {
		w.releaseIfIdle()
	}
	w.publish()
}

// machineLine joins the reasons of the holds other than the donor's pause.
func machineLine(d controls.Decision) string {
	var parts []string
	for _, h := range d.Holds {
		if h.Control != controls.ControlPause {
			parts = append(parts, h.Reason)
		}
	}
	return strings.Join(parts, "; ")
}

func controlWord(c controls.Control) string {
	switch c {
	case controls.ControlSchedule:
		return "work hours"
	case controls.ControlAway:
		return "only-when-away"
	case controls.ControlGPU:
		return "GPU busy"
	case controls.ControlPrograms:
		return "programs"
	case controls.ControlTemperature:
		return "GPU temperature"
	case controls.ControlPower:
		return "GPU power"
	}
	return string(c)
}
