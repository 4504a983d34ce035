package ui

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/container"
	"fyne.io/fyne/v2/widget"

	"github.com/minisgg/studio-worker/controls"
	"github.com/minisgg/studio-worker/settings"
	"github.com/minisgg/studio-worker/studio"
)

// clockAt is "18:00" today, "Mon 18:00" within a week, else "Jan 2 18:00",
// in local time: the one way the Status page and the tray menu give a
// time of day.
func clockAt(t, now time.Time) string {
	t, now = t.Local(), now.Local()
	y, m, d := t.Date()
	ny, nm, nd := now.Date()
	switch {
	case y == ny && m == nm && d == nd:
		return t.Format("15:04")
	case t.After(now) && t.Sub(now) < 6*24*time.Hour:
		return t.Format("Mon 15:04")
	}
	return t.Format("Jan 2 15:04")
}

// heldLine is the why-line of a worker held by a control other than the
// donor's pause. The "Held by" lines under it (holdLines) name each such
// control, so this line only counts them: "On hold since 14:02 by the
// control below. Jobs are taken again by themselves when that is over."
func heldLine(d controls.Decision, now time.Time) string {
	since := time.Time{}
	n := 0
	for _, h := range d.Holds {
		if h.Control == controls.ControlPause {
			continue
		}
		n++
		if !h.Since.IsZero() && (since.IsZero() || h.Since.Before(since)) {
			since = h.Since
		}
	}
	line := "On hold"
	if !since.IsZero() {
		line += " since " + clockAt(since, now)
	}
	switch n {
	case 0: // no Held-by line to point at
		return line + ": " + d.Line() + "."
	case 1:
		return line + " by the control below. Jobs are taken again by themselves when that is over."
	}
	return line + fmt.Sprintf(" by %d of your controls, below. Jobs are taken again by themselves when all are over.", n)
}

// holdLines is the Status page's "Held by" line under the why-line: each
// control other than the donor's pause that holds the worker, since when,
// and the work hours' next change. "" when there is nothing to say.
func holdLines(s studio.Snapshot, now time.Time) string {
	d := s.Controls
	var lines []string
	for _, h := range d.Holds {
		if h.Control == controls.ControlPause {
			continue
		}
		l := "Held by: " + h.Reason
		if !h.Since.IsZero() {
			l += " since " + clockAt(h.Since, now)
		}
		if s.State == studio.StateWorking {
			if d.StopJob {
				l += "; the current job is being stopped"
			} else {
				l += "; the current job finishes first"
			}
		}
		lines = append(lines, l+".")
	}
	if !d.NextChange.IsZero() {
		if d.NextAllows {
			lines = append(lines, "Works again at "+clockAt(d.NextChange, now)+" (your work hours).")
		} else {
			lines = append(lines, "Stops at "+clockAt(d.NextChange, now)+", the end of your work hours.")
		}
	}
	return strings.Join(lines, "\n")
}

// trayHoldLabel is the tray menu's hold line: the controls other than the
// donor's pause that hold the worker, in a few steady words (no readings
// that change every poll, so the platform menu is not rebuilt for them);
// "" when none holds. Times read as on the Status page (clockAt): "until
// 18:00" today, "until Wed 18:00" on another day.
func trayHoldLabel(d controls.Decision, now time.Time) string {
	var parts []string
	for _, h := range d.Holds {
		switch h.Control {
		case controls.ControlPause:
			continue
		case controls.ControlSchedule:
			p := "outside your work hours"
			if !d.NextChange.IsZero() && d.NextAllows {
				p += " until " + clockAt(d.NextChange, now)
			}
			parts = append(parts, p)
		case controls.ControlTemperature:
			parts = append(parts, "GPU too hot")
		case controls.ControlPower:
			parts = append(parts, "GPU over its power ceiling")
		default:
			parts = append(parts, h.Reason)
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return "On hold: " + strings.Join(parts, "; ")
}

// WindowTitle is the window's title: the app's name, and what holds it
// when one of the donor's controls does ("Studio Worker — on hold: GPU
// busy (blender)").
func WindowTitle(s studio.Snapshot) string {
	if s.State == studio.StateHeld {
		return "Studio Worker — on hold: " + s.Controls.Line()
	}
	return "Studio Worker"
}

// controlsForm is the Settings page's "When Studio Worker may work"
// block: the donor's controls of issue 12.
type controlsForm struct {
	onlyIdle  *widget.Check
	idleAfter *widget.Entry
	idleErr   *widget.Label

	gpuBusy *widget.Check
	// gpuNote says that nothing reads this computer's GPU, while a
	// control that needs it is on (Decision.GPUUnknown).
	gpuNote  *widget.Label
	busyFor  *widget.Entry
	busyErr  *widget.Label
	freeFor  *widget.Entry
	freeErr  *widget.Label
	programs *widget.Entry
	progErr  *widget.Label

	maxTemp  *widget.Entry
	tempErr  *widget.Label
	maxPower *widget.Entry
	powerErr *widget.Label

	stopJob *widget.RadioGroup

	hoursOn  *widget.Check
	hours    [7]*widget.Entry // by time.Weekday
	hoursErr [7]*widget.Label
}

const (
	choiceFinish = "Let the running job finish"
	choiceStop   = "Stop it now (it goes back to the studio)"
)

// weekOrder lists the days Monday first, as the editor shows them.
var weekOrder = []time.Weekday{time.Monday, time.Tuesday, time.Wednesday, time.Thursday, time.Friday, time.Saturday, time.Sunday}

func newControlsForm(changed func()) *controlsForm {
	f := &controlsForm{}
	number := func(placeholder string) (*widget.Entry, *widget.Label) {
		e := widget.NewEntry()
		e.SetPlaceHolder(placeholder)
		l := errLabel()
		e.OnChanged = func(string) { hideErr(l); changed() }
		return e, l
	}
	f.onlyIdle = widget.NewCheck("Only when I'm away from this computer (no keyboard or mouse input)", func(bool) { changed() })
	f.idleAfter, f.idleErr = number(fmt.Sprintf("%d", int(controls.DefaultIdleAfter/time.Second)))
	f.idleAfter.Validator = secondsValidator(settings.FieldIdleAfter)
	f.gpuBusy = widget.NewCheck("Pause while another program uses the GPU", func(bool) { changed() })
	f.gpuNote = widget.NewLabel("")
	f.gpuNote.Wrapping = fyne.TextWrapWord
	f.gpuNote.Importance = widget.WarningImportance
	f.gpuNote.Hide()
	f.busyFor, f.busyErr = number(fmt.Sprintf("%d", int(controls.DefaultBusyAfter/time.Second)))
	f.busyFor.Validator = secondsValidator(settings.FieldGPUBusy)
	f.freeFor, f.freeErr = number(fmt.Sprintf("%d", int(controls.DefaultFreeAfter/time.Second)))
	f.freeFor.Validator = secondsValidator(settings.FieldGPUFree)
	f.programs, f.progErr = number("e.g. blender, steam, game.exe")
	f.programs.Validator = func(s string) error {
		if err := settings.ValidatePrograms(s); err != nil {
			return errors.New(reasonOf(err))
		}
		return nil
	}
	f.maxTemp, f.tempErr = number("0 = no ceiling")
	f.maxTemp.Validator = ceilingValidator("°C", settings.ValidateMaxGPUTemp)
	f.maxPower, f.powerErr = number("0 = no ceiling")
	f.maxPower.Validator = ceilingValidator("watts", settings.ValidateMaxGPUPower)
	f.stopJob = widget.NewRadioGroup([]string{choiceFinish, choiceStop}, func(string) { changed() })
	f.stopJob.Required = true
	f.hoursOn = widget.NewCheck("Only during these hours (this computer's time)", func(bool) { changed() })
	for _, d := range weekOrder {
		f.hours[d], f.hoursErr[d] = number("e.g. 18:00-23:00, or all day; empty = no work this day")
		f.hours[d].Validator = func(s string) error {
			_, _, err := controls.ParseDay(s)
			return err
		}
	}
	return f
}

// ceilingValidator is the live check of a GPU ceiling field: the words
// read gives a value that is not a number, and Save's own bound (check).
func ceilingValidator(unit string, check func(float64) error) fyne.StringValidator {
	return func(s string) error {
		t := strings.TrimSpace(s)
		if t == "" {
			return nil
		}
		v, err := strconv.ParseFloat(t, 64)
		if err != nil {
			return errors.New(ceilingNotANumber(unit))
		}
		if err := check(v); err != nil {
			return errors.New(reasonOf(err))
		}
		return nil
	}
}

// secondsValidator is the live check of one of the controls' waits: the
// words read gives a value that is not a whole number, and Save's bound.
func secondsValidator(field string) fyne.StringValidator {
	return func(s string) error {
		t := strings.TrimSpace(s)
		if t == "" {
			return nil
		}
		n, err := strconv.Atoi(t)
		if err != nil {
			return errors.New(secondsNotANumber)
		}
		if err := settings.ValidateControlSeconds(field, n); err != nil {
			return errors.New(reasonOf(err))
		}
		return nil
	}
}

const secondsNotANumber = "must be a whole number of seconds; leave it empty for the default"

func ceilingNotANumber(unit string) string {
	return "must be a number of " + unit + "; 0 or empty is no ceiling"
}

func (f *controlsForm) content() fyne.CanvasObject {
	bold := func(s string) *widget.Label {
		return widget.NewLabelWithStyle(s, fyne.TextAlignLeading, fyne.TextStyle{Bold: true})
	}
	row := func(label string, e *widget.Entry) fyne.CanvasObject {
		return container.NewBorder(nil, nil, container.NewGridWrap(fyne.NewSize(290, 36), widget.NewLabel(label)), nil, e)
	}
	days := container.NewVBox()
	for _, d := range weekOrder {
		days.Add(container.NewBorder(nil, nil, container.NewGridWrap(fyne.NewSize(110, 36), widget.NewLabel(d.String())), nil, f.hours[d]))
		days.Add(f.hoursErr[d])
	}
	return container.NewVBox(
		bold("When Studio Worker may work"),
		f.onlyIdle,
		row("Away after (seconds)", f.idleAfter), f.idleErr,
		f.gpuBusy, f.gpuNote,
		row("Busy for (seconds) before pausing", f.busyFor), f.busyErr,
		row("Free for (seconds) before resuming", f.freeFor), f.freeErr,
		row("Also pause while these programs run", f.programs), f.progErr,
		row("GPU temperature ceiling (°C)", f.maxTemp), f.tempErr,
		row("GPU power ceiling (W)", f.maxPower), f.powerErr,
		widget.NewLabel("When my computer needs it while a job runs:"),
		f.stopJob,
		f.hoursOn,
		days,
	)
}

// render follows what the controls can read on this computer.
func (f *controlsForm) render(d controls.Decision) {
	if d.GPUUnknown == "" {
		if f.gpuNote.Visible() {
			f.gpuNote.Hide()
		}
		return
	}
	text := "Studio Worker cannot read this computer's GPU (" + strings.TrimPrefix(d.GPUUnknown, "no GPU can be read: ") +
		"), so pausing while another program uses it and the GPU ceilings have no effect here. The program list still works."
	if f.gpuNote.Text != text {
		f.gpuNote.SetText(text)
	}
	if !f.gpuNote.Visible() {
		f.gpuNote.Show()
	}
}

func secondsText(n int) string {
	if n == 0 {
		return ""
	}
	return strconv.Itoa(n)
}

func floatText(v float64) string {
	if v == 0 {
		return ""
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

func (f *controlsForm) load(s settings.Settings) {
	f.onlyIdle.SetChecked(s.OnlyWhenIdle)
	f.idleAfter.SetText(secondsText(s.IdleAfterSeconds))
	f.gpuBusy.SetChecked(s.PauseWhenGPUBusy)
	f.busyFor.SetText(secondsText(s.GPUBusySeconds))
	f.freeFor.SetText(secondsText(s.GPUFreeSeconds))
	f.programs.SetText(s.PausePrograms)
	f.maxTemp.SetText(floatText(s.MaxGPUTempC))
	f.maxPower.SetText(floatText(s.MaxGPUPowerW))
	if s.StopJobWhenBusy {
		f.stopJob.SetSelected(choiceStop)
	} else {
		f.stopJob.SetSelected(choiceFinish)
	}
	f.hoursOn.SetChecked(s.WorkHoursOn)
	for d := range 7 {
		f.hours[d].SetText(*s.WorkHours.Day(time.Weekday(d)))
	}
}

// read puts the form's values into s; a value that is not even a number
// is an error for its field, and s keeps the saved value there.
func (f *controlsForm) read(s *settings.Settings) []error {
	var errs []error
	whole := func(field, text string, dst *int) {
		t := strings.TrimSpace(text)
		if t == "" {
			*dst = 0
			return
		}
		n, err := strconv.Atoi(t)
		if err != nil {
			errs = append(errs, &settings.FieldError{Field: field, Reason: secondsNotANumber})
			return
		}
		*dst = n
	}
	decimal := func(field, text, unit string, dst *float64) {
		t := strings.TrimSpace(text)
		if t == "" {
			*dst = 0
			return
		}
		v, err := strconv.ParseFloat(t, 64)
		if err != nil {
			errs = append(errs, &settings.FieldError{Field: field, Reason: ceilingNotANumber(unit)})
			return
		}
		*dst = v
	}
	s.OnlyWhenIdle = f.onlyIdle.Checked
	whole(settings.FieldIdleAfter, f.idleAfter.Text, &s.IdleAfterSeconds)
	s.PauseWhenGPUBusy = f.gpuBusy.Checked
	whole(settings.FieldGPUBusy, f.busyFor.Text, &s.GPUBusySeconds)
	whole(settings.FieldGPUFree, f.freeFor.Text, &s.GPUFreeSeconds)
	s.PausePrograms = strings.TrimSpace(f.programs.Text)
	decimal(settings.FieldMaxGPUTemp, f.maxTemp.Text, "°C", &s.MaxGPUTempC)
	decimal(settings.FieldMaxGPUPower, f.maxPower.Text, "watts", &s.MaxGPUPowerW)
	s.StopJobWhenBusy = f.stopJob.Selected == choiceStop
	s.WorkHoursOn = f.hoursOn.Checked
	for d := range 7 {
		*s.WorkHours.Day(time.Weekday(d)) = strings.TrimSpace(f.hours[d].Text)
	}
	return errs
}

func (f *controlsForm) errLabelFor(field string) *widget.Label {
	switch field {
	case settings.FieldIdleAfter:
		return f.idleErr
	case settings.FieldGPUBusy:
		return f.busyErr
	case settings.FieldGPUFree:
		return f.freeErr
	case settings.FieldPrograms:
		return f.progErr
	case settings.FieldMaxGPUTemp:
		return f.tempErr
	case settings.FieldMaxGPUPower:
		return f.powerErr
	}
	for d := range 7 {
		if field == settings.FieldWorkHoursDay(time.Weekday(d)) {
			return f.hoursErr[d]
		}
	}
	return nil
}

func (f *controlsForm) errLabels() []*widget.Label {
	out := []*widget.Label{f.idleErr, f.busyErr, f.freeErr, f.progErr, f.tempErr, f.powerErr}
	return append(out, f.hoursErr[:]...)
}

// resetControlField sets field of s back to a value that passes, so that
// the rest of the form can be checked; false when field is not one of
// the controls'.
func resetControlField(s *settings.Settings, saved settings.Settings, field string) bool {
	switch field {
	case settings.FieldIdleAfter:
		s.IdleAfterSeconds = 0
	case settings.FieldGPUBusy:
		s.GPUBusySeconds = 0
	case settings.FieldGPUFree:
		s.GPUFreeSeconds = 0
	case settings.FieldPrograms:
		s.PausePrograms = ""
	case settings.FieldMaxGPUTemp:
		s.MaxGPUTempC = 0
	case settings.FieldMaxGPUPower:
		s.MaxGPUPowerW = 0
	default:
		for d := range 7 {
			if field == settings.FieldWorkHoursDay(time.Weekday(d)) {
				day := time.Weekday(d)
				*s.WorkHours.Day(day) = ""
				if s.WorkHoursOn && s.WorkHours.Days() == ([7]string{}) {
					s.WorkHours.Monday = "all day" // "no hours at all" is this field's own problem
				}
				return true
			}
		}
		return false
	}
	return true
}
