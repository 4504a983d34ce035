//go:build linux

package stack

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/minisgg/studio-worker/internal/xvfbtest"
	"github.com/minisgg/studio-worker/studio"
	"github.com/minisgg/studio-worker/studio/devstudio"
)

// xvfbDisplay starts an X server of the test's own and returns its
// display; it skips, naming what is missing, without Xvfb.
func xvfbDisplay(t *testing.T) string {
	t.Helper()
	display, _, err := xvfbtest.Start(t, "")
	if err != nil {
		t.Fatal(err)
	}
	return display
}

// The app's own wiring with the real X11 idle time: a worker on an X
// display nobody touches says "idle" in its heartbeat and takes work;
// mouse moves through XTEST (xdotool) make it say "active" and hold.
func TestRealX11PresenceReachesTheStudio(t *testing.T) {
	display := xvfbDisplay(t)
	xdotool, err := exec.LookPath("xdotool")
	if err != nil {
		t.Skip("needs xdotool (apt-get install xdotool): " + err.Error())
	}
	t.Setenv("DISPLAY", display)
	t.Setenv("XDG_SESSION_TYPE", "x11")
	t.Setenv("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent")
	opts := testOptions(t)
	opts.DevStudio = true
	st, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Shutdown(5 * time.Second)
	s := st.Settings.Current()
	s.OnlyWhenIdle, s.IdleAfterSeconds = true, 2
	if _, err := st.Settings.Save(s); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st.Start(ctx)
	heartbeat := func(what string, ok func(studio.Capabilities) bool) {
		t.Helper()
		if _, err := st.Dev.Server.WaitWorker(ctx, func(w devstudio.WorkerStatus) bool {
			return w.Capabilities != nil && ok(*w.Capabilities)
		}); err != nil {
			t.Fatalf("no heartbeat said %s: %v (controls %+v)", what, err, st.Worker.Snapshot().Controls)
		}
	}
	heartbeat("idle", func(c studio.Capabilities) bool { return c.OnlyWhenIdle && c.UserPresence == "idle" && c.AutoEnabled })

	// Someone at the mouse: moves every 300 ms keep the idle time under
	// the 2 s threshold until the heartbeat says so.
	moving, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		for i := 0; moving.Err() == nil; i++ {
			cmd := exec.CommandContext(moving, xdotool, "mousemove", strconv.Itoa(10+i%40), "10")
			cmd.Env = append(os.Environ(), "DISPLAY="+display)
			_ = cmd.Run()
			select {
			case <-moving.Done():
			case <-time.After(300 * time.Millisecond):
			}
		}
	}()
	heartbeat("active", func(c studio.Capabilities) bool { return c.UserPresence == "active" && !c.AutoEnabled })
	if d := st.Worker.Snapshot().Controls; d.MayWork {
		t.Errorf("the worker may work while the person is here: %+v", d)
	}
}
