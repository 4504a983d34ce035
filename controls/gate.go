package controls

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// Control names one thing that can hold the worker back.
type Control string

// The controls, in the order their holds are listed.
const (
	ControlPause       Control = "pause"       // the donor's own pause or snooze
	ControlSchedule    Control = "schedule"    // outside the week's work hours
	ControlAway        Control = "away"        // only when I'm away, and I am here
	ControlGPU         Control = "gpu"         // another process uses the GPU
	ControlPrograms    Control = "programs"    // a program from the donor's list runs
	ControlTemperature Control = "temperature" // the GPU is above its temperature ceiling
	ControlPower       Control = "power"       // the GPU draws more than its power ceiling
)

var controlOrder = []Control{ControlPause, ControlSchedule, ControlAway, ControlGPU, ControlPrograms, ControlTemperature, ControlPower}

// Defaults of Config's durations and margins.
const (
	// DefaultIdleAfter is studio-protocol.md §5.4's threshold: idle time
	// at or above it is "idle".
	DefaultIdleAfter = 120 * time.Second
	// DefaultBusyAfter is how long the GPU (or a listed program) must be
	// busy before it holds the worker.
	DefaultBusyAfter = 10 * time.Second
	// DefaultFreeAfter is how long it must be free again before the hold
	// ends.
	DefaultFreeAfter = 60 * time.Second
	// TemperatureMarginC is how far below its ceiling the GPU must cool
	// before a temperature hold ends, in °C.
	TemperatureMarginC = 5.0
	// PowerMarginFraction is how far below its ceiling, as a fraction of
	// the ceiling, the power draw must fall before a power hold ends.
	PowerMarginFraction = 0.1
)

// The protocol's exact reject reasons (studio-protocol.md §3.2); every
// hold's offer reject carries code "paused".
const (
	ReasonPaused   = "worker paused by operator"
	ReasonNotIdle  = "only when idle: the person is using this computer"
	ReasonSchedule = "outside the work hours set on this computer"
)

// Config is what the donor chose; see the settings of the same names.
// Zero durations take the defaults; a zero ceiling is no ceiling.
type Config struct {
	// OnlyWhenIdle holds the worker while the person uses the computer
	// (or while that cannot be told), per §5.4.
	OnlyWhenIdle bool
	IdleAfter    time.Duration
	// PauseWhenGPUBusy holds the worker while another process uses the
	// GPU; Programs holds it while one of the named programs runs. Both
	// follow BusyAfter and FreeAfter.
	PauseWhenGPUBusy bool
	Programs         []string
	BusyAfter        time.Duration
	FreeAfter        time.Duration
	// MaxTemperatureC and MaxPowerW are ceilings (0: none).
	MaxTemperatureC float64
	MaxPowerW       float64
	// Schedule, when not nil, is the week's work hours.
	Schedule *Schedule
	// StopJob is the donor's answer to "when my computer needs it": true
	// stops a running job when a hold starts (other than the donor's own
	// pause, which has its own buttons); false lets it finish.
	StopJob bool
}

func (c Config) idleAfter() time.Duration { return orDefault(c.IdleAfter, DefaultIdleAfter) }
func (c Config) busyAfter() time.Duration { return orDefault(c.BusyAfter, DefaultBusyAfter) }
func (c Config) freeAfter() time.Duration { return orDefault(c.FreeAfter, DefaultFreeAfter) }

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Presence is whether the person is at the computer (§5.4).
type Presence string

const (
	PresenceUnknown Presence = ""
	PresenceIdle    Presence = "idle"
	PresenceActive  Presence = "active"
)

// Hold is one control that keeps the worker from taking work.
type Hold struct {
	Control Control
	// Reason says why in a donor's words ("GPU busy (blender)").
	Reason string
	// Offer is the reject reason sent to the studio with code "paused".
	Offer string
	// Since is when the hold began.
	Since time.Time
	// Until is when it is expected to end (the schedule's next change, a
	// snooze's end); zero when that is not known.
	Until time.Time
}

// Decision is the one answer to "may I take work now, and if not, why".
type Decision struct {
	MayWork bool
	// Holds are the controls holding the worker, in a fixed order (the
	// donor's pause first); empty when MayWork.
	Holds []Hold
	// OnlyWhenIdle and Presence are the heartbeat's onlyWhenIdle and
	// userPresence (left out when unknown).
	OnlyWhenIdle bool
	Presence     Presence
	// Schedule's next change while a schedule is on: "works again at
	// 18:00" (NextAllows) or "stops at 23:00"; zero without one.
	NextChange time.Time
	NextAllows bool
	// StopJob is Config.StopJob: a hold other than the donor's pause
	// that begins while a job runs stops it.
	StopJob bool
	// GPUUnknown says why nothing on this computer reads the GPU ("no GPU
	// can be read: no NVIDIA driver …"), while a control that needs it
	// (GPU busy, a ceiling) is on; "" otherwise. Such a control then never
	// holds, and the Settings page says so.
	GPUUnknown string
}

// Machine reports whether a hold other than the donor's own pause is in
// force: the ones "when my computer needs it" applies to.
func (d Decision) Machine() bool {
	for _, h := range d.Holds {
		if h.Control != ControlPause {
			return true
		}
	}
	return false
}

// Held reports whether c holds the worker.
func (d Decision) Held(c Control) bool {
	return slices.ContainsFunc(d.Holds, func(h Hold) bool { return h.Control == c })
}

// OfferReason is the reject reason for an offer made while held: the
// protocol's exact string for the donor's pause and for only-when-idle,
// else the first hold's own.
func (d Decision) OfferReason() string {
	if len(d.Holds) == 0 {
		return ""
	}
	return d.Holds[0].Offer
}

// Line is the decision in one line for the window and the tray: "" when
// the worker may work, else the holds' reasons joined ("GPU busy
// (blender); outside your work hours").
func (d Decision) Line() string {
	parts := make([]string, len(d.Holds))
	for i, h := range d.Holds {
		parts[i] = h.Reason
	}
	return strings.Join(parts, "; ")
}

// Logger receives the gate's messages: a probe that fails (once, not on
// every poll), recovers, and holds that begin and end. It may be nil.
type Logger func(level, msg string)

// Gate is the one place that decides whether the worker may take work.
// The worker feeds it the donor's pause, the settings and the probes'
// readings, each with the time it was taken; it keeps the hysteresis and
// answers Decide. It reads no clock itself, so its edges are exact under
// a fake clock. Safe for concurrent use.
type Gate struct {
	mu   sync.Mutex
	cfg  Config
	log  Logger
	loc  *time.Location
	self func(pid int) bool

	pause struct {
		on           bool
		since, until time.Time
	}
	presence   Presence
	presenceAt time.Time // when presence last changed
	awayOnAt   time.Time // when Decide first saw only-when-away on (zero while off)
	idleErr    string    // the failure logged last ("" while it works)

	gpu        hysteresis
	gpuNames   []string
	gpuErr     string
	gpuUnknown string // why no source reads the GPU here (an ErrUnknown), "" otherwise
	temp       ceiling
	power      ceiling

	progs     hysteresis
	progNames []string
	progErr   string

	schedSince time.Time // when the schedule's current state began
	schedWas   *bool
}

// NewGate makes a gate. loc is the zone the schedule is read in (nil:
// time.Local); self tells the worker's own processes (the app and its
// engine children), which never count as "another process using the GPU"
// (nil: none).
func NewGate(cfg Config, loc *time.Location, self func(pid int) bool, log Logger) *Gate {
	if loc == nil {
		loc = time.Local
	}
	if log == nil {
		log = func(string, string) {}
	}
	return &Gate{cfg: cfg, loc: loc, self: self, log: log}
}

// SetConfig applies changed settings; a control that is turned off lets
// go of its hold at once.
func (g *Gate) SetConfig(cfg Config) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.cfg = cfg
	if !cfg.OnlyWhenIdle {
		g.awayOnAt = time.Time{}
	}
	if !cfg.PauseWhenGPUBusy {
		g.gpu = hysteresis{}
	}
	if len(cfg.Programs) == 0 {
		g.progs = hysteresis{}
	}
	if cfg.MaxTemperatureC <= 0 {
		g.temp = ceiling{}
	}
	if cfg.MaxPowerW <= 0 {
		g.power = ceiling{}
	}
	if cfg.Schedule == nil {
		g.schedWas = nil
	}
}

// Config returns the settings in force.
func (g *Gate) Config() Config {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.cfg
}

// SetPause records the donor's own pause: on since when, and until when
// a snooze ends it (zero: until Resume).
func (g *Gate) SetPause(on bool, since, until time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.pause.on, g.pause.since, g.pause.until = on, since, until
}

// ObserveIdle takes one reading of the idle-time probe taken at now: the
// time since the last input, or the probe's error (presence unknown).
func (g *Gate) ObserveIdle(now time.Time, idle time.Duration, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	p := PresenceActive
	if err != nil {
		p = PresenceUnknown
		if msg := err.Error(); msg != g.idleErr {
			g.idleErr = msg
			level := "warn"
			if errors.Is(err, ErrUnknown) {
				level = "info" // no source here: expected on a server
			}
			g.log(level, "cannot tell whether someone uses this computer, so it counts as in use: "+msg)
		}
	} else {
		if g.idleErr != "" {
			g.log("info", "the idle time can be read again")
			g.idleErr = ""
		}
		if idle >= g.cfg.idleAfter() {
			p = PresenceIdle
		}
	}
	if p != g.presence || g.presenceAt.IsZero() {
		g.presence, g.presenceAt = p, now
	}
}

// ObserveGPU takes one reading of the GPU probe taken at now. Processes
// the self function names are left out. An error leaves the readings
// unknown, which holds nothing.
func (g *Gate) ObserveGPU(now time.Time, s GPUSample, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.gpuUnknown = ""
	if err != nil {
		if errors.Is(err, ErrUnknown) {
			g.gpuUnknown = strings.TrimSuffix(strings.TrimPrefix(err.Error(), ErrUnknown.Error()+": "), ": "+ErrUnknown.Error())
		}
		if msg := err.Error(); msg != g.gpuErr {
			g.gpuErr = msg
			if errors.Is(err, ErrUnknown) {
				g.log("info", "GPU use cannot be read here, so the GPU never counts as busy: "+msg)
			} else {
				g.log("warn", "could not read the GPU, so it counts as free: "+msg)
			}
		}
		s = GPUSample{}
	} else if g.gpuErr != "" {
		g.log("info", "the GPU can be read again ("+s.Source+")")
		g.gpuErr = ""
	}
	var others []string
	if s.ProcessesKnown {
		for _, p := range s.Processes {
			if g.self != nil && g.self(p.PID) {
				continue
			}
			name := p.Name
			if name == "" {
				name = fmt.Sprintf("process %d", p.PID)
			}
			if !slices.Contains(others, name) {
				others = append(others, name)
			}
		}
	}
	if g.cfg.PauseWhenGPUBusy {
		// The names stay while the hold waits out the free time, so that
		// it can say what it waits after.
		if held := g.gpu.observe(now, len(others) > 0, g.cfg.busyAfter(), g.cfg.freeAfter()); len(others) > 0 || !held {
			g.gpuNames = others
		}
	}
	if g.cfg.MaxTemperatureC > 0 {
		g.temp.observe(now, s.TemperatureKnown, s.TemperatureC, g.cfg.MaxTemperatureC, TemperatureMarginC)
	}
	if g.cfg.MaxPowerW > 0 {
		g.power.observe(now, s.PowerKnown, s.PowerW, g.cfg.MaxPowerW, g.cfg.MaxPowerW*PowerMarginFraction)
	}
}

// ObservePrograms takes one reading of the program probe taken at now:
// which of Config.Programs run, or the probe's error (none counts).
func (g *Gate) ObservePrograms(now time.Time, running []string, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err != nil {
		if msg := err.Error(); msg != g.progErr {
			g.progErr = msg
			g.log("warn", "could not list the running programs, so none counts: "+msg)
		}
		running = nil
	} else if g.progErr != "" {
		g.log("info", "the running programs can be listed again")
		g.progErr = ""
	}
	if len(g.cfg.Programs) == 0 {
		return
	}
	if held := g.progs.observe(now, len(running) > 0, g.cfg.busyAfter(), g.cfg.freeAfter()); len(running) > 0 || !held {
		g.progNames = slices.Clone(running)
	}
}

// Decide answers at now. Every reader (the offer path, the heartbeat, the
// tray, the window) calls it, so they never disagree.
func (g *Gate) Decide(now time.Time) Decision {
	g.mu.Lock()
	defer g.mu.Unlock()
	cfg := g.cfg
	d := Decision{OnlyWhenIdle: cfg.OnlyWhenIdle, Presence: g.presence, StopJob: cfg.StopJob}
	if cfg.PauseWhenGPUBusy || cfg.MaxTemperatureC > 0 || cfg.MaxPowerW > 0 {
		d.GPUUnknown = g.gpuUnknown
	}
	add := func(c Control, reason, offer string, since, until time.Time) {
		if offer == "" {
			offer = reason
		}
		d.Holds = append(d.Holds, Hold{Control: c, Reason: reason, Offer: offer, Since: since, Until: until})
	}
	if g.pause.on {
		add(ControlPause, "paused by you", ReasonPaused, g.pause.since, g.pause.until)
	}
	if cfg.Schedule != nil {
		local := now.In(g.loc)
		allows := cfg.Schedule.Allows(local)
		if g.schedWas == nil || *g.schedWas != allows {
			// A change seen while watching dates from when the hours
			// ended, not when we looked; the first look (the app just
			// started, or the hours were just turned on) dates from now:
			// the worker was not held by them before.
			seen := g.schedWas != nil
			g.schedWas, g.schedSince = &allows, now
			if at, ok := cfg.Schedule.LastChange(local); ok && seen {
				g.schedSince = at
			}
		}
		at, next, ok := cfg.Schedule.NextChange(local)
		if ok {
			d.NextChange, d.NextAllows = at, next
		}
		if !allows {
			add(ControlSchedule, "outside your work hours", ReasonSchedule, g.schedSince, d.NextChange)
		}
	}
	if cfg.OnlyWhenIdle && g.awayOnAt.IsZero() {
		g.awayOnAt = now
	}
	if cfg.OnlyWhenIdle && g.presence != PresenceIdle {
		reason := "you are using this computer"
		if g.presence == PresenceUnknown {
			reason = "only when you are away, and that cannot be told on this computer"
		}
		// Since the later of: the person came back, the setting went on.
		since := g.presenceAt
		if g.awayOnAt.After(since) {
			since = g.awayOnAt
		}
		add(ControlAway, reason, ReasonNotIdle, since, time.Time{})
	}
	// While a GPU or program hold waits out its free time, the reason
	// says so: what it was, and how long it waits.
	wait := fmt.Sprintf(" (waiting %d s)", int(cfg.freeAfter()/time.Second))
	if cfg.PauseWhenGPUBusy && g.gpu.held {
		reason := "GPU busy" + names(g.gpuNames)
		if !g.gpu.busy {
			reason = "GPU free again" + wait
			if len(g.gpuNames) > 0 {
				reason = "GPU free again after " + strings.Join(g.gpuNames, ", ") + wait
			}
		}
		add(ControlGPU, reason, "the GPU is busy with another program"+names(g.gpuNames), g.gpu.since, time.Time{})
	}
	if len(cfg.Programs) > 0 && g.progs.held {
		progs := strings.Join(g.progNames, ", ")
		reason := progs + " running"
		if !g.progs.busy {
			reason = progs + " just closed" + wait
		}
		add(ControlPrograms, reason, "one of the donor's programs is running ("+progs+")", g.progs.since, time.Time{})
	}
	if cfg.MaxTemperatureC > 0 && g.temp.held {
		add(ControlTemperature, fmt.Sprintf("GPU at %.0f °C, above your %.0f °C ceiling", g.temp.value, cfg.MaxTemperatureC),
			fmt.Sprintf("the GPU is above its temperature ceiling (%.0f °C)", cfg.MaxTemperatureC), g.temp.since, time.Time{})
	}
	if cfg.MaxPowerW > 0 && g.power.held {
		add(ControlPower, fmt.Sprintf("GPU drawing %.0f W, above your %.0f W ceiling", g.power.value, cfg.MaxPowerW),
			fmt.Sprintf("the GPU is above its power ceiling (%.0f W)", cfg.MaxPowerW), g.power.since, time.Time{})
	}
	d.MayWork = len(d.Holds) == 0
	return d
}

func names(n []string) string {
	if len(n) == 0 {
		return ""
	}
	return " (" + strings.Join(n, ", ") + ")"
}

// hysteresis holds after busy has been seen continuously for busyAfter and
// lets go after free has been seen continuously for freeAfter. The time a
// state is "seen" runs from its first reading, so with readings every 5 s
// and busyAfter 10 s the hold starts at the third busy reading.
type hysteresis struct {
	held      bool
	since     time.Time // when the hold began
	busy      bool      // the last reading
	stateFrom time.Time // first reading of the current busy/free run
	seen      bool
}

// observe takes one reading and reports whether the hold is (still) on.
func (h *hysteresis) observe(now time.Time, busy bool, busyAfter, freeAfter time.Duration) bool {
	if !h.seen || busy != h.busy {
		h.busy, h.stateFrom, h.seen = busy, now, true
	}
	run := now.Sub(h.stateFrom)
	switch {
	case !h.held && busy && run >= busyAfter:
		h.held, h.since = true, now
	case h.held && !busy && run >= freeAfter:
		h.held, h.since = false, time.Time{}
	}
	return h.held
}

// ceiling holds as soon as a reading is above max and lets go once one is
// below max-margin; an unknown reading lets go (unknown holds nothing).
type ceiling struct {
	held  bool
	since time.Time
	value float64 // the last known reading
}

func (c *ceiling) observe(now time.Time, known bool, v, limit, margin float64) {
	if !known {
		*c = ceiling{}
		return
	}
	c.value = v
	switch {
	case !c.held && v > limit:
		c.held, c.since = true, now
	case c.held && v < limit-margin:
		c.held, c.since = false, time.Time{}
	}
}
