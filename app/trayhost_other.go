//go:build !(linux || freebsd || openbsd || netbsd)

package app

import "context"

// trayHost: Windows and macOS always have a notification area / menu bar.
func trayHost() (bool, string) { return true, "" }

// watchTrayHost: the notification area / menu bar never goes away there.
func watchTrayHost(context.Context, func(bool)) (bus, present bool, why string) {
	return true, true, ""
}

// ensureTrayItemRegistered: nothing to do where the tray never goes away.
func ensureTrayItemRegistered(context.Context) error { return nil }
