package studio

import (
	"context"
	"testing"
	"time"
)

var t0 = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

func fired(c <-chan time.Time) (time.Time, bool) {
	select {
	case v := <-c:
		return v, true
	default:
		return time.Time{}, false
	}
}

func TestFakeClockTimer(t *testing.T) {
	f := NewFakeClock(t0)
	tm := f.NewTimer(10 * time.Second)
	if f.Waiters() != 1 {
		t.Fatalf("waiters = %d", f.Waiters())
	}
	f.Advance(9 * time.Second)
	if _, ok := fired(tm.C()); ok {
		t.Fatal("fired early")
	}
	f.Advance(time.Second)
	if v, ok := fired(tm.C()); !ok || !v.Equal(t0.Add(10*time.Second)) {
		t.Fatalf("fired = %v, %v", v, ok)
	}
	if f.Waiters() != 0 || tm.Stop() {
		t.Fatal("a fired timer is still armed")
	}
	if tm.Reset(time.Second) {
		t.Fatal("Reset of a fired timer reported it active")
	}
	if !tm.Stop() {
		t.Fatal("Stop of an armed timer reported it inactive")
	}
	f.Advance(time.Hour)
	if _, ok := fired(tm.C()); ok {
		t.Fatal("a stopped timer fired")
	}
	if !f.Now().Equal(t0.Add(10*time.Second + time.Hour)) {
		t.Fatalf("Now = %v", f.Now())
	}
}

func TestFakeClockResetDrainsStaleValue(t *testing.T) {
	f := NewFakeClock(t0)
	tm := f.NewTimer(time.Second)
	f.Advance(time.Second) // fired, value waiting
	tm.Reset(5 * time.Second)
	if _, ok := fired(tm.C()); ok {
		t.Fatal("stale value after Reset")
	}
	f.Advance(5 * time.Second)
	if _, ok := fired(tm.C()); !ok {
		t.Fatal("reset timer did not fire")
	}
}

func TestFakeClockTickerDropsMissedTicks(t *testing.T) {
	f := NewFakeClock(t0)
	tk := f.NewTicker(5 * time.Second)
	f.Advance(16 * time.Second) // ticks at 5, 10, 15; only one fits the channel
	if v, ok := fired(tk.C()); !ok || !v.Equal(t0.Add(5*time.Second)) {
		t.Fatalf("first tick = %v, %v", v, ok)
	}
	if _, ok := fired(tk.C()); ok {
		t.Fatal("missed ticks were queued")
	}
	f.Advance(4 * time.Second) // next tick at 20
	if v, ok := fired(tk.C()); !ok || !v.Equal(t0.Add(20*time.Second)) {
		t.Fatalf("tick at 20 s = %v, %v", v, ok)
	}
	tk.Stop()
	if f.Waiters() != 0 {
		t.Fatal("stopped ticker still armed")
	}
}

func TestFakeClockOrderAndBlockUntil(t *testing.T) {
	f := NewFakeClock(t0)
	order := make(chan int, 3)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i, d := range []time.Duration{3 * time.Second, time.Second, 2 * time.Second} {
		go func() {
			if err := Sleep(ctx, f, d); err == nil {
				order <- i
			}
		}()
	}
	if err := f.BlockUntilContext(ctx, 3); err != nil {
		t.Fatal(err)
	}
	f.Advance(time.Second)
	if got := <-order; got != 1 {
		t.Fatalf("first to wake: %d", got)
	}
	f.Advance(2 * time.Second)
	a, b := <-order, <-order
	if a+b != 2 {
		t.Fatalf("woke %d and %d", a, b)
	}
	short, c2 := context.WithCancel(ctx)
	c2()
	if err := f.BlockUntilContext(short, 5); err == nil {
		t.Fatal("BlockUntilContext ignored its context")
	}
}

func TestSleepCancelled(t *testing.T) {
	f := NewFakeClock(t0)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Sleep(ctx, f, time.Hour); err != context.Canceled {
		t.Fatalf("Sleep = %v", err)
	}
	if f.Waiters() != 0 {
		t.Fatal("Sleep left its timer armed")
	}
}

func TestRealClock(t *testing.T) {
	tm := RealClock.NewTimer(time.Hour)
	if !tm.Stop() {
		t.Fatal("real timer Stop")
	}
	tk := RealClock.NewTicker(time.Hour)
	tk.Stop()
	if RealClock.Now().IsZero() {
		t.Fatal("zero time")
	}
	if err := Sleep(context.Background(), RealClock, 0); err != nil {
		t.Fatal(err)
	}
}

func TestFakeClockPending(t *testing.T) {
	f := NewFakeClock(t0)
	f.NewTimer(5 * time.Second)
	tk := f.NewTicker(2 * time.Second)
	defer tk.Stop()
	if got := f.Pending(); len(got) != 2 || got[0] != 2*time.Second || got[1] != 5*time.Second {
		t.Fatalf("pending %v, want [2s 5s]", got)
	}
	f.Advance(3 * time.Second)
	// The ticker fired at 2 s and is due again at 4 s; the timer at 5 s.
	if got := f.Pending(); len(got) != 2 || got[0] != time.Second || got[1] != 2*time.Second {
		t.Fatalf("pending after 3 s %v, want [1s 2s]", got)
	}
}
