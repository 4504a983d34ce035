//go:build !(linux || freebsd || openbsd || netbsd)

package app

import "context"

// parkHidden: the Windows notification area and the macOS menu bar are
// served by the UI thread's event loop, which must keep running for the
// tray to answer; it has not been tried parked there (see hider).
const parkHidden = false

// trayHost: Windows and macOS always have a notification area / menu bar.
func trayHost() (bool, string) { return true, "" }

// watchTrayHost: the notification area / menu bar never goes away there.
func watchTrayHost(context.Context, func(bool)) (bus, present bool, why string) {
	return true, true, ""
}

// ensureTrayItemRegistered: nothing to do where the tray never goes away.
func ensureTrayItemRegistered(context.Context) error { return nil }
