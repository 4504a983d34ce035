package presence

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/minisgg/studio-worker/controls"
)

func TestIdleSinceTicksAcrossTheWrap(t *testing.T) {
	for _, c := range []struct {
		now, last uint32
		want      time.Duration
	}{
		{now: 5000, last: 2000, want: 3 * time.Second},
		{now: 7, last: 7, want: 0},
		// GetTickCount wrapped after 49.7 days between the input and now.
		{now: 1500, last: 0xFFFF_FC18, want: 2500 * time.Millisecond},
		{now: 0, last: 0xFFFF_FFFF, want: time.Millisecond},
		// A last input a little after now: none, not 49 days.
		{now: 1000, last: 1001, want: 0},
		{now: 1000, last: 2000, want: 0},
		// Idle longer than 24.8 days (2^31 ms) is still idle: a rig
		// nobody touches for weeks.
		{now: 0xF000_0000, last: 0, want: 0xF000_0000 * time.Millisecond},
		{now: 0xFFFF_0000, last: 0, want: 0xFFFF_0000 * time.Millisecond},
	} {
		if got := idleSinceTicks(c.now, c.last); got != c.want {
			t.Errorf("now %d, last input %d: %v, want %v", c.now, c.last, got, c.want)
		}
	}
}

// ioregOutput is what `ioreg -c IOHIDSystem -r -d 1 -k HIDIdleTime` prints
// on a MacBook (Apple silicon, macOS 14).
const ioregOutput = `+-o IOHIDSystem  <class IOHIDSystem, id 0x1000002f6, registered, matched, active, busy 0 (0 ms), retain 38>
    {
      "HIDIdleTime" = 4523541042
    }

`

// ioregFull is the same entry without -k: the other properties around it.
const ioregFull = `+-o IOHIDSystem  <class IOHIDSystem, id 0x1000002f6, registered, matched, active, busy 0 (0 ms), retain 38>
    {
      "IOClass" = "IOHIDSystem"
      "HIDParameters" = {"HIDClickTime"=500000000,"HIDKeyRepeat"=83333333,"HIDIdleTime"=1}
      "HIDScrollCountMinDeltaToStart" = 30
      "IOProviderClass" = "IOResources"
      "HIDIdleTime" = 61000000000
      "IOUserClientClass" = "IOHIDUserClient"
      "HIDPointerAcceleration" = 45056
    }
+-o IOHIDSystem  <class IOHIDSystem, id 0x1000002f7, registered, matched, active, busy 0 (0 ms), retain 12>
    {
      "HIDIdleTime" = 750000000
    }
`

func TestParseHIDIdleTime(t *testing.T) {
	d, err := parseHIDIdleTime([]byte(ioregOutput))
	if err != nil || d != 4523541042*time.Nanosecond {
		t.Fatalf("%v, %v", d, err)
	}
	// Several HID systems: the most recent input counts; the
	// HIDParameters dictionary's own key is not the property.
	d, err = parseHIDIdleTime([]byte(ioregFull))
	if err != nil || d != 750*time.Millisecond {
		t.Fatalf("%v, %v", d, err)
	}
	for _, bad := range []string{
		"",
		"+-o IOHIDSystem  <class IOHIDSystem>\n    {\n    }\n",
		`      "HIDIdleTime" = soon`,
		`      "HIDIdleTime" = -5`,
		`      "HIDIdleTime" = 99999999999999999999999`,
		`      "HIDIdleTime" = <00a1>`,
	} {
		_, err := parseHIDIdleTime([]byte(bad))
		if !errors.Is(err, controls.ErrUnknown) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// TestIORegRunsTheCommand runs a stand-in ioreg (a shell script printing
// a Mac's output) through the probe's exec path: arguments, output,
// failure.
func TestIORegRunsTheCommand(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("the stand-in ioreg is a shell script")
	}
	dir := t.TempDir()
	args := filepath.Join(dir, "args")
	script := filepath.Join(dir, "ioreg")
	out := filepath.Join(dir, "out")
	if err := os.WriteFile(out, []byte(ioregOutput), 0o644); err != nil {
		t.Fatal(err)
	}
	body := "#!/bin/sh\necho \"$@\" > " + args + "\ncat " + out + "\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	p := &IOReg{Command: script}
	d, err := p.IdleTime(context.Background())
	if err != nil || d != 4523541042*time.Nanosecond {
		t.Fatalf("%v, %v", d, err)
	}
	got, _ := os.ReadFile(args)
	if strings.TrimSpace(string(got)) != "-c IOHIDSystem -r -d 1 -k HIDIdleTime" {
		t.Fatalf("ioreg ran with %q", got)
	}

	failing := "#!/bin/sh\necho 'ioreg: no such class' >&2\nexit 3\n"
	if err := os.WriteFile(script, []byte(failing), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err = p.IdleTime(context.Background())
	if !errors.Is(err, controls.ErrUnknown) || !strings.Contains(err.Error(), "ioreg: no such class") {
		t.Fatalf("a failing ioreg: %v", err)
	}
	_, err = (&IOReg{Command: filepath.Join(dir, "absent")}).IdleTime(context.Background())
	if !errors.Is(err, controls.ErrUnknown) || !strings.HasPrefix(err.Error(), "cannot run ioreg") {
		t.Fatalf("no ioreg: %v", err)
	}
}

func TestJoinReasons(t *testing.T) {
	err := joinReasons([]error{unknownf("no X display"), missingService("GNOME"), missingService("KDE")})
	if !errors.Is(err, controls.ErrUnknown) || err.Error() != "no X display and no GNOME or KDE idle service on the session bus" {
		t.Fatalf("%v", err)
	}
	err = joinReasons([]error{unknownf("no D-Bus session bus"), unknownf("no D-Bus session bus")})
	if err.Error() != "no D-Bus session bus" {
		t.Fatalf("%v", err)
	}
	err = joinReasons([]error{unknownf("a"), missingService("GNOME"), unknownf("the KDE idle service failed: x")})
	if err.Error() != "a, no GNOME idle service on the session bus and the KDE idle service failed: x" {
		t.Fatalf("%v", err)
	}
}

func TestSessionPick(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		want []string
	}{
		{map[string]string{"DISPLAY": ":0"}, []string{X11Source, MutterSource, ScreenSaverSource}},
		{map[string]string{"XDG_SESSION_TYPE": "x11", "DISPLAY": ":1"}, []string{X11Source, MutterSource, ScreenSaverSource}},
		// Xwayland's display is there, but it only sees X programs' input.
		{map[string]string{"XDG_SESSION_TYPE": "wayland", "DISPLAY": ":0", "WAYLAND_DISPLAY": "wayland-0"}, []string{MutterSource, ScreenSaverSource}},
		{map[string]string{"WAYLAND_DISPLAY": "wayland-0", "DISPLAY": ":0"}, []string{MutterSource, ScreenSaverSource}},
		{map[string]string{}, []string{X11Source, MutterSource, ScreenSaverSource}},
	} {
		for _, k := range []string{"DISPLAY", "XDG_SESSION_TYPE", "WAYLAND_DISPLAY"} {
			t.Setenv(k, c.env[k])
		}
		var names []string
		for _, p := range unixProbes(FromEnvironment()) {
			names = append(names, p.Source())
		}
		if strings.Join(names, "|") != strings.Join(c.want, "|") {
			t.Errorf("%v: %v, want %v", c.env, names, c.want)
		}
	}
}
