//go:build !(linux || freebsd || openbsd || netbsd)

package app

// trayHost: Windows and macOS always have a notification area / menu bar.
func trayHost() (bool, string) { return true, "" }
