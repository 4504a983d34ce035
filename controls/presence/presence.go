// Package presence reads how long ago the person at this computer last
// used the keyboard or mouse, for "only when I'm away" (issue #12 item 1,
// studio-protocol.md §5.4). Each source implements controls.IdleProbe:
//
//   - X11: the MIT-SCREEN-SAVER extension's QueryInfo (ms since the last
//     input), through github.com/jezek/xgb.
//   - Wayland and other sessions with a D-Bus session bus: GNOME's
//     org.gnome.Mutter.IdleMonitor.GetIdletime, then
//     org.freedesktop.ScreenSaver.GetSessionIdleTime (KDE).
//   - Windows: GetLastInputInfo against GetTickCount.
//   - macOS: HIDIdleTime (ns) of IOHIDSystem, read with ioreg.
//
// Auto picks the chain for this OS and session; a Chain tries its sources
// in order and says which one answered (Source). A source that cannot
// tell returns an error wrapping controls.ErrUnknown with a reason in the
// donor's words ("no X display and no GNOME or KDE idle service on the
// session bus"). Sources keep one X connection and one bus connection
// open between calls and reopen them after they break; Close releases
// them. Every call takes a context and returns when it ends.
package presence

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/minisgg/studio-worker/controls"
)

// Probe is an idle-time source that may hold a connection until Close.
type Probe interface {
	controls.IdleProbe
	io.Closer
}

// DefaultRetryAfter is how long a source that could not be opened (no X
// server, no session bus) waits before it tries to open again; calls in
// between return the same reason at once, so a poll every 5 s does not
// dial every time.
const DefaultRetryAfter = 30 * time.Second

// unknownError is a source that cannot tell. It wraps controls.ErrUnknown;
// its text is the reason alone, in the donor's words.
type unknownError struct {
	reason string
	// service names a D-Bus idle service that is not on the bus
	// ("GNOME", "KDE"), so that a chain can say "no GNOME or KDE idle
	// service on the session bus" once; "" otherwise.
	service string
}

func (e *unknownError) Error() string { return e.reason }
func (e *unknownError) Unwrap() error { return controls.ErrUnknown }

func unknownf(format string, args ...any) error {
	return &unknownError{reason: fmt.Sprintf(format, args...)}
}

// missingService is a D-Bus idle service that is not on the session bus.
func missingService(desktop string) error {
	return &unknownError{reason: "no " + desktop + " idle service on the session bus", service: desktop}
}

// Chain tries its sources in order; the first that answers gives the
// figure. It is safe for concurrent use.
type Chain struct {
	probes []controls.IdleProbe

	mu     sync.Mutex
	source string
}

// NewChain tries probes in the order given. Close closes those that are
// io.Closers.
func NewChain(probes ...controls.IdleProbe) *Chain {
	return &Chain{probes: probes}
}

// IdleTime returns the time since the last keyboard or mouse input from
// the first source that answers. When none does, the error wraps
// controls.ErrUnknown and joins the sources' reasons; when ctx ends first,
// it wraps ctx.Err() and names the source that kept it waiting.
func (c *Chain) IdleTime(ctx context.Context) (time.Duration, error) {
	var errs []error
	for _, p := range c.probes {
		d, err := p.IdleTime(ctx)
		if err == nil {
			c.mu.Lock()
			c.source = p.Source()
			c.mu.Unlock()
			return d, nil
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			if !errors.Is(err, ctxErr) {
				err = fmt.Errorf("the %s did not answer in time: %w", p.Source(), ctxErr)
			}
			return 0, err
		}
		errs = append(errs, err)
	}
	c.mu.Lock()
	c.source = ""
	c.mu.Unlock()
	if len(errs) == 0 {
		return 0, &unknownError{reason: "no source of the keyboard and mouse idle time on this system"}
	}
	return 0, joinReasons(errs)
}

// Source names the source that gave the last figure ("X11 screensaver
// extension"); "" before any has answered and after a call that none
// answered.
func (c *Chain) Source() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.source
}

// Sources names the chain's sources in the order they are tried, for logs
// and the Settings page.
func (c *Chain) Sources() []string {
	names := make([]string, len(c.probes))
	for i, p := range c.probes {
		names[i] = p.Source()
	}
	return names
}

// Close releases the sources' connections. The chain must not be used
// after.
func (c *Chain) Close() error {
	var errs []error
	for _, p := range c.probes {
		if cl, ok := p.(io.Closer); ok {
			errs = append(errs, cl.Close())
		}
	}
	return errors.Join(errs...)
}

// joinReasons makes one donor-readable error of the sources' errors:
// repeated reasons once, missing D-Bus services together ("no GNOME or
// KDE idle service on the session bus"), the rest joined with "and".
func joinReasons(errs []error) error {
	var reasons, services []string
	seen := map[string]bool{}
	servicesAt := -1
	for _, err := range errs {
		var ue *unknownError
		if errors.As(err, &ue) && ue.service != "" {
			if servicesAt < 0 {
				servicesAt = len(reasons)
				reasons = append(reasons, "")
			}
			services = append(services, ue.service)
			continue
		}
		if r := err.Error(); !seen[r] {
			seen[r] = true
			reasons = append(reasons, r)
		}
	}
	if servicesAt >= 0 {
		reasons[servicesAt] = "no " + strings.Join(services, " or ") + " idle service on the session bus"
	}
	var text string
	switch n := len(reasons); n {
	case 1:
		text = reasons[0]
	default:
		text = strings.Join(reasons[:n-1], ", ") + " and " + reasons[n-1]
	}
	return &unknownError{reason: text}
}

// await runs f on a goroutine of its own and returns its result, or
// ctx.Err() as soon as ctx ends; a result that comes after that is handed
// to discard (to close a connection nobody will use).
func await[T any](ctx context.Context, f func() (T, error), discard func(T)) (T, error) {
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := f()
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
		go func() {
			if r := <-done; r.err == nil && discard != nil {
				discard(r.v)
			}
		}()
		var zero T
		return zero, ctx.Err()
	}
}

// opener remembers why a source could not be opened, so that it dials
// again only after retryAfter.
type opener struct {
	retryAfter time.Duration
	now        func() time.Time
	lastErr    error
	retryAt    time.Time
}

func newOpener(retryAfter time.Duration) opener {
	if retryAfter <= 0 {
		retryAfter = DefaultRetryAfter
	}
	return opener{retryAfter: retryAfter, now: time.Now}
}

// held returns the last open error while it is too early to dial again.
func (o *opener) held() error {
	if o.lastErr != nil && o.now().Before(o.retryAt) {
		return o.lastErr
	}
	return nil
}

// failed records an open error (not a context's end) and returns it.
func (o *opener) failed(err error) error {
	o.lastErr = err
	o.retryAt = o.now().Add(o.retryAfter)
	return err
}

func (o *opener) opened() { o.lastErr = nil }

// ctxLock is a mutex that a caller stops waiting for when its context
// ends: a call held up by a source that stopped answering holds up the
// next caller no longer than that caller's own deadline.
type ctxLock chan struct{}

func newCtxLock() ctxLock { return make(ctxLock, 1) }

func (l ctxLock) lock(ctx context.Context) error {
	select {
	case l <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// lockNow waits as long as it takes (for Close).
func (l ctxLock) lockNow() { l <- struct{}{} }

func (l ctxLock) unlock() { <-l }
