package gpuwatch

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/minisgg/studio-worker/controls"
)

// fixtureClock is a hand-moved clock for the DRM source's intervals.
type fixtureClock struct{ t time.Time }

func (c *fixtureClock) now() time.Time { return c.t }

// procFixture is a fake /proc whose DRM fds the test writes.
type procFixture struct {
	t    *testing.T
	root string
}

func newProcFixture(t *testing.T) *procFixture {
	return &procFixture{t: t, root: t.TempDir()}
}

// proc makes a process with a comm (and an exe link when exe != "").
func (f *procFixture) proc(pid int, comm string) {
	f.t.Helper()
	dir := filepath.Join(f.root, strconv.Itoa(pid))
	for _, d := range []string{"fd", "fdinfo"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			f.t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "comm"), []byte(comm+"\n"), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

// fd writes one fd: a link to target and its fdinfo text.
func (f *procFixture) fd(pid, fd int, target, info string) {
	f.t.Helper()
	dir := filepath.Join(f.root, strconv.Itoa(pid))
	link := filepath.Join(dir, "fd", strconv.Itoa(fd))
	_ = os.Remove(link)
	if err := os.Symlink(target, link); err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "fdinfo", strconv.Itoa(fd)), []byte(info), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

func (f *procFixture) remove(pid int) {
	if err := os.RemoveAll(filepath.Join(f.root, strconv.Itoa(pid))); err != nil {
		f.t.Fatal(err)
	}
}

// amdgpu writes an amdgpu client's fdinfo with gfx time in ns.
func amdgpu(id int, gfxNS uint64, vramKiB int) string {
	return "pos:\t0\nflags:\t02100002\nmnt_id:\t24\nino:\t1234\n" +
		"drm-driver:\tamdgpu\ndrm-client-id:\t" + strconv.Itoa(id) + "\ndrm-pdev:\t0000:03:00.0\n" +
		"drm-memory-vram:\t" + strconv.Itoa(vramKiB) + " KiB\ndrm-memory-gtt:\t2048 KiB\ndrm-memory-cpu:\t0 KiB\n" +
		"drm-engine-gfx:\t" + strconv.FormatUint(gfxNS, 10) + " ns\ndrm-engine-compute:\t0 ns\ndrm-engine-dec:\t0 ns\n"
}

func TestParseFdinfo(t *testing.T) {
	i915 := "pos:\t0\nflags:\t02100002\nmnt_id:\t25\nino:\t771\n" +
		"drm-driver:\ti915\ndrm-client-id:\t7\ndrm-pdev:\t0000:00:02.0\n" +
		"drm-total-system0:\t580 KiB\ndrm-resident-system0:\t580 KiB\ndrm-total-local0:\t8 MiB\ndrm-resident-local0:\t4 MiB\n" +
		"drm-engine-render:\t9288864723 ns\ndrm-engine-copy:\t2035071108 ns\ndrm-engine-video:\t0 ns\n" +
		"drm-engine-capacity-video:\t2\ndrm-engine-video-enhance:\t0 ns\n"
	c, key, ok := parseFdinfo([]byte(i915))
	if !ok || key != (drmKey{pdev: "0000:00:02.0", id: "7"}) || c.driver != "i915" {
		t.Fatalf("i915: ok=%v key=%+v client=%+v", ok, key, c)
	}
	if c.engines["render"] != 9288864723 || c.engines["copy"] != 2035071108 || c.capacity["video"] != 2 || len(c.engines) != 4 {
		t.Fatalf("i915 engines %v capacity %v", c.engines, c.capacity)
	}
	if c.localBytes != 4<<20 { // drm-resident-local0 wins over drm-total-local0
		t.Fatalf("i915 local memory %d, want %d", c.localBytes, 4<<20)
	}

	xe := "drm-driver:\txe\ndrm-client-id:\t12\ndrm-pdev:\t0000:03:00.0\n" +
		"drm-total-vram0:\t1024 KiB\ndrm-resident-vram0:\t1024 KiB\n" +
		"drm-cycles-rcs:\t28257900\ndrm-total-cycles-rcs:\t7655183225\ndrm-cycles-vcs:\t0\ndrm-total-cycles-vcs:\t7655183225\n" +
		"drm-engine-capacity-vcs:\t2\n"
	c, _, ok = parseFdinfo([]byte(xe))
	if !ok || c.cycles["rcs"] != 28257900 || c.totalCycles["rcs"] != 7655183225 || c.capacity["vcs"] != 2 || len(c.engines) != 0 || c.localBytes != 1<<20 {
		t.Fatalf("xe: ok=%v %+v", ok, c)
	}

	c, _, ok = parseFdinfo([]byte(amdgpu(3, 5, 12288)))
	if !ok || c.localBytes != 12288<<10 || c.engines["gfx"] != 5 {
		t.Fatalf("amdgpu: ok=%v %+v", ok, c)
	}

	for name, text := range map[string]string{
		"not DRM":        "pos:\t0\nflags:\t0100000\nmnt_id:\t24\nino:\t3\n",
		"no client id":   "drm-driver:\tamdgpu\ndrm-engine-gfx:\t5 ns\n",
		"empty":          "",
		"garbage values": "drm-driver:\tamdgpu\ndrm-client-id:\t1\ndrm-engine-gfx:\tlots ns\ndrm-memory-vram:\t12 parsecs\n",
	} {
		c, _, ok := parseFdinfo([]byte(text))
		if name == "garbage values" {
			if !ok || c.hasUsage() || c.localBytes != 0 {
				t.Errorf("%s: ok=%v %+v, want a client without usage", name, ok, c)
			}
			continue
		}
		if ok {
			t.Errorf("%s: read as a DRM client: %+v", name, c)
		}
	}
}

func TestDRMBusyRule(t *testing.T) {
	f := newProcFixture(t)
	clk := &fixtureClock{t: time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)}
	const sec = uint64(time.Second)

	// An idle desktop: the compositor, Xwayland and a browser hold DRM
	// fds and wake the GPU a little; a shell has no DRM fd at all.
	f.proc(100, "gnome-shell")
	f.fd(100, 12, "/dev/dri/card1", amdgpu(1, 50*sec, 65536))
	f.fd(100, 13, "/dev/dri/renderD128", amdgpu(2, 1*sec, 1024))
	f.proc(101, "Xwayland")
	f.fd(101, 4, "/dev/dri/renderD128", amdgpu(3, 3*sec, 2048))
	f.proc(102, "firefox")
	f.fd(102, 40, "/dev/dri/renderD128", amdgpu(4, 2*sec, 4096))
	f.fd(102, 41, "/dev/dri/renderD128", amdgpu(4, 2*sec, 4096)) // a dup of fd 40: one client
	f.proc(103, "bash")
	f.fd(103, 0, "/dev/pts/0", "pos:\t0\nflags:\t02\nmnt_id:\t25\nino:\t3\n")

	s := newDRMSource(context.Background(), f.root, t.TempDir(), DefaultBusyShare, clk.now)
	ctx := context.Background()

	// 5 s later: the compositor used 2 s (40%: dragging windows), the
	// browser 0.2 s (4%), Xwayland nothing.
	clk.t = clk.t.Add(5 * time.Second)
	f.fd(100, 12, "/dev/dri/card1", amdgpu(1, 52*sec, 65536))
	f.fd(102, 40, "/dev/dri/renderD128", amdgpu(4, 2*sec+sec/5, 4096))
	f.fd(102, 41, "/dev/dri/renderD128", amdgpu(4, 2*sec+sec/5, 4096))
	got, err := s.sample(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !got.ProcessesKnown || len(got.Processes) != 0 || got.Source != "DRM fdinfo" {
		t.Fatalf("idle desktop read as %+v, want known and no process", got)
	}

	// A game starts (a new process, a new client with 4 s of 5 busy) and
	// the browser plays a video (dup'ed fd counted once: 0.4 s of 5 = 8%).
	clk.t = clk.t.Add(5 * time.Second)
	f.proc(200, "SpaceGame")
	f.fd(200, 9, "/dev/dri/renderD128", amdgpu(9, 4*sec, 2<<20))
	f.fd(102, 40, "/dev/dri/renderD128", amdgpu(4, 2*sec+3*sec/5, 4096))
	f.fd(102, 41, "/dev/dri/renderD128", amdgpu(4, 2*sec+3*sec/5, 4096))
	got, err = s.sample(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []controls.GPUProcess{{PID: 200, Name: "SpaceGame", Device: "amdgpu 0000:03:00.0", MemoryBytes: 2 << 30}}
	if !reflect.DeepEqual(got.Processes, want) {
		t.Fatalf("game running: %+v, want %+v", got.Processes, want)
	}

	// The game's counter goes backwards (a reused client id or a driver
	// reset): that interval counts nothing and the larger value stays the
	// base, so the next interval's growth is measured from it.
	clk.t = clk.t.Add(5 * time.Second)
	f.fd(200, 9, "/dev/dri/renderD128", amdgpu(9, 1*sec, 2<<20))
	got, err = s.sample(ctx)
	if err != nil || len(got.Processes) != 0 {
		t.Fatalf("counter went backwards: %+v, %v; want no process", got.Processes, err)
	}
	clk.t = clk.t.Add(5 * time.Second)
	f.fd(200, 9, "/dev/dri/renderD128", amdgpu(9, 4*sec+sec/10, 2<<20)) // 0.1 s over the held 4 s: 2%
	got, err = s.sample(ctx)
	if err != nil || len(got.Processes) != 0 {
		t.Fatalf("after the held value: %+v, %v; want no process (2%%)", got.Processes, err)
	}
	clk.t = clk.t.Add(5 * time.Second)
	f.fd(200, 9, "/dev/dri/renderD128", amdgpu(9, 8*sec, 2<<20))
	got, err = s.sample(ctx)
	if err != nil || len(got.Processes) != 1 || got.Processes[0].PID != 200 {
		t.Fatalf("game busy again: %+v, %v", got.Processes, err)
	}

	// Files that cannot be read (another user's process, a process that
	// ends while it is read) are left out, not errors; the game ended.
	clk.t = clk.t.Add(5 * time.Second)
	f.remove(200)
	// (a folder where the fdinfo file should be: unreadable even as root)
	fdinfo4 := filepath.Join(f.root, "101", "fdinfo", "4")
	if err := os.Remove(fdinfo4); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(fdinfo4, 0o755); err != nil {
		t.Fatal(err)
	}
	f.fd(101, 5, "/dev/dri/renderD128", amdgpu(5, 5*sec, 0)) // new, fully busy, but Xwayland
	f.proc(300, "ghost")
	f.fd(300, 3, "/dev/dri/renderD128", amdgpu(30, 9*sec, 0))
	if err := os.Remove(filepath.Join(f.root, "300", "fdinfo", "3")); err != nil {
		t.Fatal(err)
	}
	got, err = s.sample(ctx)
	if err != nil || len(got.Processes) != 0 {
		t.Fatalf("game ended, unreadable files: %+v, %v", got.Processes, err)
	}

	// Clients the previous reading missed (Xwayland's fdinfo could not be
	// read; vkcube's process was not seen) hold 40 s of engine time, more
	// than a client new within these 5 s can have: they count nothing
	// now, and from the next reading on their growth counts.
	clk.t = clk.t.Add(5 * time.Second)
	if err := os.Remove(fdinfo4); err != nil {
		t.Fatal(err)
	}
	f.fd(101, 4, "/dev/dri/renderD128", amdgpu(3, 40*sec, 2048))
	f.proc(400, "vkcube")
	f.fd(400, 3, "/dev/dri/renderD128", amdgpu(40, 40*sec, 0)) // a process the last reading missed
	got, err = s.sample(ctx)
	if err != nil || len(got.Processes) != 0 {
		t.Fatalf("clients the previous reading missed: %+v, %v; want none", got.Processes, err)
	}
	clk.t = clk.t.Add(5 * time.Second)
	f.fd(400, 3, "/dev/dri/renderD128", amdgpu(40, 44*sec, 0)) // 4 s of 5 from the held 40 s
	got, err = s.sample(ctx)
	if err != nil || len(got.Processes) != 1 || got.Processes[0].Name != "vkcube" {
		t.Fatalf("vkcube busy: %+v, %v", got.Processes, err)
	}
}

func TestDRMCyclesAndCapacity(t *testing.T) {
	f := newProcFixture(t)
	clk := &fixtureClock{t: time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)}
	xe := func(rcs, total, vcs uint64) string {
		return "drm-driver:\txe\ndrm-client-id:\t5\ndrm-pdev:\t0000:00:02.0\n" +
			"drm-cycles-rcs:\t" + strconv.FormatUint(rcs, 10) + "\ndrm-total-cycles-rcs:\t" + strconv.FormatUint(total, 10) + "\n" +
			"drm-cycles-vcs:\t" + strconv.FormatUint(vcs, 10) + "\ndrm-total-cycles-vcs:\t" + strconv.FormatUint(total, 10) + "\n" +
			"drm-engine-capacity-vcs:\t2\n"
	}
	f.proc(10, "blender")
	f.fd(10, 5, "/dev/dri/renderD128", xe(0, 1000, 0))
	s := newDRMSource(context.Background(), f.root, t.TempDir(), DefaultBusyShare, clk.now)

	// 5% of rcs, and one of two video engines 30% busy = 15% of the class.
	clk.t = clk.t.Add(2 * time.Second)
	f.fd(10, 5, "/dev/dri/renderD128", xe(50, 2000, 300))
	got, err := s.sample(context.Background())
	if err != nil || len(got.Processes) != 1 || got.Processes[0].Name != "blender" || got.Processes[0].Device != "xe 0000:00:02.0" {
		t.Fatalf("xe video at 15%%: %+v, %v", got.Processes, err)
	}
	// 8% of one video engine of two: 4%, under the share.
	clk.t = clk.t.Add(2 * time.Second)
	f.fd(10, 5, "/dev/dri/renderD128", xe(60, 3000, 380))
	got, err = s.sample(context.Background())
	if err != nil || len(got.Processes) != 0 {
		t.Fatalf("xe video at 4%%: %+v, %v", got.Processes, err)
	}
}

func TestDRMUnknown(t *testing.T) {
	f := newProcFixture(t)
	clk := &fixtureClock{t: time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)}
	// Only the NVIDIA proprietary driver's fds (no engine time) or no
	// DRM client at all: this user's programs do not tell.
	f.proc(10, "Xorg")
	f.fd(10, 5, "/dev/dri/card0", "drm-driver:\tnvidia-drm\ndrm-client-id:\t1\n")
	s := newDRMSource(context.Background(), f.root, t.TempDir(), DefaultBusyShare, clk.now)
	clk.t = clk.t.Add(time.Second)
	if _, err := s.sample(context.Background()); !errors.Is(err, controls.ErrUnknown) {
		t.Fatalf("no engine counters: err = %v, want ErrUnknown", err)
	}
	// The clock did not move (the first reading's time): nothing to
	// compare with yet, and that is "cannot tell", not "idle".
	if _, err := s.sample(context.Background()); !errors.Is(err, controls.ErrUnknown) || !strings.Contains(err.Error(), "first reading") {
		t.Fatalf("same instant: err = %v", err)
	}
	// A proc root that is gone.
	s = newDRMSource(context.Background(), filepath.Join(f.root, "missing"), t.TempDir(), DefaultBusyShare, clk.now)
	if _, err := s.sample(context.Background()); !errors.Is(err, controls.ErrUnknown) {
		t.Fatalf("no proc: err = %v, want ErrUnknown", err)
	}
}

// sysFixture writes a fake sysfs with one amdgpu card and its hwmon.
func sysFixture(t *testing.T, driver string, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	dev := filepath.Join(root, "devices", "pci0000:00", "0000:03:00.0")
	if err := os.MkdirAll(filepath.Join(dev, "hwmon", "hwmon3"), 0o755); err != nil {
		t.Fatal(err)
	}
	drvDir := filepath.Join(root, "bus", "pci", "drivers", driver)
	if err := os.MkdirAll(drvDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(drvDir, filepath.Join(dev, "driver")); err != nil {
		t.Fatal(err)
	}
	card := filepath.Join(root, "class", "drm", "card1")
	if err := os.MkdirAll(card, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(dev, filepath.Join(card, "device")); err != nil {
		t.Fatal(err)
	}
	// A connector is not a card.
	if err := os.MkdirAll(filepath.Join(root, "class", "drm", "card1-DP-1"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dev, "hwmon", "hwmon3", name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestHwmonReadings(t *testing.T) {
	sys := sysFixture(t, "amdgpu", map[string]string{
		"temp1_label": "edge\n", "temp1_input": "54000\n",
		"temp2_label": "junction\n", "temp2_input": "71000\n",
		"temp3_label": "mem\n", "temp3_input": "60000\n",
		"power1_average": "87000000\n", "power1_input": "90000000\n",
	})
	if got := drmDrivers(sys); !reflect.DeepEqual(got, []string{"amdgpu"}) {
		t.Fatalf("drivers %q", got)
	}
	tc, tok, pw, pok := hwmonReadings(drmCards(sys))
	if !tok || tc != 54 || !pok || pw != 87 {
		t.Fatalf("amdgpu hwmon: %v°C (%v) %vW (%v), want 54°C 87W", tc, tok, pw, pok)
	}
	// Unlabelled temp1, power1_input only; a sleeping sensor's unreadable
	// value is absent.
	sys = sysFixture(t, "i915", map[string]string{"temp1_input": "48500\n", "power1_input": "garbage\n"})
	tc, tok, _, pok = hwmonReadings(drmCards(sys))
	if !tok || tc != 48.5 || pok {
		t.Fatalf("i915 hwmon: %v°C (%v) power known %v", tc, tok, pok)
	}
	// Intel xe: the package temperature, not the memory's.
	sys = sysFixture(t, "xe", map[string]string{"temp2_label": "pkg\n", "temp2_input": "51000\n", "temp3_label": "vram\n", "temp3_input": "63000\n"})
	if tc, tok, _, _ = hwmonReadings(drmCards(sys)); !tok || tc != 51 {
		t.Fatalf("xe hwmon: %v°C (%v), want 51", tc, tok)
	}
	// NVIDIA's own driver is left to NVML and nvidia-smi.
	if got := drmDrivers(sysFixture(t, "nvidia", nil)); len(got) != 0 {
		t.Fatalf("nvidia card listed for DRM: %q", got)
	}
}

func TestProbeDRMOnly(t *testing.T) {
	f := newProcFixture(t)
	clk := &fixtureClock{t: time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)}
	f.proc(100, "gnome-shell")
	f.fd(100, 12, "/dev/dri/card1", amdgpu(1, 0, 1024))
	f.proc(200, "render")
	f.fd(200, 3, "/dev/dri/renderD128", amdgpu(2, 0, 1024))
	sys := sysFixture(t, "amdgpu", map[string]string{"temp1_input": "66000\n", "power1_average": "150000000\n"})
	p := New(Options{ProcRoot: f.root, SysRoot: sys, NoNVML: true, NoNvidiaSMI: true, Now: clk.now})
	defer p.Close()
	if got := p.Sources(); !reflect.DeepEqual(got, []string{"DRM fdinfo"}) {
		t.Fatalf("sources %q", got)
	}
	clk.t = clk.t.Add(5 * time.Second)
	f.fd(100, 12, "/dev/dri/card1", amdgpu(1, 5*uint64(time.Second), 1024)) // the compositor, fully busy, never counts
	f.fd(200, 3, "/dev/dri/renderD128", amdgpu(2, uint64(time.Second), 1024))
	s, err := p.Sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !s.ProcessesKnown || len(s.Processes) != 1 || s.Processes[0].PID != 200 || s.TemperatureC != 66 || s.PowerW != 150 || s.Source != "DRM fdinfo" {
		t.Fatalf("sample %+v", s)
	}
}

// TestProbeConcurrentSamples reads one Probe from several goroutines (the
// worker, the heartbeat and the window may all ask); -race checks it.
func TestProbeConcurrentSamples(t *testing.T) {
	f := newProcFixture(t)
	f.proc(200, "render")
	f.fd(200, 3, "/dev/dri/renderD128", amdgpu(2, 0, 1024))
	sys := sysFixture(t, "amdgpu", map[string]string{"temp1_input": "66000\n"})
	p := New(Options{ProcRoot: f.root, SysRoot: sys, NoNVML: true, NoNvidiaSMI: true})
	defer p.Close()
	errs := make(chan error, 4*5)
	for g := 0; g < 4; g++ {
		go func() {
			for i := 0; i < 5; i++ {
				s, err := p.Sample(context.Background())
				if errors.Is(err, controls.ErrUnknown) && strings.Contains(err.Error(), "first reading") {
					err = nil // two readings at one clock instant: allowed, not compared
				} else if err == nil && (!s.TemperatureKnown || len(s.Processes) != 0) {
					err = errors.New("unexpected sample")
				}
				errs <- err
			}
		}()
	}
	for i := 0; i < 4*5; i++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
