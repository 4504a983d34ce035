package studio

import (
	"context"
	"slices"
	"sync"
	"time"
)

// FakeClock is a Clock for tests: time moves only when Advance is called,
// and timers and tickers fire in deadline order as it passes them. It lives
// outside _test.go files so the tests of other packages (the dev studio,
// the app) can drive the session and the worker with it too.
//
// The usual pattern: start the code under test, wait with BlockUntilContext
// until it has created the timers it waits on, then Advance.
type FakeClock struct {
	mu      sync.Mutex
	now     time.Time
	seq     uint64
	waiters map[*fakeWaiter]struct{}
	changed chan struct{} // closed and replaced whenever waiters change
}

// NewFakeClock returns a fake clock reading start.
func NewFakeClock(start time.Time) *FakeClock {
	return &FakeClock{now: start, waiters: map[*fakeWaiter]struct{}{}, changed: make(chan struct{})}
}

type fakeWaiter struct {
	clock  *FakeClock
	c      chan time.Time
	when   time.Time
	period time.Duration // 0 for a timer
	seq    uint64        // creation order breaks deadline ties
}

// Now returns the fake time.
func (f *FakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// NewTimer returns a timer that fires once Advance passes now+d.
func (f *FakeClock) NewTimer(d time.Duration) Timer {
	f.mu.Lock()
	defer f.mu.Unlock()
	w := &fakeWaiter{clock: f, c: make(chan time.Time, 1), when: f.now.Add(d)}
	f.add(w)
	return fakeTimer{w}
}

// NewTicker returns a ticker that fires every d of fake time. Like
// time.NewTicker it panics when d <= 0.
func (f *FakeClock) NewTicker(d time.Duration) Ticker {
	if d <= 0 {
		panic("studio: non-positive interval for FakeClock.NewTicker")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	w := &fakeWaiter{clock: f, c: make(chan time.Time, 1), when: f.now.Add(d), period: d}
	f.add(w)
	return fakeTicker{w}
}

// Advance moves time forward by d, firing every timer and tick whose
// deadline it passes, in order. A tick whose channel is still full is
// dropped, as with time.Ticker.
func (f *FakeClock) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	target := f.now.Add(d)
	for {
		var next *fakeWaiter
		for w := range f.waiters {
			if w.when.After(target) {
				continue
			}
			if next == nil || w.when.Before(next.when) || (w.when.Equal(next.when) && w.seq < next.seq) {
				next = w
			}
		}
		if next == nil {
			break
		}
		if next.when.After(f.now) {
			f.now = next.when
		}
		select {
		case next.c <- f.now:
		default:
		}
		if next.period > 0 {
			next.when = next.when.Add(next.period)
		} else {
			f.remove(next)
		}
	}
	if target.After(f.now) {
		f.now = target
	}
}

// Waiters is the number of timers and tickers currently armed.
func (f *FakeClock) Waiters() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.waiters)
}

// Pending is the time left on each armed timer and ticker, soonest first.
// Right after the code under test arms a timer, that is the duration it
// asked for, which lets a test check it.
func (f *FakeClock) Pending() []time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]time.Duration, 0, len(f.waiters))
	for w := range f.waiters {
		out = append(out, w.when.Sub(f.now))
	}
	slices.Sort(out)
	return out
}

// BlockUntilContext waits until at least n timers or tickers are armed, or
// ctx ends.
func (f *FakeClock) BlockUntilContext(ctx context.Context, n int) error {
	for {
		f.mu.Lock()
		ok, ch := len(f.waiters) >= n, f.changed
		f.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (f *FakeClock) add(w *fakeWaiter) {
	f.seq++
	w.seq = f.seq
	f.waiters[w] = struct{}{}
	f.notify()
}

func (f *FakeClock) remove(w *fakeWaiter) bool {
	if _, ok := f.waiters[w]; !ok {
		return false
	}
	delete(f.waiters, w)
	f.notify()
	return true
}

func (f *FakeClock) notify() {
	close(f.changed)
	f.changed = make(chan struct{})
}

func (w *fakeWaiter) drain() {
	select {
	case <-w.c:
	default:
	}
}

type fakeTimer struct{ w *fakeWaiter }

func (t fakeTimer) C() <-chan time.Time { return t.w.c }

func (t fakeTimer) Stop() bool {
	f := t.w.clock
	f.mu.Lock()
	defer f.mu.Unlock()
	t.w.drain()
	return f.remove(t.w)
}

func (t fakeTimer) Reset(d time.Duration) bool {
	f := t.w.clock
	f.mu.Lock()
	defer f.mu.Unlock()
	t.w.drain()
	_, active := f.waiters[t.w]
	delete(f.waiters, t.w)
	t.w.when = f.now.Add(d)
	f.add(t.w)
	return active
}

type fakeTicker struct{ w *fakeWaiter }

func (t fakeTicker) C() <-chan time.Time { return t.w.c }

func (t fakeTicker) Stop() {
	f := t.w.clock
	f.mu.Lock()
	defer f.mu.Unlock()
	t.w.drain()
	f.remove(t.w)
}
