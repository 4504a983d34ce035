//go:build linux || freebsd || openbsd || netbsd

package app

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/godbus/dbus/v5"
)

// parkHidden: the tray is StatusNotifierItem over D-Bus, served by Go
// goroutines, so Fyne's loop can be parked while the window is hidden (see
// hider).
const parkHidden = true

// statusNotifierWatcher is the bus name of the tray host of KDE, XFCE,
// GNOME's AppIndicator extension and the like.
const statusNotifierWatcher = "org.kde.StatusNotifierWatcher"

// sessionBusAddress is the running session bus, if any; it never starts
// one.
func sessionBusAddress() string {
	addr := os.Getenv("DBUS_SESSION_BUS_ADDRESS")
	if addr == "" {
		if rt := os.Getenv("XDG_RUNTIME_DIR"); rt != "" {
			if _, err := os.Stat(filepath.Join(rt, "bus")); err == nil {
				addr = "unix:path=" + filepath.Join(rt, "bus")
			}
		}
	}
	return addr
}

// trayHost says whether a StatusNotifier watcher is on the session bus.
// Without one the tray icon appears nowhere, and a window closed "to the
// tray" would be lost. It uses a private connection and never starts a
// bus: with no session bus address there is no tray.
func trayHost() (bool, string) {
	_, present, why := watchTrayHost(context.Background(), nil)
	return present, why
}

// watchTrayHost says whether a session bus answers (bus) and a
// StatusNotifier watcher is on it now (present) and, when onChange is set, keeps a private connection to the bus
// until ctx ends, calling onChange (on a goroutine of its own) each time a
// watcher appears or goes away (NameOwnerChanged). A desktop's panel that
// starts after the app (autostart winning the race at login) is found this
// way. It never starts a bus: with no session bus address there is no
// tray, now or later.
func watchTrayHost(ctx context.Context, onChange func(present bool)) (bus, present bool, why string) {
	addr := sessionBusAddress()
	if addr == "" {
		return false, false, "there is no D-Bus session bus"
	}
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	conn, err := dbus.Connect(addr, dbus.WithContext(ctx))
	if err != nil {
		return false, false, "the D-Bus session bus did not answer: " + err.Error()
	}
	var signals chan *dbus.Signal
	if onChange != nil {
		// Listen before asking, so a watcher that appears in between is
		// not missed.
		err = conn.AddMatchSignalContext(cctx,
			dbus.WithMatchSender("org.freedesktop.DBus"),
			dbus.WithMatchInterface("org.freedesktop.DBus"),
			dbus.WithMatchMember("NameOwnerChanged"),
			dbus.WithMatchArg(0, statusNotifierWatcher))
		if err != nil {
			conn.Close()
			return false, false, "the D-Bus session bus did not answer: " + err.Error()
		}
		signals = make(chan *dbus.Signal, 16)
		conn.Signal(signals)
	}
	var has bool
	err = conn.BusObject().CallWithContext(cctx, "org.freedesktop.DBus.NameHasOwner", 0, statusNotifierWatcher).Store(&has)
	if err != nil {
		conn.Close()
		return false, false, "the D-Bus session bus did not answer: " + err.Error()
	}
	if onChange == nil {
		conn.Close()
	} else {
		go followTrayHost(ctx, conn, signals, has, onChange)
	}
	if !has {
		return true, false, "no StatusNotifier tray host is running"
	}
	return true, true, ""
}

func followTrayHost(ctx context.Context, conn *dbus.Conn, signals chan *dbus.Signal, present bool, onChange func(bool)) {
	defer conn.Close()
	for {
		select {
		case <-ctx.Done():
			return
		case sig, ok := <-signals:
			if !ok || sig == nil {
				return // the bus went away
			}
			if sig.Name != "org.freedesktop.DBus.NameOwnerChanged" || len(sig.Body) != 3 {
				continue
			}
			if name, _ := sig.Body[0].(string); name != statusNotifierWatcher {
				continue
			}
			owner, _ := sig.Body[2].(string)
			if now := owner != ""; now != present {
				present = now
				onChange(present)
			}
		}
	}
}

// trayItemPath is the object path fyne's systray exports its item at.
const trayItemPath = "/StatusNotifierItem"

// ensureTrayItemRegistered makes sure a watcher that just appeared lists
// this process's tray item. fyne's systray registers the item the moment
// the watcher's name appears on the bus, which can be before the watcher
// has exported its object (status-notifier-watcher answers UnknownObject
// then), and it does not try again: the icon would never show. This asks
// again, on the same shared session connection systray uses, so the
// watcher records the same sender; it gives up after a few seconds or when
// ctx ends. It is only called when a session bus exists, so it never
// starts one.
func ensureTrayItemRegistered(ctx context.Context) error {
	conn, err := dbus.SessionBus()
	if err != nil {
		return err
	}
	names := conn.Names()
	if len(names) == 0 {
		return errors.New("the session bus connection has no name")
	}
	self := names[0]
	watcher := conn.Object(statusNotifierWatcher, "/StatusNotifierWatcher")
	wait := 100 * time.Millisecond
	for range 8 {
		v, err := watcher.GetProperty(statusNotifierWatcher + ".RegisteredStatusNotifierItems")
		if err == nil {
			if items, ok := v.Value().([]string); ok && slices.ContainsFunc(items, func(s string) bool {
				return s == self || strings.HasPrefix(s, self+"/")
			}) {
				return nil
			}
			err = watcher.CallWithContext(ctx, statusNotifierWatcher+".RegisterStatusNotifierItem", 0, trayItemPath).Err
		}
		if err != nil {
			// The watcher is still starting (UnknownObject): give it
			// a moment, longer each time.
			timer := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				timer.Stop()
				return ctx.Err()
			case <-timer.C:
			}
			wait = min(2*wait, 2*time.Second)
		}
	}
	return errors.New("the tray host did not list this app's icon")
}
