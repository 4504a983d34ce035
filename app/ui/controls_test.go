package ui

import (
	"strings"
	"testing"
	"time"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/test"
	"fyne.io/fyne/v2/widget"

	"github.com/minisgg/studio-worker/assets"
	"github.com/minisgg/studio-worker/controls"
	"github.com/minisgg/studio-worker/settings"
	"github.com/minisgg/studio-worker/studio"
)

func heldSnap(d controls.Decision) studio.Snapshot {
	s := idleSnap()
	s.State = studio.StateHeld
	s.Controls = d
	s.IdleReason = d.Line()
	return s
}

func TestStatusPageSaysWhichControlHoldsTheWorker(t *testing.T) {
	now := time.Now()
	since := time.Date(now.Year(), now.Month(), now.Day(), 0, 2, 0, 0, time.Local)
	gpu := heldSnap(controls.Decision{Holds: []controls.Hold{{Control: controls.ControlGPU, Reason: "GPU busy (blender)", Since: since}}})
	h := newHarness(t, gpu)
	st := h.main.Status
	if st.headline.Text != "On hold" {
		t.Errorf("headline %q", st.headline.Text)
	}
	if want := "On hold since 00:02 by the control below. Jobs are taken again by themselves when that is over."; st.reason.Text != want {
		t.Errorf("why-line %q\nwant %q", st.reason.Text, want)
	}
	if !st.holds.Visible() || st.holds.Text != "Held by: GPU busy (blender) since 00:02." {
		t.Errorf("hold line %q (visible %v)", st.holds.Text, st.holds.Visible())
	}
	if look, tip := TrayLook(gpu); look != assets.TrayPaused || tip != "Studio Worker: on hold (GPU busy (blender))" {
		t.Errorf("tray %s %q", look, tip)
	}
	if got := h.w.Title(); got != "Studio Worker — on hold: GPU busy (blender)" {
		t.Errorf("window title %q", got)
	}
	// The same control while a job runs: the job finishes first.
	working := workingSnap(now)
	working.Controls = gpu.Controls
	h.main.Render(working)
	if st.holds.Text != "Held by: GPU busy (blender) since 00:02; the current job finishes first." {
		t.Errorf("while working: %q", st.holds.Text)
	}
	if got := h.w.Title(); got != "Studio Worker" {
		t.Errorf("window title while working %q", got)
	}

	// Outside the work hours: when it works again.
	eve := time.Date(now.Year(), now.Month(), now.Day(), 23, 59, 0, 0, time.Local)
	sched := heldSnap(controls.Decision{Holds: []controls.Hold{{Control: controls.ControlSchedule, Reason: "outside your work hours", Since: since, Until: eve}},
		NextChange: eve, NextAllows: true})
	h.main.Render(sched)
	if want := "On hold since 00:02 by the control below. Jobs are taken again by themselves when that is over."; st.reason.Text != want {
		t.Errorf("why-line %q", st.reason.Text)
	}
	if st.holds.Text != "Held by: outside your work hours since 00:02.\nWorks again at 23:59 (your work hours)." {
		t.Errorf("hold lines %q", st.holds.Text)
	}
	// Two controls: the why-line counts them and the Held-by lines name
	// them, each once.
	two := heldSnap(controls.Decision{Holds: []controls.Hold{
		{Control: controls.ControlSchedule, Reason: "outside your work hours", Since: since},
		{Control: controls.ControlGPU, Reason: "GPU busy (blender)", Since: since.Add(time.Minute)},
	}, NextChange: eve, NextAllows: true})
	h.main.Render(two)
	if want := "On hold since 00:02 by 2 of your controls, below. Jobs are taken again by themselves when all are over."; st.reason.Text != want {
		t.Errorf("why-line %q", st.reason.Text)
	}
	if want := "Held by: outside your work hours since 00:02.\nHeld by: GPU busy (blender) since 00:03.\nWorks again at 23:59 (your work hours)."; st.holds.Text != want {
		t.Errorf("hold lines %q", st.holds.Text)
	}
	for _, reason := range []string{"outside your work hours", "GPU busy (blender)"} {
		if n := strings.Count(st.reason.Text+"\n"+st.holds.Text, reason); n != 1 {
			t.Errorf("%q said %d times", reason, n)
		}
	}
	// Inside them: when they end; nothing holds.
	inside := idleSnap()
	inside.Controls = controls.Decision{MayWork: true, NextChange: eve}
	h.main.Render(inside)
	if st.holds.Text != "Stops at 23:59, the end of your work hours." {
		t.Errorf("inside the hours %q", st.holds.Text)
	}
	h.main.Render(idleSnap())
	if st.holds.Visible() {
		t.Errorf("hold line shown with nothing to say: %q", st.holds.Text)
	}
}

func TestClockAt(t *testing.T) {
	now := time.Date(2026, 12, 1, 14, 30, 0, 0, time.Local) // a Tuesday
	for _, c := range []struct {
		at   time.Time
		want string
	}{
		{time.Date(2026, 12, 1, 18, 0, 0, 0, time.Local), "18:00"},
		{time.Date(2026, 12, 2, 9, 0, 0, 0, time.Local), "Wed 09:00"},
		{time.Date(2026, 12, 20, 9, 0, 0, 0, time.Local), "Dec 20 09:00"},
		{time.Date(2026, 11, 30, 9, 0, 0, 0, time.Local), "Nov 30 09:00"},
	} {
		if got := clockAt(c.at, now); got != c.want {
			t.Errorf("clockAt(%s) = %q, want %q", c.at, got, c.want)
		}
	}
}

func TestControlsSettingsAreSaved(t *testing.T) {
	h := newHarness(t, idleSnap())
	sp := h.main.Settings
	c := sp.controls
	if c.stopJob.Selected != choiceFinish || c.onlyIdle.Checked || c.hoursOn.Checked {
		t.Fatalf("defaults: stop %q idle %v hours %v", c.stopJob.Selected, c.onlyIdle.Checked, c.hoursOn.Checked)
	}
	test.Tap(c.onlyIdle)
	c.idleAfter.SetText("300")
	test.Tap(c.gpuBusy)
	c.busyFor.SetText("20")
	c.freeFor.SetText("")
	c.programs.SetText(" blender, game.exe ")
	c.maxTemp.SetText("83")
	c.maxPower.SetText("250.5")
	c.stopJob.SetSelected(choiceStop)
	test.Tap(c.hoursOn)
	c.hours[time.Friday].SetText("18:00-02:00")
	c.hours[time.Sunday].SetText("all day")
	test.Tap(sp.save)
	if len(h.settings.saved) != 1 {
		t.Fatalf("not saved: %q", sp.result.Text)
	}
	got := h.settings.saved[0]
	if !got.OnlyWhenIdle || got.IdleAfterSeconds != 300 || !got.PauseWhenGPUBusy || got.GPUBusySeconds != 20 || got.GPUFreeSeconds != 0 ||
		got.PausePrograms != "blender, game.exe" || got.MaxGPUTempC != 83 || got.MaxGPUPowerW != 250.5 || !got.StopJobWhenBusy ||
		!got.WorkHoursOn || got.WorkHours.Friday != "18:00-02:00" || got.WorkHours.Sunday != "all day" || got.WorkHours.Monday != "" {
		t.Errorf("saved %+v", got)
	}
	// What was saved comes back into the form.
	sp.Load()
	if c.idleAfter.Text != "300" || c.freeFor.Text != "" || c.stopJob.Selected != choiceStop || c.hours[time.Friday].Text != "18:00-02:00" {
		t.Errorf("loaded back: %q %q %q %q", c.idleAfter.Text, c.freeFor.Text, c.stopJob.Selected, c.hours[time.Friday].Text)
	}
}

func TestInvalidControlsAreMarkedEachWithItsReason(t *testing.T) {
	h := newHarness(t, idleSnap())
	sp := h.main.Settings
	c := sp.controls
	c.idleAfter.SetText("soon")
	c.busyFor.SetText("-1")
	c.programs.SetText("/usr/bin/blender")
	c.maxTemp.SetText("hot")
	c.maxPower.SetText("9000")
	test.Tap(c.hoursOn)
	c.hours[time.Monday].SetText("9-17")
	c.hours[time.Wednesday].SetText("25:00-26:00")
	test.Tap(sp.save)
	if len(h.settings.saved) != 0 {
		t.Fatal("saved with invalid controls")
	}
	for field, want := range map[string]string{
		settings.FieldIdleAfter:                    "Must be a whole number of seconds",
		settings.FieldGPUBusy:                      "Must be between 1 and 86400 seconds (0 is the default, 10).",
		settings.FieldPrograms:                     `"/usr/bin/blender" is a path`,
		settings.FieldMaxGPUTemp:                   "Must be a number of °C",
		settings.FieldMaxGPUPower:                  "up to 5000",
		settings.FieldWorkHoursDay(time.Monday):    `"9" is not a time such as 09:00`,
		settings.FieldWorkHoursDay(time.Wednesday): `"25:00" is not a time between 00:00 and 24:00`,
	} {
		if got := sp.FieldError(field); !strings.Contains(got, want) {
			t.Errorf("%s: %q, want it to mention %q", field, got, want)
		}
	}
	if sp.result.Text != "Not saved: fix the 7 fields marked above." {
		t.Errorf("result %q", sp.result.Text)
	}
	// The hours are checked while typing too.
	if err := c.hours[time.Monday].Validate(); err == nil {
		t.Error("9-17 passes the entry's own check")
	}
	// Editing a field clears its message.
	test.Type(c.maxTemp, "1")
	if sp.FieldError(settings.FieldMaxGPUTemp) != "" {
		t.Error("the temperature message stayed after an edit")
	}
	// The GPU ceilings are checked while typing too: a word, a value
	// past Save's bound, and a good value or none.
	c.maxTemp.SetText("hot")
	if err := c.maxTemp.Validate(); err == nil || !strings.Contains(err.Error(), "number of °C") {
		t.Errorf("hot: %v", err)
	}
	if err := c.maxPower.Validate(); err == nil || !strings.Contains(err.Error(), "up to 5000") {
		t.Errorf("9000 W: %v", err)
	}
	for entry, good := range map[*widget.Entry][]string{c.maxTemp: {"", "0", "82.5"}, c.maxPower: {" ", "0", "350"}} {
		for _, v := range good {
			entry.SetText(v)
			if err := entry.Validate(); err != nil {
				t.Errorf("%q refused: %v", v, err)
			}
		}
	}
	c.maxTemp.SetText("-3")
	if err := c.maxTemp.Validate(); err == nil || !strings.Contains(err.Error(), "up to") {
		t.Errorf("-3 °C: %v", err)
	}
	// And the waits in seconds.
	for text, want := range map[string]string{"soon": "whole number of seconds", "-1": "between 1 and 86400", "86401": "between 1 and 86400", "": "", "30": ""} {
		for _, e := range []*widget.Entry{c.idleAfter, c.busyFor, c.freeFor} {
			e.SetText(text)
			err := e.Validate()
			if (want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), want)) {
				t.Errorf("%q: %v, want %q", text, err, want)
			}
		}
	}
	// Work hours on with no hours at all.
	sp.Load()
	test.Tap(c.hoursOn)
	test.Tap(sp.save)
	if got := sp.FieldError(settings.FieldWorkHoursDay(time.Monday)); !strings.Contains(got, "would never take a job") {
		t.Errorf("no hours: %q", got)
	}
}

func TestTrayMenuSaysWhatHoldsTheWorker(t *testing.T) {
	test.NewTempApp(t)
	b := &fakeBackend{snap: idleSnap()}
	host := &fakeTrayHost{}
	tr := NewTray(host, b, func() {}, func() {}, nil)
	first := func() *fyne.MenuItem { return tr.Menu().Items[0] }
	if first().Label != TrayOpen {
		t.Fatalf("first item %q with nothing holding", first().Label)
	}
	// The tray's own clock: the work hours end later today, or tomorrow.
	now := time.Now()
	tr.now = func() time.Time { return now }
	today := time.Date(now.Year(), now.Month(), now.Day(), 18, 0, 0, 0, time.Local)
	tomorrow := today.AddDate(0, 0, 1)
	holds := func(next time.Time) studio.Snapshot {
		return heldSnap(controls.Decision{Holds: []controls.Hold{
			{Control: controls.ControlSchedule, Reason: "outside your work hours"},
			{Control: controls.ControlTemperature, Reason: "GPU at 85 °C, above your 80 °C ceiling"},
		}, NextChange: next, NextAllows: true})
	}
	held := holds(today)
	tr.Render(held)
	if it := first(); it.Label != "On hold: outside your work hours until 18:00; GPU too hot" || !it.Disabled {
		t.Fatalf("hold line %q (disabled %v)", it.Label, it.Disabled)
	}
	// A new temperature reading leaves the line as it is (a new label
	// would rebuild the platform menu).
	held.Controls.Holds[1].Reason = "GPU at 86 °C, above your 80 °C ceiling"
	tr.Render(held)
	if first().Label != "On hold: outside your work hours until 18:00; GPU too hot" {
		t.Fatalf("menu changed for a reading: %q", first().Label)
	}
	// Another day: its weekday, as the Status page says it.
	tr.Render(holds(tomorrow))
	want := "On hold: outside your work hours until " + tomorrow.Format("Mon") + " 18:00; GPU too hot"
	if first().Label != want {
		t.Fatalf("hold line %q, want %q", first().Label, want)
	}
	if got := holdLines(holds(tomorrow), now); !strings.Contains(got, "Works again at "+tomorrow.Format("Mon")+" 18:00") {
		t.Errorf("the Status page says %q", got)
	}
	tr.Render(idleSnap())
	if first().Label != TrayOpen {
		t.Fatalf("hold line stayed: %q", first().Label)
	}
}

// "Saved. The changes are in effect." goes once the form is edited again:
// an entry typed in, a box ticked, a choice changed.
func TestSavedLineGoesOnTheNextEdit(t *testing.T) {
	h := newHarness(t, idleSnap())
	sp := h.main.Settings
	c := sp.controls
	for name, edit := range map[string]func(){
		"hours entry":    func() { test.Type(c.hours[time.Monday], "9") },
		"away box":       func() { test.Tap(c.onlyIdle) },
		"stop-job radio": func() { c.stopJob.SetSelected(choiceStop) },
		"updates box":    func() { test.Tap(sp.autoUpdate) },
		"notify box":     func() { test.Tap(sp.notify[2]) },
	} {
		sp.Load()
		test.Tap(sp.save)
		if !strings.HasPrefix(sp.result.Text, "Saved.") {
			t.Fatalf("%s: after Save %q", name, sp.result.Text)
		}
		edit()
		if sp.result.Text != "" {
			t.Errorf("%s: %q still shows after an edit", name, sp.result.Text)
		}
	}
}

// With the GPU busy control on and nothing on this computer that reads the
// GPU, the Settings page says so under the box; a reading makes it go.
func TestSettingsSaysWhenTheGPUCannotBeRead(t *testing.T) {
	h := newHarness(t, idleSnap())
	note := h.main.Settings.controls.gpuNote
	if note.Visible() {
		t.Fatalf("note shown with nothing to say: %q", note.Text)
	}
	s := idleSnap()
	s.Controls.GPUUnknown = "no GPU can be read: no NVIDIA driver (libnvidia-ml.so.1 is not installed); nvidia-smi is not installed"
	h.main.Render(s)
	want := "Studio Worker cannot read this computer's GPU (no NVIDIA driver (libnvidia-ml.so.1 is not installed); nvidia-smi is not installed), so pausing while another program uses it and the GPU ceilings have no effect here. The program list still works."
	if !note.Visible() || note.Text != want {
		t.Fatalf("note %q (visible %v)\nwant %q", note.Text, note.Visible(), want)
	}
	h.main.Render(idleSnap())
	if note.Visible() {
		t.Fatal("the note stayed once the GPU could be read")
	}
}
