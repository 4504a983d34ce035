//go:build linux || freebsd || openbsd || netbsd

package app

import (
	"path/filepath"
	"strings"
	"testing"
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
