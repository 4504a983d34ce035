package app

import (
	"context"
	"testing"
	"time"

	"fyne.io/fyne/v2/test"
)

type fakePages struct{ hidden []bool }

func (p *fakePages) SetHidden(h bool) { p.hidden = append(p.hidden, h) }

// Closing the window to the tray hides it, tells the pages, gives memory
// back once and parks the UI loop again and again until the window is
// shown; showing it ends the parking, and a park that finds the window
// shown returns at once.
func TestHiderParksWhileHiddenUntilShown(t *testing.T) {
	test.NewTempApp(t)
	w := test.NewTempWindow(t, nil)
	w.Show()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pages := &fakePages{}
	h := newHider(ctx, w, nil)
	h.pages, h.park, h.parkFor, h.settleFor = pages, true, time.Hour, 0 // a park ends only when woken
	freed := make(chan struct{}, 2)
	h.freeMemory = func() { freed <- struct{}{} }
	parks := make(chan bool, 4)
	h.onPark = func(p bool) { parks <- p }

	h.hide()
	if !<-parks {
		t.Fatal("parking ended before the first park")
	}
	<-freed
	h.hide() // a second close changes nothing
	h.wake() // the park ends; the loop runs a little; the next park begins
	if !<-parks {
		t.Fatal("parking ended although the window is still hidden")
	}
	h.show()
	h.wake()
	if <-parks {
		t.Fatal("parked again after the window was shown")
	}
	if len(pages.hidden) != 2 || !pages.hidden[0] || pages.hidden[1] {
		t.Errorf("the pages were told hidden=%v, want [true false]", pages.hidden)
	}
	if len(freed) != 0 {
		t.Error("memory was given back twice for one close")
	}
	done := make(chan struct{})
	go func() { h.parkOnce(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a park held a shown window")
	}
}
