//go:build linux || freebsd || openbsd || netbsd

package presence

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/minisgg/studio-worker/controls"
)

// privateBus starts a session bus of the test's own at a socket of its
// own (so that a restart comes back at the same address) and returns the
// address and a stop function.
func privateBus(t *testing.T, sock string) (string, func()) {
	t.Helper()
	daemon, err := exec.LookPath("dbus-daemon")
	if err != nil {
		t.Skip("needs dbus-daemon (apt-get install dbus): " + err.Error())
	}
	if sock == "" {
		sock = filepath.Join(t.TempDir(), "bus")
	}
	addr := "unix:path=" + sock
	// --print-address writes the address once the bus listens: that line
	// is the signal that it is ready.
	cmd := exec.Command(daemon, "--session", "--nofork", "--nopidfile", "--print-address=1", "--address="+addr)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}
	t.Cleanup(stop)
	if _, err := bufio.NewReader(out).ReadString('\n'); err != nil {
		t.Fatalf("the private bus did not come up: %v", err)
	}
	return addr, stop
}

// idleService is a stand-in for gnome-shell's or KDE's idle service on
// the private bus: its own connection, its well-known name, the method
// at the real object path answering ms.
type idleService struct {
	conn  *dbus.Conn
	ms    atomic.Uint64
	calls atomic.Int32
}

// exportIdle puts one method of a real interface on the bus under its
// well-known name. answer gives the reply (called with nil once, for the
// reply's type): a uint64 or uint32 time, or a string to answer
// something other than a time.
func exportIdle(t *testing.T, addr, name, path, iface, method string, answer func(s *idleService) (any, *dbus.Error)) *idleService {
	t.Helper()
	conn, err := dbus.Connect(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	s := &idleService{conn: conn}
	var fn any
	switch v, _ := answer(nil); v.(type) {
	case uint64:
		fn = func() (uint64, *dbus.Error) { s.calls.Add(1); v, e := answer(s); return v.(uint64), e }
	case uint32:
		fn = func() (uint32, *dbus.Error) { s.calls.Add(1); v, e := answer(s); return v.(uint32), e }
	case string:
		fn = func() (string, *dbus.Error) { s.calls.Add(1); v, e := answer(s); return v.(string), e }
	}
	if err := conn.ExportMethodTable(map[string]any{method: fn}, dbus.ObjectPath(path), iface); err != nil {
		t.Fatal(err)
	}
	reply, err := conn.RequestName(name, dbus.NameFlagDoNotQueue)
	if err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("owning %s: %v %v", name, reply, err)
	}
	return s
}

func exportMutter(t *testing.T, addr string) *idleService {
	return exportIdle(t, addr, "org.gnome.Mutter.IdleMonitor", "/org/gnome/Mutter/IdleMonitor/Core",
		"org.gnome.Mutter.IdleMonitor", "GetIdletime",
		func(s *idleService) (any, *dbus.Error) {
			if s == nil {
				return uint64(0), nil
			}
			return s.ms.Load(), nil
		})
}

func exportScreenSaver(t *testing.T, addr string) *idleService {
	return exportIdle(t, addr, "org.freedesktop.ScreenSaver", "/org/freedesktop/ScreenSaver",
		"org.freedesktop.ScreenSaver", "GetSessionIdleTime",
		func(s *idleService) (any, *dbus.Error) {
			if s == nil {
				return uint32(0), nil
			}
			return uint32(s.ms.Load()), nil
		})
}

// TestDBusOrderAndFallback is issue 12 item 1's Wayland path: GNOME's
// Mutter IdleMonitor first, the freedesktop ScreenSaver (KDE) when Mutter
// is absent, unknown with the reason when neither is.
func TestDBusOrderAndFallback(t *testing.T) {
	addr, _ := privateBus(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	chain := New(Options{SessionType: "wayland", BusAddress: addr, RetryAfter: time.Nanosecond})
	defer chain.Close()
	if got := strings.Join(chain.Sources(), "|"); got != MutterSource+"|"+ScreenSaverSource {
		t.Fatalf("a Wayland session's sources: %s", got)
	}

	// Neither service yet.
	_, err := chain.IdleTime(ctx)
	if !errors.Is(err, controls.ErrUnknown) || err.Error() != "no GNOME or KDE idle service on the session bus" {
		t.Fatalf("with neither service: %v", err)
	}
	if chain.Source() != "" {
		t.Fatalf("nothing answered, yet the source is %q", chain.Source())
	}

	// KDE only: the fallback answers, in ms.
	kde := exportScreenSaver(t, addr)
	kde.ms.Store(4321)
	d, err := chain.IdleTime(ctx)
	if err != nil || d != 4321*time.Millisecond || chain.Source() != ScreenSaverSource {
		t.Fatalf("with KDE's service only: %v, %v, from %q", d, err, chain.Source())
	}

	// GNOME too: Mutter is asked first and its figure wins.
	gnome := exportMutter(t, addr)
	gnome.ms.Store(125_000)
	kdeCalls := kde.calls.Load()
	d, err = chain.IdleTime(ctx)
	if err != nil || d != 125*time.Second || chain.Source() != MutterSource {
		t.Fatalf("with both services: %v, %v, from %q", d, err, chain.Source())
	}
	if kde.calls.Load() != kdeCalls {
		t.Fatal("KDE's service was asked although GNOME's answered")
	}

	// GNOME's goes away again: back to KDE's, on the same connection.
	gnome.conn.Close()
	waitGone(ctx, t, addr, "org.gnome.Mutter.IdleMonitor")
	kde.ms.Store(7)
	d, err = chain.IdleTime(ctx)
	if err != nil || d != 7*time.Millisecond || chain.Source() != ScreenSaverSource {
		t.Fatalf("after GNOME's service left: %v, %v, from %q", d, err, chain.Source())
	}
}

// waitGone waits until name has no owner on the bus.
func waitGone(ctx context.Context, t *testing.T, addr, name string) {
	t.Helper()
	conn, err := dbus.Connect(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		var has bool
		if err := conn.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.NameHasOwner", 0, name).Store(&has); err != nil {
			t.Fatal(err)
		}
		if !has {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s stayed on the bus", name)
		case <-tick.C:
		}
	}
}

// TestDBusWithXAndNothing: an X11 session with no display and no idle
// service says both.
func TestDBusWithXAndNothing(t *testing.T) {
	addr, _ := privateBus(t, "")
	t.Setenv("DISPLAY", "")
	chain := New(Options{SessionType: "x11", BusAddress: addr})
	defer chain.Close()
	_, err := chain.IdleTime(context.Background())
	if !errors.Is(err, controls.ErrUnknown) || err.Error() != "no X display and no GNOME or KDE idle service on the session bus" {
		t.Fatalf("%v", err)
	}
	t.Setenv("DBUS_SESSION_BUS_ADDRESS", "")
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
	none := New(Options{SessionType: "x11"})
	defer none.Close()
	_, err = none.IdleTime(context.Background())
	if !errors.Is(err, controls.ErrUnknown) || err.Error() != "no X display and no D-Bus session bus" {
		t.Fatalf("with no bus: %v", err)
	}
}

// TestDBusBadAnswersAndHangs: a service that answers something other
// than a time is unknown; one that never answers cannot hold the caller
// past its deadline.
func TestDBusBadAnswersAndHangs(t *testing.T) {
	addr, _ := privateBus(t, "")
	exportIdle(t, addr, "org.gnome.Mutter.IdleMonitor", "/org/gnome/Mutter/IdleMonitor/Core",
		"org.gnome.Mutter.IdleMonitor", "GetIdletime",
		func(*idleService) (any, *dbus.Error) { return "soon", nil })
	release := make(chan struct{})
	defer close(release)
	exportIdle(t, addr, "org.freedesktop.ScreenSaver", "/org/freedesktop/ScreenSaver",
		"org.freedesktop.ScreenSaver", "GetSessionIdleTime",
		func(s *idleService) (any, *dbus.Error) {
			if s != nil {
				<-release
			}
			return uint32(0), nil
		})
	bus := NewSessionBus(addr, 0)
	defer bus.Close()
	_, err := bus.Mutter().IdleTime(context.Background())
	if !errors.Is(err, controls.ErrUnknown) || !strings.HasPrefix(err.Error(), "the GNOME idle service answered something other than a time") {
		t.Fatalf("a string for a time: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = NewChain(bus.ScreenSaver()).IdleTime(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || err.Error() != "the KDE idle service did not answer in time: context deadline exceeded" {
		t.Fatalf("a service that never answers: %v", err)
	}
}

// TestDBusReconnectsAfterTheBusRestarts: one connection is kept; when the
// bus goes away the probe says unknown, and when a bus is back at the
// address it answers again.
func TestDBusReconnectsAfterTheBusRestarts(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "bus")
	addr, stop := privateBus(t, sock)
	exportMutter(t, addr).ms.Store(1000)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	bus := NewSessionBus(addr, time.Nanosecond)
	mutter := bus.Mutter()
	defer mutter.Close()
	if d, err := mutter.IdleTime(ctx); err != nil || d != time.Second {
		t.Fatalf("%v, %v", d, err)
	}
	first := bus.conn
	if d, err := mutter.IdleTime(ctx); err != nil || d != time.Second || bus.conn != first {
		t.Fatalf("a second call: %v, %v, same connection %v", d, err, bus.conn == first)
	}
	stop()
	_, err := mutter.IdleTime(ctx)
	if !errors.Is(err, controls.ErrUnknown) {
		t.Fatalf("with the bus gone: %v", err)
	}
	t.Logf("with the bus gone: %v", err)
	privateBus(t, sock)
	exportMutter(t, addr).ms.Store(2000)
	if d, err := mutter.IdleTime(ctx); err != nil || d != 2*time.Second {
		t.Fatalf("after the bus came back: %v, %v", d, err)
	}
	if err := mutter.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := mutter.IdleTime(ctx); !errors.Is(err, controls.ErrUnknown) {
		t.Fatalf("after Close: %v", err)
	}
}

// TestDBusHangsUpOnASilentBus: a "bus" that accepts and never answers
// cannot hold the caller past its deadline, and the probe hangs up.
func TestDBusHangsUpOnASilentBus(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "bus")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	conns := make(chan net.Conn, 1)
	go func() {
		if c, err := l.Accept(); err == nil {
			conns <- c
		}
	}()
	bus := NewSessionBus("unix:path="+sock, 0)
	defer bus.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = bus.Mutter().IdleTime(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "did not answer in time") {
		t.Fatalf("against a bus that never answers: %v", err)
	}
	c := <-conns
	defer c.Close()
	// Whatever the handshake wrote, then the end: read until it (the
	// deadline only turns a probe that never hangs up into a failure).
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, c); err != nil {
		t.Fatalf("the probe did not hang up: %v", err)
	}
}
