//go:build linux || freebsd || openbsd || netbsd

package settings

import (
	"os"
	"path/filepath"
)

// sessionBusUsable reports whether a D-Bus session bus is already running,
// so the keychain (the Secret Service on that bus) may be asked without
// starting one: DBUS_SESSION_BUS_ADDRESS names it, or $XDG_RUNTIME_DIR/bus
// is its socket. Otherwise the keychain library's D-Bus client would run
// `dbus-launch`, which leaves a dbus-daemon behind on every start.
func sessionBusUsable() (bool, string) {
	if a := os.Getenv("DBUS_SESSION_BUS_ADDRESS"); a != "" && a != "autolaunch:" {
		return true, ""
	}
	if rt := os.Getenv("XDG_RUNTIME_DIR"); rt != "" {
		if fi, err := os.Stat(filepath.Join(rt, "bus")); err == nil && fi.Mode()&os.ModeSocket != 0 {
			return true, ""
		}
	}
	return false, "there is no D-Bus session bus, and none is started for it"
}
