package presence

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/godbus/dbus/v5"
)

// Sources of the D-Bus probes.
const (
	MutterSource      = "GNOME Mutter IdleMonitor"
	ScreenSaverSource = "freedesktop ScreenSaver (KDE)"
)

// SessionBus is one connection to the D-Bus session bus that the GNOME and
// KDE probes share. It is opened on the first call and reopened after it
// breaks. Safe for concurrent use.
type SessionBus struct {
	address string

	mu     ctxLock
	open   opener
	conn   *dbus.Conn
	closed bool
}

// NewSessionBus talks to the bus at address ("" means
// $DBUS_SESSION_BUS_ADDRESS, else $XDG_RUNTIME_DIR/bus, as they are at
// the first call; it never starts a bus). retryAfter is how long to wait
// before dialling again after the bus could not be reached (0 means
// DefaultRetryAfter).
func NewSessionBus(address string, retryAfter time.Duration) *SessionBus {
	return &SessionBus{address: address, mu: newCtxLock(), open: newOpener(retryAfter)}
}

// Mutter is GNOME's idle monitor on this bus:
// org.gnome.Mutter.IdleMonitor.GetIdletime on
// /org/gnome/Mutter/IdleMonitor/Core, which answers in milliseconds (t).
func (b *SessionBus) Mutter() Probe {
	return &busProbe{bus: b, source: MutterSource, desktop: "GNOME",
		dest: "org.gnome.Mutter.IdleMonitor", path: "/org/gnome/Mutter/IdleMonitor/Core",
		method: "org.gnome.Mutter.IdleMonitor.GetIdletime",
		decode: func(call *dbus.Call) (time.Duration, error) {
			var ms uint64
			err := call.Store(&ms)
			return time.Duration(ms) * time.Millisecond, err
		}}
}

// ScreenSaver is the freedesktop ScreenSaver service KDE Plasma runs:
// org.freedesktop.ScreenSaver.GetSessionIdleTime on /org/freedesktop/ScreenSaver.
// KDE answers in milliseconds (u), its KIdleTime figure, as the Rust
// worker reads it, although the never-finished freedesktop draft said
// seconds.
func (b *SessionBus) ScreenSaver() Probe {
	return &busProbe{bus: b, source: ScreenSaverSource, desktop: "KDE",
		dest: "org.freedesktop.ScreenSaver", path: "/org/freedesktop/ScreenSaver",
		method: "org.freedesktop.ScreenSaver.GetSessionIdleTime",
		decode: func(call *dbus.Call) (time.Duration, error) {
			var ms uint32
			err := call.Store(&ms)
			return time.Duration(ms) * time.Millisecond, err
		}}
}

// Close closes the connection; the probes return an error after it.
func (b *SessionBus) Close() error {
	b.mu.lockNow()
	defer b.mu.unlock()
	b.closed = true
	b.dropLocked()
	return nil
}

// sessionBusAddress is the running session bus, if any; it never starts
// one.
func sessionBusAddress() string {
	if addr := os.Getenv("DBUS_SESSION_BUS_ADDRESS"); addr != "" {
		return addr
	}
	if rt := os.Getenv("XDG_RUNTIME_DIR"); rt != "" {
		if _, err := os.Stat(filepath.Join(rt, "bus")); err == nil {
			return "unix:path=" + filepath.Join(rt, "bus")
		}
	}
	return ""
}

// connLocked returns the open connection, dialling it if need be.
func (b *SessionBus) connLocked(ctx context.Context) (*dbus.Conn, error) {
	if b.closed {
		return nil, unknownf("the D-Bus idle probes are closed")
	}
	if b.conn != nil && b.conn.Connected() {
		return b.conn, nil
	}
	b.dropLocked()
	if err := b.open.held(); err != nil {
		return nil, err
	}
	addr := b.address
	if addr == "" {
		addr = sessionBusAddress()
	}
	if addr == "" {
		return nil, b.open.failed(unknownf("no D-Bus session bus"))
	}
	// What dbus.Connect does, in steps, so that a bus that accepts and
	// never answers is hung up on when ctx ends (Close ends the
	// handshake's read), not left waiting.
	conn, err := dbus.Dial(addr)
	if err != nil {
		return nil, b.open.failed(unknownf("the D-Bus session bus did not answer: %v", err))
	}
	_, err = await(ctx, func() (struct{}, error) {
		if err := conn.Auth(nil); err != nil {
			return struct{}{}, err
		}
		return struct{}{}, conn.Hello()
	}, nil)
	if err != nil {
		_ = conn.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("the D-Bus session bus did not answer in time: %w", ctx.Err())
		}
		return nil, b.open.failed(unknownf("the D-Bus session bus did not answer: %v", err))
	}
	b.conn = conn
	b.open.opened()
	return conn, nil
}

func (b *SessionBus) dropLocked() {
	if b.conn != nil {
		_ = b.conn.Close()
		b.conn = nil
	}
}

// busProbe calls one idle-time method on the session bus.
type busProbe struct {
	bus                *SessionBus
	source, desktop    string
	dest, path, method string
	decode             func(*dbus.Call) (time.Duration, error)
}

func (p *busProbe) Source() string { return p.source }

// Close closes the shared bus connection.
func (p *busProbe) Close() error { return p.bus.Close() }

// IdleTime calls the service. Errors: no session bus, the service is not
// on it (its name has no owner, or it lacks the object or method), it
// answered something other than a time, the bus broke (all wrap
// controls.ErrUnknown); ctx's end.
func (p *busProbe) IdleTime(ctx context.Context) (time.Duration, error) {
	b := p.bus
	if err := b.mu.lock(ctx); err != nil {
		return 0, fmt.Errorf("the %s idle service did not answer in time: %w", p.desktop, err)
	}
	defer b.mu.unlock()
	for attempt := 0; ; attempt++ {
		conn, err := b.connLocked(ctx)
		if err != nil {
			return 0, err
		}
		call := conn.Object(p.dest, dbus.ObjectPath(p.path)).CallWithContext(ctx, p.method, dbus.FlagNoAutoStart)
		if call.Err == nil {
			d, err := p.decode(call)
			if err != nil {
				return 0, unknownf("the %s idle service answered something other than a time: %v", p.desktop, err)
			}
			return d, nil
		}
		if ctx.Err() != nil {
			return 0, fmt.Errorf("the %s idle service did not answer in time: %w", p.desktop, ctx.Err())
		}
		if absent(call.Err) {
			return 0, missingService(p.desktop)
		}
		if conn.Connected() || attempt > 0 {
			return 0, unknownf("the %s idle service failed: %v", p.desktop, call.Err)
		}
		// The bus connection broke (the bus restarted): dial once more.
		b.dropLocked()
	}
}

// absent says whether a call failed because the service is not there.
func absent(err error) bool {
	var de dbus.Error
	if !errors.As(err, &de) {
		var dp *dbus.Error
		if !errors.As(err, &dp) {
			return false
		}
		de = *dp
	}
	switch de.Name {
	case "org.freedesktop.DBus.Error.ServiceUnknown",
		"org.freedesktop.DBus.Error.NameHasNoOwner",
		"org.freedesktop.DBus.Error.UnknownObject",
		"org.freedesktop.DBus.Error.UnknownInterface",
		"org.freedesktop.DBus.Error.UnknownMethod":
		return true
	}
	return false
}
