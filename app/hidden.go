package app

import (
	"context"
	"log/slog"
	"runtime/debug"
	"sync/atomic"
	"time"

	"fyne.io/fyne/v2"

	"github.com/minisgg/studio-worker/app/ui"
)

// Closed to the tray, the app should cost next to nothing (issue 11: at
// most 0.5 % of one core and 150 MiB RSS after a minute). Three things made
// a hidden window heavy, measured with perf and pprof under Xvfb:
//
//   - The pages redrew on every heartbeat, log line and history change.
//     ui.Main.SetHidden stops that and draws the current state on show.
//   - Fyne's event loop wakes 60 times a second whether or not a window is
//     shown (glfw's runGL ticker: poll events, tick animations, check each
//     canvas). A bare Fyne v2.7.1 app with one hidden window and a tray
//     idled at 1.4–1.7 % of one core here, most of it Go handing the
//     locked main thread back and forth and sysmon waking with it; nothing
//     in Fyne turns the ticker off. So while hidden the loop is parked:
//     a function run on the UI goroutine waits there, and the loop runs
//     a few frames every parkFor to do what was queued meanwhile (a tray
//     click, a tray icon change, a notification) and to read X events.
//   - Memory the Go heap had grown to while the window drew stays with the
//     process until the runtime's scavenger gives it back bit by bit; on
//     hide it is given back at once (debug.FreeOSMemory; about 15 MiB).
//     (The runtime already returns it with MADV_DONTNEED on Linux, its
//     default since Go 1.16, so GODEBUG=madvdontneed=1 changes nothing.)
//   - The pages of code and constants the window had used (llvmpipe's
//     software GL alone is 66 MiB of libLLVM and swrast_dri) stay in the
//     resident set, though clean copies of files; after the heap, they are
//     taken out of it (trimCode, Linux; Windows trims a minimised
//     program's working set itself) and fault back as they are touched.
//
// Together, in `make gui-check GUI_IDLE=60`: 1.8 % of one core and 208 MiB
// before, 0.28 % and 189 MiB with the first three (Dec 1, median of 6),
// and 121 MiB with the trimming too (median of 5 against 190 MiB without
// it in the same hour; 101 MiB after 5 minutes started minimised). What
// stays is the Go heap, C's malloc heap and the code the app runs while
// hidden: see README, Measured figures.
//
// parkFor bounds how late a tray menu click is answered while hidden (the
// menu's callbacks are queued on the UI goroutine by Fyne, where the park
// cannot see them); a click on the icon itself, another launch and the
// app's own show wake the loop at once.
const (
	parkFor = 400 * time.Millisecond
	// settleFor is how long the loop runs freely after the window hides
	// (or the app starts hidden) before the first park, so that what was
	// set going finishes at full speed: the tray's first menu, which Fyne
	// builds from a goroutine of its own at start (a park then left the
	// menu the tray host had read with ids that were gone by the click),
	// and the hide's own redraws.
	settleFor = 2 * time.Second
	// unparkFor lets the loop run two of its 1/60 s frames between
	// parks, so that it reads X events and not only the queued calls.
	unparkFor = 2 * time.Second / 60
)

// hider closes the window to the tray and opens it again, and keeps the
// app light while it is closed. hide and show run on the UI goroutine;
// wake runs anywhere.
type hider struct {
	ctx   context.Context
	w     fyne.Window
	pages interface{ SetHidden(bool) } // *ui.Main
	// park says whether Fyne's loop is parked while hidden (parkHidden:
	// where the tray does not need the UI thread to answer).
	park bool
	// freeMemory gives memory back to the system after hiding; nil: none.
	freeMemory func()
	// parkFor and settleFor are the constants (tests change them).
	parkFor, settleFor time.Duration
	// onPark, when set, is called as each park begins (true) and when
	// parking ends (false) (tests).
	onPark func(parking bool)

	hidden  atomic.Bool
	parking atomic.Bool // the parking goroutine runs
	wakeC   chan struct{}
}

func newHider(ctx context.Context, w fyne.Window, m *ui.Main) *hider {
	return &hider{ctx: ctx, w: w, pages: m, park: parkHidden, freeMemory: debug.FreeOSMemory, parkFor: parkFor, settleFor: settleFor, wakeC: make(chan struct{}, 1)}
}

// hide closes the window to the tray (its close button's action where a
// tray shows the icon). UI goroutine.
func (h *hider) hide() {
	h.w.Hide()
	h.setHidden()
}

// setHidden is hide for a window that is not shown (started minimised).
func (h *hider) setHidden() {
	if h.hidden.Swap(true) {
		return
	}
	h.pages.SetHidden(true)
	if h.freeMemory != nil {
		// After the settling, not in the middle of it (at start, the
		// tray's first menu is being built then).
		time.AfterFunc(h.settleFor, func() {
			if h.hidden.Load() {
				h.freeMemory()
			}
		})
	}
	if h.park && h.parking.CompareAndSwap(false, true) {
		go h.parkWhileHidden()
	}
}

// show opens the window on the current state. UI goroutine.
func (h *hider) show() {
	h.hidden.Store(false)
	h.pages.SetHidden(false)
	h.w.Show()
	h.w.RequestFocus()
}

// releaseMemory gives back, after a hide, the Go heap the window grew to
// (debug.FreeOSMemory) and then the resident pages of the program's and
// the libraries' code (trimCode); it logs at debug level the first time
// trimming fails (a kernel before 5.4) and goes on without it.
func releaseMemory(log *slog.Logger) func() {
	var warned atomic.Bool
	return func() {
		debug.FreeOSMemory()
		if _, err := trimCode(); err != nil && log != nil && !warned.Swap(true) {
			log.Debug("could not give back the code's memory while hidden: "+err.Error(), "op", "tray")
		}
	}
}

// stop ends the parking for good (quit). UI goroutine.
func (h *hider) stop() { h.hidden.Store(false) }

// wake ends a park now, so that what the caller queues next on the UI
// goroutine (fyne.Do) runs at once. Any goroutine.
func (h *hider) wake() {
	select {
	case h.wakeC <- struct{}{}:
	default:
	}
}

// parkWhileHidden parks Fyne's loop on the UI goroutine until the window is
// shown again or the app ends, after settleFor, letting it run unparkFor
// every parkFor.
func (h *hider) parkWhileHidden() {
	for {
		h.parkUntilShown()
		h.parking.Store(false)
		// A hide that came between the last look at hidden and here saw
		// this goroutine still running and started none: carry on for it.
		if !h.hidden.Load() || h.ctx.Err() != nil || !h.parking.CompareAndSwap(false, true) {
			break
		}
	}
	if h.onPark != nil {
		h.onPark(false)
	}
}

func (h *hider) parkUntilShown() {
	if !h.sleep(h.settleFor) {
		return
	}
	for h.hidden.Load() && h.ctx.Err() == nil {
		fyne.DoAndWait(h.parkOnce)
		if !h.sleep(unparkFor) {
			return
		}
	}
}

// sleep waits d; false when the app ends first.
func (h *hider) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-h.ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// parkOnce holds the UI goroutine for up to parkFor. It checks the state
// there, where show runs, so a window shown meanwhile is never parked.
func (h *hider) parkOnce() {
	if !h.hidden.Load() {
		return
	}
	if h.onPark != nil {
		h.onPark(true)
	}
	t := time.NewTimer(h.parkFor)
	defer t.Stop()
	select {
	case <-h.ctx.Done():
	case <-h.wakeC:
	case <-t.C:
	}
}
