//go:build !(linux || freebsd || openbsd || netbsd)

package settings

// sessionBusUsable: Windows and macOS keychains need no session bus.
func sessionBusUsable() (bool, string) { return true, "" }
