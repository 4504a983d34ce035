//go:build linux || freebsd || openbsd || netbsd

package presence

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/minisgg/studio-worker/controls"
	"github.com/minisgg/studio-worker/internal/xvfbtest"
)

// xvfb starts an X server of the test's own and returns its display
// (":N"). With display "" Xvfb picks a free number; given one, it takes
// that (to restart a server on the same display). -displayfd writes the
// number once the server listens: that line is the signal that it is
// ready.
func xvfb(t *testing.T, display string, extra ...string) (string, func()) {
	t.Helper()
	got, stop, err := startXvfb(t, display, extra...)
	if err != nil {
		t.Fatal(err)
	}
	return got, stop
}

func startXvfb(t *testing.T, display string, extra ...string) (string, func(), error) {
	t.Helper()
	return xvfbtest.Start(t, display, extra...)
}

func xdotool(t *testing.T, display string, args ...string) {
	t.Helper()
	bin, err := exec.LookPath("xdotool")
	if err != nil {
		t.Skip("needs xdotool (apt-get install xdotool): " + err.Error())
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "DISPLAY="+display)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("xdotool %v: %v: %s", args, err, out)
	}
}

// waitIdleAbove polls the probe until the idle time passes min, under
// ctx's deadline, and returns the last figure.
func waitIdleAbove(ctx context.Context, t *testing.T, p controls.IdleProbe, min time.Duration) time.Duration {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		d, err := p.IdleTime(ctx)
		if err != nil {
			t.Fatalf("idle time: %v", err)
		}
		if d > min {
			return d
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the idle time stayed at %v, never above %v", d, min)
		case <-tick.C:
		}
	}
}

// TestX11IdleTimeGrowsAndDropsOnInput is issue 12 item 1's X11 test: a
// real X server, real input through XTEST (xdotool).
func TestX11IdleTimeGrowsAndDropsOnInput(t *testing.T) {
	display, _ := xvfb(t, "")
	xdotool(t, display, "mousemove", "1", "1") // skips here when absent
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	p := NewX11(display, 0)
	defer p.Close()
	if p.Source() != X11Source {
		t.Fatalf("source %q", p.Source())
	}
	first, err := p.IdleTime(ctx)
	if err != nil {
		t.Fatalf("idle time: %v", err)
	}
	grown := waitIdleAbove(ctx, t, p, first+150*time.Millisecond)

	xdotool(t, display, "mousemove", "40", "30")
	afterMove, err := p.IdleTime(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if afterMove >= grown {
		t.Fatalf("after a mouse move the idle time is %v, not below the %v before it", afterMove, grown)
	}

	grown = waitIdleAbove(ctx, t, p, afterMove+150*time.Millisecond)
	xdotool(t, display, "key", "shift")
	afterKey, err := p.IdleTime(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if afterKey >= grown {
		t.Fatalf("after a key press the idle time is %v, not below the %v before it", afterKey, grown)
	}
	t.Logf("idle %v, grew to %v, %v after the mouse moved, %v after a key", first, grown, afterMove, afterKey)
}

// TestX11ReconnectsAfterTheServerRestarts: the probe keeps one connection;
// when the X server goes away it says unknown, and when a server is back
// on that display it answers again without being made anew.
func TestX11ReconnectsAfterTheServerRestarts(t *testing.T) {
	// A display number far above those -displayfd hands out (the lowest
	// free one): while this server is down, another test's Xvfb (make
	// test runs packages side by side) must not take the number.
	display, stop := xvfb(t, freeHighDisplay(t))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p := NewX11(display, time.Nanosecond)
	defer p.Close()
	if _, err := p.IdleTime(ctx); err != nil {
		t.Fatal(err)
	}
	stop()
	_, err := p.IdleTime(ctx)
	if !errors.Is(err, controls.ErrUnknown) || !strings.Contains(err.Error(), display) {
		t.Fatalf("with the X server gone: %v", err)
	}
	t.Logf("with the X server gone: %v", err)
	if _, _, err := startXvfb(t, display); err != nil {
		// Another X server took the number in between: the probe must
		// reach that one just the same.
		t.Logf("restarting Xvfb on %s: %v", display, err)
	}
	if _, err := p.IdleTime(ctx); err != nil {
		t.Fatalf("after the X server came back: %v", err)
	}
}

// TestX11WithoutTheExtension: an X server without MIT-SCREEN-SAVER is
// unknown, and says so.
func TestX11WithoutTheExtension(t *testing.T) {
	display, _ := xvfb(t, "", "-extension", "MIT-SCREEN-SAVER")
	p := NewX11(display, 0)
	defer p.Close()
	_, err := p.IdleTime(context.Background())
	if !errors.Is(err, controls.ErrUnknown) || err.Error() != "the X display "+display+" has no screensaver extension (MIT-SCREEN-SAVER)" {
		t.Fatalf("without the extension: %v", err)
	}
}

// hungServer listens where display name dir+"/x:0" points xgb and
// accepts connections that it never answers; it counts them.
func hungServer(t *testing.T) (display string, accepted chan struct{}) {
	t.Helper()
	display = t.TempDir() + "/x:0"
	l, err := net.Listen("unix", display)
	if err != nil {
		t.Fatal(err)
	}
	accepted = make(chan struct{}, 16)
	var held []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				for _, c := range held {
					c.Close()
				}
				return
			}
			held = append(held, c)
			accepted <- struct{}{}
		}
	}()
	t.Cleanup(func() { l.Close(); <-done })
	return display, accepted
}

// TestX11WaitsNoLongerThanTheContext: a server that accepts the
// connection and never answers cannot hold the caller past its deadline,
// and the next poll waits on the same dial rather than dialling again.
func TestX11WaitsNoLongerThanTheContext(t *testing.T) {
	display, accepted := hungServer(t)
	p := NewX11(display, 0)
	defer p.Close()
	for round := range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		_, err := p.IdleTime(ctx)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "did not answer in time") {
			t.Fatalf("poll %d against a server that never answers: %v", round+1, err)
		}
	}
	select {
	case <-accepted:
	default:
		t.Fatal("the probe never dialled the server")
	}
	select {
	case <-accepted:
		t.Fatal("the probe dialled again while its first dial was under way")
	default:
	}
}

// TestX11CallerNotHeldByAnother: while one caller waits on a server that
// never answers, another with a shorter deadline gets its answer (the
// deadline) on time, not after the first caller gives up.
func TestX11CallerNotHeldByAnother(t *testing.T) {
	display, accepted := hungServer(t)
	p := NewX11(display, 0)
	defer p.Close()
	long, cancelLong := context.WithTimeout(context.Background(), time.Minute)
	defer cancelLong()
	first := make(chan error, 1)
	go func() { _, err := p.IdleTime(long); first <- err }()
	<-accepted // the first caller is in, waiting on the server
	short, cancelShort := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancelShort()
	second := make(chan error, 1)
	go func() { _, err := p.IdleTime(short); second <- err }()
	select {
	case err := <-second:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("the second caller: %v", err)
		}
	case err := <-first:
		t.Fatalf("the first caller, waiting a minute, came back first: %v", err)
	}
	cancelLong()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("the first caller after its cancel: %v", err)
	}
}

// TestX11AbsentDisplay: no display, or one nobody serves, is unknown with
// a reason; the probe does not dial again before RetryAfter.
func TestX11AbsentDisplay(t *testing.T) {
	t.Setenv("DISPLAY", "")
	ctx := context.Background()
	_, err := NewX11("", 0).IdleTime(ctx)
	if !errors.Is(err, controls.ErrUnknown) || err.Error() != "no X display" {
		t.Fatalf("with no display: %v", err)
	}

	display := t.TempDir() + "/x:0"
	p := NewX11(display, time.Hour)
	defer p.Close()
	now := time.Now()
	p.open.now = func() time.Time { return now }
	_, absentErr := p.IdleTime(ctx)
	if !errors.Is(absentErr, controls.ErrUnknown) || !strings.Contains(absentErr.Error(), "cannot open the X display "+display) {
		t.Fatalf("with nobody serving the display: %v", absentErr)
	}
	t.Logf("with nobody serving the display: %v", absentErr)

	// A server appears, but the probe waits out RetryAfter before it
	// dials again: the next poll gets the same reason at once.
	l, err := net.Listen("unix", display)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan struct{}, 4)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- struct{}{}
			c.Close() // and hang up: not an X server
		}
	}()
	_, again := p.IdleTime(ctx)
	if again == nil || again.Error() != absentErr.Error() {
		t.Fatalf("within RetryAfter: %v, want the same reason as before", again)
	}
	select {
	case <-accepted:
		t.Fatal("the probe dialled again within RetryAfter")
	default:
	}
	now = now.Add(time.Hour + time.Second)
	_, err = p.IdleTime(ctx)
	if !errors.Is(err, controls.ErrUnknown) {
		t.Fatalf("against something that hangs up: %v", err)
	}
	t.Logf("against something that hangs up: %v", err)
	<-accepted
}

// TestX11ConcurrentCalls: callers on several goroutines share the one
// connection (run with -race).
func TestX11ConcurrentCalls(t *testing.T) {
	display, _ := xvfb(t, "")
	chain := New(Options{SessionType: "x11", Display: display, BusAddress: "unix:path=" + t.TempDir() + "/none"})
	defer chain.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			var err error
			for range 10 {
				if _, err = chain.IdleTime(ctx); err != nil {
					break
				}
			}
			errs <- err
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if chain.Source() != X11Source {
		t.Fatalf("source %q", chain.Source())
	}
}

// freeHighDisplay returns ":N" for an N in 30000–49999 with no X lock file.
func freeHighDisplay(t *testing.T) string {
	t.Helper()
	for i := 0; i < 20000; i++ {
		n := 30000 + (os.Getpid()+i)%20000
		if _, err := os.Stat(fmt.Sprintf("/tmp/.X%d-lock", n)); errors.Is(err, os.ErrNotExist) {
			return fmt.Sprintf(":%d", n)
		}
	}
	t.Fatal("no free X display number between 30000 and 49999")
	return ""
}
