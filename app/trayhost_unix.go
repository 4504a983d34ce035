//go:build linux || freebsd || openbsd || netbsd

package app

import (
	"context"
	"os"
	"path/filepath"
	"time"

	"github.com/godbus/dbus/v5"
)

// trayHost says whether a StatusNotifier watcher (the tray host of KDE,
// XFCE, GNOME's AppIndicator extension and the like) is on the session bus.
// Without one the tray icon appears nowhere, and a window closed "to the
// tray" would be lost. It uses a private connection and never starts a
// bus: with no session bus address there is no tray.
func trayHost() (bool, string) {
	addr := os.Getenv("DBUS_SESSION_BUS_ADDRESS")
	if addr == "" {
		if rt := os.Getenv("XDG_RUNTIME_DIR"); rt != "" {
			if _, err := os.Stat(filepath.Join(rt, "bus")); err == nil {
				addr = "unix:path=" + filepath.Join(rt, "bus")
			}
		}
	}
	if addr == "" {
		return false, "there is no D-Bus session bus"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	conn, err := dbus.Connect(addr, dbus.WithContext(ctx))
	if err != nil {
		return false, "the D-Bus session bus did not answer: " + err.Error()
	}
	defer conn.Close()
	var has bool
	err = conn.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.NameHasOwner", 0, "org.kde.StatusNotifierWatcher").Store(&has)
	if err != nil {
		return false, "the D-Bus session bus did not answer: " + err.Error()
	}
	if !has {
		return false, "no StatusNotifier tray host is running"
	}
	return true, ""
}
