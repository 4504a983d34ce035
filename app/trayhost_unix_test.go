//go:build linux || freebsd || openbsd || netbsd

package app

import (
	"bufio"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
)

func TestNoSessionBusMeansNoTray(t *testing.T) {
	t.Setenv("DBUS_SESSION_BUS_ADDRESS", "")
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir()) // no bus socket in it
	ok, why := trayHost()
	if ok || !strings.Contains(why, "no D-Bus session bus") {
		t.Errorf("trayHost() = %v, %q", ok, why)
	}
}

func TestDeadSessionBusMeansNoTray(t *testing.T) {
	t.Setenv("DBUS_SESSION_BUS_ADDRESS", "unix:path="+filepath.Join(t.TempDir(), "no-bus-here"))
	ok, why := trayHost()
	if ok || !strings.Contains(why, "did not answer") {
		t.Errorf("trayHost() = %v, %q", ok, why)
	}
}

// privateBus starts a session bus of the test's own and points
// DBUS_SESSION_BUS_ADDRESS at it.
func privateBus(t *testing.T) string {
	t.Helper()
	daemon, err := exec.LookPath("dbus-daemon")
	if err != nil {
		t.Skip("needs dbus-daemon (apt-get install dbus): " + err.Error())
	}
	sock := filepath.Join(t.TempDir(), "bus")
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
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	if _, err := bufio.NewReader(out).ReadString('\n'); err != nil {
		t.Fatalf("the private bus did not come up: %v", err)
	}
	t.Setenv("DBUS_SESSION_BUS_ADDRESS", addr)
	return addr
}

// TestTrayHostThatAppearsLaterIsSeen is issue 10's item 8: with the app
// started before the desktop's tray host, the app decided once that there
// was no tray. watchTrayHost now reports the watcher appearing and going
// away.
func TestTrayHostThatAppearsLaterIsSeen(t *testing.T) {
	addr := privateBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	changes := make(chan bool, 8)
	bus, ok, why := watchTrayHost(ctx, func(present bool) { changes <- present })
	if !bus || ok || !strings.Contains(why, "no StatusNotifier tray host") {
		t.Fatalf("before the watcher: bus %v, tray %v, %q", bus, ok, why)
	}
	host, err := dbus.Connect(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	for round := range 2 {
		if reply, err := host.RequestName(statusNotifierWatcher, dbus.NameFlagDoNotQueue); err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
			t.Fatalf("cannot own the watcher name: %v %v", reply, err)
		}
		select {
		case present := <-changes:
			if !present {
				t.Fatalf("round %d: reported gone when it appeared", round)
			}
		case <-ctx.Done():
			t.Fatalf("round %d: the watcher appearing was not reported", round)
		}
		if ok, _ := trayHost(); !ok {
			t.Fatal("trayHost does not see the watcher")
		}
		if _, err := host.ReleaseName(statusNotifierWatcher); err != nil {
			t.Fatal(err)
		}
		select {
		case present := <-changes:
			if present {
				t.Fatalf("round %d: reported present when it went away", round)
			}
		case <-ctx.Done():
			t.Fatalf("round %d: the watcher going away was not reported", round)
		}
	}
}
