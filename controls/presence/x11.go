package presence

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/jezek/xgb"
	"github.com/jezek/xgb/screensaver"
	"github.com/jezek/xgb/xproto"
)

// X11Source is what an X11 probe's Source says.
const X11Source = "X11 screensaver extension"

// screenSaverExtension is the X extension that reports the idle time.
const screenSaverExtension = "MIT-SCREEN-SAVER"

// X11 reads the idle time from an X server's MIT-SCREEN-SAVER extension
// (QueryInfo's ms-since-user-input on the default screen's root window).
// It keeps one connection open and reopens it when it breaks. Safe for
// concurrent use.
type X11 struct {
	display string

	mu   ctxLock
	open opener
	conn *xgb.Conn
	root xproto.Window
	// pending is a dial still under way (see dialLocked); nil when none.
	pending chan x11Conn
	closed  bool
}

// NewX11 reads the idle time of the X display named ("" means $DISPLAY
// as it is when the first call opens the connection). retryAfter is how
// long to wait before dialling again after the display could not be
// opened (0 means DefaultRetryAfter). Nothing is dialled until the first
// IdleTime.
func NewX11(display string, retryAfter time.Duration) *X11 {
	quietXGB()
	return &X11{display: display, mu: newCtxLock(), open: newOpener(retryAfter)}
}

// Source names the X11 screensaver extension.
func (x *X11) Source() string { return X11Source }

// IdleTime returns the time since the last keyboard or mouse input the X
// server saw. Errors: the display is absent or refuses us, or has no
// screensaver extension, or stopped answering (all wrap
// controls.ErrUnknown); ctx's end.
func (x *X11) IdleTime(ctx context.Context) (time.Duration, error) {
	if err := x.mu.lock(ctx); err != nil {
		return 0, fmt.Errorf("the X display %s did not answer in time: %w", x.name(), err)
	}
	defer x.mu.unlock()
	if x.closed {
		return 0, unknownf("the X11 idle probe is closed")
	}
	reopened := false
	for {
		if x.conn == nil {
			if err := x.dialLocked(ctx); err != nil {
				return 0, err
			}
			reopened = true
		}
		conn, root := x.conn, x.root
		reply, err := await(ctx, func() (*screensaver.QueryInfoReply, error) {
			return screensaver.QueryInfo(conn, xproto.Drawable(root)).Reply()
		}, nil)
		if err == nil && reply != nil {
			return time.Duration(reply.MsSinceUserInput) * time.Millisecond, nil
		}
		// A reply that did not come leaves the connection in an unknown
		// state: drop it either way. (xgb cannot force a connection shut:
		// one to a server that stopped answering stays until the server
		// answers or goes away; the next dial waits, so there is one such
		// at most.)
		x.dropLocked()
		if ctxErr := ctx.Err(); ctxErr != nil {
			return 0, fmt.Errorf("the X display %s did not answer in time: %w", x.name(), ctxErr)
		}
		if reopened {
			if err == nil {
				err = errors.New("no reply")
			}
			return 0, unknownf("the X display %s stopped answering: %v", x.name(), err)
		}
		// The connection that worked before broke (the X server was
		// restarted): dial once more now.
	}
}

// Close closes the connection; later calls return an error.
func (x *X11) Close() error {
	x.mu.lockNow()
	defer x.mu.unlock()
	x.closed = true
	x.dropLocked()
	if pending := x.pending; pending != nil {
		x.pending = nil
		go func() {
			if r := <-pending; r.conn != nil {
				r.conn.Close()
			}
		}()
	}
	return nil
}

func (x *X11) name() string {
	if x.display != "" {
		return x.display
	}
	if d := os.Getenv("DISPLAY"); d != "" {
		return d
	}
	return "(none)"
}

// x11Conn is the outcome of one dial.
type x11Conn struct {
	conn *xgb.Conn
	root xproto.Window
	err  error
}

// dialLocked opens the connection and finds the extension. The dial runs
// on a goroutine of its own: when ctx ends first it carries on, and the
// next call takes its outcome instead of dialling again, so a server that
// accepts and then never answers costs one connection, not one a poll.
func (x *X11) dialLocked(ctx context.Context) error {
	if x.pending == nil {
		if err := x.open.held(); err != nil {
			return err
		}
		display := x.display
		if display == "" {
			display = os.Getenv("DISPLAY")
		}
		if display == "" {
			return x.open.failed(unknownf("no X display"))
		}
		pending := make(chan x11Conn, 1)
		x.pending = pending
		go func() { pending <- connectX11(display) }()
	}
	select {
	case r := <-x.pending:
		x.pending = nil
		if r.err != nil {
			return x.open.failed(r.err)
		}
		x.conn, x.root = r.conn, r.root
		x.open.opened()
		return nil
	case <-ctx.Done():
		return fmt.Errorf("the X display %s did not answer in time: %w", x.name(), ctx.Err())
	}
}

// connectX11 dials display, finds the screensaver extension and the
// default screen's root window. It blocks as long as the server makes it.
func connectX11(display string) x11Conn {
	conn, err := xgb.NewConnDisplay(display)
	if err != nil {
		return x11Conn{err: unknownf("cannot open the X display %s: %s", display, strings.TrimPrefix(err.Error(), "cannot connect to "+display+": "))}
	}
	fail := func(err error) x11Conn {
		go conn.Close()
		return x11Conn{err: err}
	}
	ext, err := xproto.QueryExtension(conn, uint16(len(screenSaverExtension)), screenSaverExtension).Reply()
	if err != nil {
		return fail(unknownf("the X display %s stopped answering: %v", display, err))
	}
	if !ext.Present {
		return fail(unknownf("the X display %s has no screensaver extension (%s)", display, screenSaverExtension))
	}
	// What screensaver.Init does, less registering the extension's event
	// constructor in xgb's process-wide maps: that write races with the
	// reading goroutine of a connection being closed, and this probe
	// never selects the extension's events (it defines no errors).
	conn.ExtLock.Lock()
	conn.Extensions[screenSaverExtension] = ext.MajorOpcode
	conn.ExtLock.Unlock()
	setup := xproto.Setup(conn)
	if setup == nil || len(setup.Roots) == 0 {
		return fail(unknownf("the X display %s has no screen", display))
	}
	return x11Conn{conn: conn, root: setup.DefaultScreen(conn).Root}
}

func (x *X11) dropLocked() {
	if x.conn != nil {
		// Close only queues the shutdown; it does not wait for a
		// server that stopped answering.
		go x.conn.Close()
		x.conn = nil
	}
}

var quietOnce sync.Once

// quietXGB sends xgb's own messages ("Could not get authority info", "A
// read error is unrecoverable") to the app's log at debug level instead
// of stderr: the probe's errors already say what matters. xgb.Logger is
// process-wide; nothing else in the app uses xgb.
func quietXGB() {
	quietOnce.Do(func() {
		xgb.Logger = log.New(slogWriter{}, "", 0)
	})
}

type slogWriter struct{}

func (slogWriter) Write(p []byte) (int, error) {
	slog.Default().Debug("xgb: "+strings.TrimSpace(string(p)), "op", "presence")
	return len(p), nil
}
