package presence

import (
	"os"
	"time"

	"github.com/minisgg/studio-worker/controls"
)

// Options says where the sources are. The zero value reads the
// environment when the first call is made.
type Options struct {
	// Display is the X display (":0"); "" means $DISPLAY.
	Display string
	// BusAddress is the D-Bus session bus ("unix:path=/run/user/1000/bus");
	// "" means $DBUS_SESSION_BUS_ADDRESS, else $XDG_RUNTIME_DIR/bus.
	BusAddress string
	// SessionType is "wayland", "x11" or another XDG_SESSION_TYPE; a
	// Wayland session does not ask X11, whose Xwayland server only sees
	// input to X programs and would say "away" while the person types in
	// a Wayland window.
	SessionType string
	// RetryAfter is how long a source that could not be opened waits
	// before dialling again; 0 means DefaultRetryAfter.
	RetryAfter time.Duration
}

// FromEnvironment reads the session's type and X display: XDG_SESSION_TYPE,
// else "wayland" when WAYLAND_DISPLAY is set, else "x11" when DISPLAY is.
func FromEnvironment() Options {
	o := Options{Display: os.Getenv("DISPLAY"), SessionType: os.Getenv("XDG_SESSION_TYPE")}
	if o.SessionType == "" {
		switch {
		case os.Getenv("WAYLAND_DISPLAY") != "":
			o.SessionType = "wayland"
		case o.Display != "":
			o.SessionType = "x11"
		}
	}
	return o
}

// Auto is the chain for this OS and session (see New and
// FromEnvironment). Close it when done.
func Auto() *Chain { return New(FromEnvironment()) }

// New is the chain for this OS with o's session: on Windows
// GetLastInputInfo; on macOS ioreg's HIDIdleTime; elsewhere X11 (unless
// the session is Wayland or no display is named), then GNOME's Mutter
// IdleMonitor, then the freedesktop ScreenSaver (KDE), over one session
// bus connection.
func New(o Options) *Chain {
	probes := platformProbes(o)
	list := make([]controls.IdleProbe, len(probes))
	for i, p := range probes {
		list[i] = p
	}
	return NewChain(list...)
}

// unixProbes is the X11 and D-Bus chain of Linux and the BSDs.
func unixProbes(o Options) []Probe {
	var probes []Probe
	if o.SessionType != "wayland" {
		// With no display named this costs nothing (no dial) and names
		// the X display's absence in the reason.
		probes = append(probes, NewX11(o.Display, o.RetryAfter))
	}
	bus := NewSessionBus(o.BusAddress, o.RetryAfter)
	return append(probes, bus.Mutter(), bus.ScreenSaver())
}
