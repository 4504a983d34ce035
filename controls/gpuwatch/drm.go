package gpuwatch

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/minisgg/studio-worker/controls"
)

// DefaultBusyShare is the share of an engine's time (0..1) a process must
// have used since the previous reading to count as using the GPU.
//
// Why 10%: an idle desktop keeps DRM clients open (the compositor, Xorg,
// a browser) that wake the GPU for a cursor blink or a clock tick, a few
// percent of one engine at most, while a game or a render keeps an engine
// busy for most of the interval. The decision's hysteresis (busy for 10 s
// before it pauses) smooths the rest.
const DefaultBusyShare = 0.10

// displayServers are processes that are always present on a desktop and
// draw the other programs' windows (X servers and Wayland compositors,
// Windows' dwm, macOS' WindowServer). Their GPU time is the desktop's, so
// they never count as another program using the GPU; the program that
// draws (a game, a video player) counts itself. Names are compared as
// normName gives them.
var displayServers = map[string]bool{
	"xorg": true, "x": true, "xwayland": true, "xfree86": true,
	"gnome-shell": true, "mutter": true, "kwin_x11": true, "kwin_wayland": true, "kwin": true,
	"plasmashell": true, "sway": true, "weston": true, "hyprland": true, "wayfire": true,
	"labwc": true, "river": true, "niri": true, "cosmic-comp": true, "picom": true,
	"compton": true, "compiz": true, "xfwm4": true, "marco": true, "muffin": true,
	"cinnamon": true, "budgie-wm": true, "enlightenment": true, "openbox": true,
	"dwm": true, "windowserver": true,
}

// isDisplayServer reports whether a process name is one of displayServers.
func isDisplayServer(name string) bool { return displayServers[normName(name)] }

// drmKey names one DRM client: drm-client-id is unique per device, so the
// device's drm-pdev goes with it (drm-usage-stats.rst).
type drmKey struct{ pdev, id string }

// drmClient is what one DRM client's fdinfo says.
type drmClient struct {
	driver string
	pdev   string
	// engines are drm-engine-<name> (ns busy); capacity is
	// drm-engine-capacity-<name> (identical engines; absent means 1).
	engines  map[string]uint64
	capacity map[string]uint64
	// cycles and totalCycles are drm-cycles-<name> and
	// drm-total-cycles-<name> (Intel xe reports busy time this way: the
	// share is the growth of one over the growth of the other).
	cycles      map[string]uint64
	totalCycles map[string]uint64
	// localBytes is the device-local memory the client holds.
	localBytes uint64
}

// hasUsage reports whether the client reports engine time at all.
func (c *drmClient) hasUsage() bool { return len(c.engines) > 0 || len(c.cycles) > 0 }

// parseFdinfo reads one /proc/<pid>/fdinfo/<fd> file. ok is false for a
// file that is not a DRM client's (no drm-driver or no drm-client-id).
//
// Format (Documentation/gpu/drm-usage-stats.rst): "key:<whitespace>value"
// lines; drm-engine-<name> in ns, drm-engine-capacity-<name>,
// drm-cycles-<name>, drm-total-cycles-<name>, and memory as
// drm-{resident,memory,total}-<region> with an optional KiB or MiB unit.
// Device-local memory is the regions named vram* (amdgpu, xe) or local*
// (i915), preferring drm-resident- over the older drm-memory- over
// drm-total-.
func parseFdinfo(b []byte) (drmClient, drmKey, bool) {
	c := drmClient{}
	var id string
	mem := map[string]map[string]uint64{} // kind -> region -> bytes
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		key, val, found := strings.Cut(sc.Text(), ":")
		if !found || !strings.HasPrefix(key, "drm-") {
			continue
		}
		val = strings.TrimSpace(val)
		switch {
		case key == "drm-driver":
			c.driver = val
		case key == "drm-pdev":
			c.pdev = val
		case key == "drm-client-id":
			id = val
		case strings.HasPrefix(key, "drm-engine-capacity-"):
			if n, ok := fdinfoUint(val); ok && n > 0 {
				setCounter(&c.capacity, strings.TrimPrefix(key, "drm-engine-capacity-"), n)
			}
		case strings.HasPrefix(key, "drm-engine-"):
			if n, ok := fdinfoUint(val); ok {
				setCounter(&c.engines, strings.TrimPrefix(key, "drm-engine-"), n)
			}
		case strings.HasPrefix(key, "drm-total-cycles-"):
			if n, ok := fdinfoUint(val); ok {
				setCounter(&c.totalCycles, strings.TrimPrefix(key, "drm-total-cycles-"), n)
			}
		case strings.HasPrefix(key, "drm-cycles-"):
			if n, ok := fdinfoUint(val); ok {
				setCounter(&c.cycles, strings.TrimPrefix(key, "drm-cycles-"), n)
			}
		default:
			for _, kind := range []string{"drm-resident-", "drm-memory-", "drm-total-"} {
				region, isKind := strings.CutPrefix(key, kind)
				if !isKind || !(strings.HasPrefix(region, "vram") || strings.HasPrefix(region, "local")) {
					continue
				}
				if n, ok := fdinfoBytes(val); ok {
					if mem[kind] == nil {
						mem[kind] = map[string]uint64{}
					}
					mem[kind][region] = n
				}
			}
		}
	}
	if c.driver == "" || id == "" {
		return drmClient{}, drmKey{}, false
	}
	for _, kind := range []string{"drm-resident-", "drm-memory-", "drm-total-"} {
		if len(mem[kind]) > 0 {
			for _, n := range mem[kind] {
				c.localBytes += n
			}
			break
		}
	}
	return c, drmKey{pdev: c.pdev, id: id}, true
}

func setCounter(m *map[string]uint64, name string, n uint64) {
	if name == "" {
		return
	}
	if *m == nil {
		*m = map[string]uint64{}
	}
	(*m)[name] = n
}

// fdinfoUint reads "<uint>" with an optional unit after a space ("123 ns").
func fdinfoUint(val string) (uint64, bool) {
	num, _, _ := strings.Cut(val, " ")
	n, err := strconv.ParseUint(strings.TrimSpace(num), 10, 64)
	return n, err == nil
}

// fdinfoBytes reads "<uint> [KiB|MiB]" (GiB accepted too) as bytes.
func fdinfoBytes(val string) (uint64, bool) {
	num, unit, _ := strings.Cut(val, " ")
	n, err := strconv.ParseUint(num, 10, 64)
	if err != nil {
		return 0, false
	}
	switch strings.TrimSpace(unit) {
	case "", "B":
		return n, true
	case "KiB":
		return n << 10, true
	case "MiB":
		return n << 20, true
	case "GiB":
		return n << 30, true
	}
	return 0, false
}

// drmReading is one pass over every readable process's DRM clients.
type drmReading struct {
	at    time.Time
	procs map[int]map[drmKey]drmClient
	// usage is true when some readable client reports engine time.
	usage bool
}

// readDRM reads the DRM clients of every process under root whose fd
// folder may be read (the donor's own processes; others' are skipped, as
// are processes that end while it reads). A fd counts when its link points
// into /dev/dri/ and its fdinfo names a DRM client.
func readDRM(ctx context.Context, root string) (*drmReading, error) {
	pids, err := procPIDs(root)
	if err != nil {
		return nil, err
	}
	r := &drmReading{procs: map[int]map[drmKey]drmClient{}}
	for i, pid := range pids {
		if i%64 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		dir := filepath.Join(root, strconv.Itoa(pid))
		fds, err := os.ReadDir(filepath.Join(dir, "fd"))
		if err != nil {
			continue
		}
		for _, fd := range fds {
			target, err := os.Readlink(filepath.Join(dir, "fd", fd.Name()))
			if err != nil || !strings.HasPrefix(target, "/dev/dri/") {
				continue
			}
			b, err := os.ReadFile(filepath.Join(dir, "fdinfo", fd.Name()))
			if err != nil {
				continue
			}
			c, key, ok := parseFdinfo(b)
			if !ok {
				continue
			}
			if r.procs[pid] == nil {
				r.procs[pid] = map[drmKey]drmClient{}
			}
			// A duplicated or shared fd shows the same client again.
			r.procs[pid][key] = c
			r.usage = r.usage || c.hasUsage()
		}
	}
	return r, nil
}

// drmUse is how much of a device's engine a process used over an interval.
type drmUse struct {
	share      float64 // the busiest engine's share of the interval, 0..capacity
	device     string  // "amdgpu 0000:03:00.0"
	localBytes uint64
}

// drmShares compares two readings taken interval apart and returns each
// process's busiest engine share, and cur with every counter that went
// backwards held at its previous, larger value: drm-usage-stats.rst says
// a reader "is expected to stay with that larger previous value until a
// monotonic update is seen", so such an engine counts nothing for the
// interval rather than a reset's full count.
//
// The share of engine e of client c is
// (engine_ns(now) - engine_ns(before)) / (interval_ns * capacity(e)),
// or, where only cycles are reported, the growth of drm-cycles-e over the
// growth of drm-total-cycles-e, divided by the capacity. A client that is
// new since the previous reading counts from zero (it did all its work
// within the interval), unless it holds more time than the interval (an
// old client the previous reading could not read); a new client that only
// reports cycles counts from the next reading. A process's share on a device and engine is the sum
// over its clients; its share is the largest of those.
func drmShares(prev, cur *drmReading) map[int]drmUse {
	interval := cur.at.Sub(prev.at)
	out := map[int]drmUse{}
	for pid, clients := range cur.procs {
		prevClients := prev.procs[pid]
		perEngine := map[string]float64{} // pdev+engine -> share
		var use drmUse
		for key, c := range clients {
			use.localBytes += c.localBytes
			pc, had := prevClients[key]
			dev := strings.TrimSpace(c.driver + " " + c.pdev)
			for e, ns := range c.engines {
				span := float64(interval.Nanoseconds()) * float64(capOf(c, e))
				base := uint64(0)
				if had {
					if v, ok := pc.engines[e]; ok {
						if ns < v {
							c.engines[e] = v
							continue
						}
						base = v
					}
				} else if float64(ns) > span {
					// More time than the interval holds: an old client
					// the previous reading missed (its fdinfo could not
					// be read then), not a new one. It counts from the
					// next reading.
					continue
				}
				if span > 0 {
					perEngine[dev+"\x00"+e] += float64(ns-base) / span
				}
			}
			for e, cyc := range c.cycles {
				if _, timed := c.engines[e]; timed {
					continue // drm-engine- is the time; cycles add nothing
				}
				tot := c.totalCycles[e]
				if !had {
					continue
				}
				pcyc, ok1 := pc.cycles[e]
				ptot, ok2 := pc.totalCycles[e]
				if !ok1 || !ok2 {
					continue
				}
				if cyc < pcyc {
					c.cycles[e] = pcyc
					continue
				}
				if tot <= ptot {
					continue
				}
				perEngine[dev+"\x00"+e] += float64(cyc-pcyc) / float64(tot-ptot) / float64(capOf(c, e))
			}
		}
		for k, s := range perEngine {
			if s > use.share {
				use.share = s
				use.device, _, _ = strings.Cut(k, "\x00")
			}
		}
		out[pid] = use
	}
	return out
}

func capOf(c drmClient, engine string) uint64 {
	if n := c.capacity[engine]; n > 0 {
		return n
	}
	return 1
}

// drmSource finds processes that use AMD, Intel and other DRM GPUs on
// Linux from the fdinfo counters, comparing each reading with the one
// before: a process uses the GPU when one of its engines was busy for at
// least busyShare of the time between the two (DefaultBusyShare explains
// the figure) and it is not a display server (displayServers).
//
// Temperature and power come from the same cards' hwmon sensors
// (hwmonReadings).
type drmSource struct {
	procRoot  string
	sysRoot   string
	busyShare float64
	now       func() time.Time

	mu   sync.Mutex
	prev *drmReading
}

func newDRMSource(ctx context.Context, procRoot, sysRoot string, busyShare float64, now func() time.Time) *drmSource {
	s := &drmSource{procRoot: procRoot, sysRoot: sysRoot, busyShare: busyShare, now: now}
	// The first reading is taken now, so that the first sample already
	// has an interval to compare over.
	if r, err := readDRM(ctx, procRoot); err == nil {
		r.at = now()
		s.prev = r
	}
	return s
}

func (s *drmSource) name() string { return "DRM fdinfo" }

func (s *drmSource) sample(ctx context.Context) (controls.GPUSample, error) {
	out := controls.GPUSample{Source: s.name()}
	out.TemperatureC, out.TemperatureKnown, out.PowerW, out.PowerKnown = hwmonReadings(drmCards(s.sysRoot))
	procs, err := s.processes(ctx)
	if err != nil {
		return out, err
	}
	out.Processes, out.ProcessesKnown = procs, true
	return out, nil
}

// processes compares a new reading with the previous one.
func (s *drmSource) processes(ctx context.Context) ([]controls.GPUProcess, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, err := readDRM(ctx, s.procRoot)
	if err != nil {
		return nil, err
	}
	cur.at = s.now()
	prev := s.prev
	if prev == nil || !cur.at.After(prev.at) {
		s.prev = cur
		return nil, unknownf("DRM fdinfo: the first reading has nothing to compare with yet")
	}
	shares := drmShares(prev, cur)
	s.prev = cur
	if !cur.usage {
		return nil, unknownf("no GPU program of this user reports its GPU time (DRM fdinfo drm-engine-*)")
	}
	procs := []controls.GPUProcess{}
	for pid, use := range shares {
		if use.share < s.busyShare {
			continue
		}
		name := procName(s.procRoot, pid)
		if isDisplayServer(name) {
			continue
		}
		procs = append(procs, controls.GPUProcess{PID: pid, Name: name, Device: use.device, MemoryBytes: use.localBytes})
	}
	sortProcesses(procs)
	return procs, nil
}
