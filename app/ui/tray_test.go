package ui

import (
	"context"
	"slices"
	"testing"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/test"

	"github.com/minisgg/studio-worker/assets"
	"github.com/minisgg/studio-worker/studio"
)

type fakeTrayHost struct {
	menus []*fyne.Menu
	icons []fyne.Resource
}

func (h *fakeTrayHost) SetSystemTrayMenu(m *fyne.Menu)    { h.menus = append(h.menus, m) }
func (h *fakeTrayHost) SetSystemTrayIcon(r fyne.Resource) { h.icons = append(h.icons, r) }

func TestTrayFollowsStateAndPauses(t *testing.T) {
	test.NewTempApp(t)
	b := &fakeBackend{snap: idleSnap()}
	host := &fakeTrayHost{}
	var tips []string
	opened, quit := 0, 0
	tr := NewTray(host, b, func() { opened++ }, func() { quit++ }, func(s string) { tips = append(tips, s) })
	if len(host.menus) != 1 || len(host.icons) != 1 || host.icons[0] != TrayResource(assets.TrayIdle) {
		t.Fatalf("menus %d icons %v", len(host.menus), host.icons)
	}
	labels := func() []string {
		var out []string
		for _, it := range tr.Menu().Items {
			if !it.IsSeparator {
				out = append(out, it.Label)
			}
		}
		return out
	}
	if got := labels(); !slices.Equal(got, []string{TrayOpen, "Pause now", TrayFinishJob, ActionSnooze, TrayQuit}) {
		t.Fatalf("menu %q", got)
	}
	if !tr.quit.IsQuit {
		t.Error("Quit must be the menu's quit item, or Fyne adds a second one")
	}

	tr.pause.Action()
	tr.open.Action()
	paused := idleSnap()
	paused.Paused, paused.State, paused.IdleReason = true, studio.StatePaused, "paused"
	b.snap = paused
	tr.Render(paused)
	if tr.pause.Label != "Resume" || !tr.finish.Disabled {
		t.Errorf("paused: label %q finish disabled %v", tr.pause.Label, tr.finish.Disabled)
	}
	if host.icons[len(host.icons)-1] != TrayResource(assets.TrayPaused) {
		t.Error("paused icon not set")
	}
	if tips[len(tips)-1] != "Studio Worker: paused" {
		t.Errorf("tooltip %q", tips[len(tips)-1])
	}
	tr.pause.Action()
	tr.quit.Action()
	if got := b.Calls(); !slices.Equal(got, []string{"PauseNow", "Resume"}) {
		t.Errorf("calls %v", got)
	}
	if opened != 1 || quit != 1 {
		t.Errorf("open %d quit %d", opened, quit)
	}
	// The same snapshot again changes nothing on the platform side.
	n := len(host.icons)
	tr.Render(paused)
	if len(host.icons) != n || len(tips) != 2 {
		t.Errorf("an unchanged snapshot re-set the icon or tooltip (%d icons, %d tips)", len(host.icons), len(tips))
	}
}

func TestTrayFollowUsesSubscription(t *testing.T) {
	test.NewTempApp(t)
	b := &fakeBackend{snap: idleSnap()}
	tr := NewTray(&fakeTrayHost{}, b, nil, nil, nil)
	done := make(chan struct{}, 4)
	tr.rendered = func() { done <- struct{}{} }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tr.Follow(ctx)
	<-done
	w := workingSnap(idleSnap().LastHeartbeat)
	b.publish(w)
	for {
		<-done
		if look, _ := tr.Look(); look == assets.TrayWorking {
			break
		}
	}
}
