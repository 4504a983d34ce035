package ui

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/canvas"
	"fyne.io/fyne/v2/container"
	"fyne.io/fyne/v2/layout"
	"fyne.io/fyne/v2/theme"
	"fyne.io/fyne/v2/widget"

	"github.com/minisgg/studio-worker/assets"
	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/studio"
)

// StatusPage is the first page: what the worker is doing and the big
// Start / Pause button.
type StatusPage struct {
	deps *Deps
	now  func() time.Time

	content fyne.CanvasObject

	icon     *canvas.Image
	headline *widget.Label
	reason   *widget.Label
	// holds is the "Held by" line: which of the donor's controls hold the
	// worker since when, and the work hours' next change.
	holds     *widget.Label
	startStop *widget.Button
	after     *widget.Button
	snooze    *widget.Button
	afterNote *widget.Label

	login *LoginPanel

	jobCard  *widget.Card
	jobTitle *widget.Label
	phase    *widget.Label
	bar      *widget.ProgressBar
	spinner  *widget.ProgressBarInfinite
	elapsed  *widget.Label

	connection *widget.Label
	heartbeat  *widget.Label
	vram       *widget.Label
	counters   *widget.Label

	// Contribution is the totals and the chart from the job history;
	// hidden without one.
	Contribution *ContributionCard

	// eta* are the running job's own pace in its current phase: where
	// progress stood when this phase was first seen.
	// since is when the state shown (sinceKey) began, as this window saw.
	sinceKey string
	since    time.Time

	etaKey  string
	etaAt   time.Time
	etaDone int64

	last     studio.Snapshot
	trayLook assets.TrayState
}

func newStatusPage(d *Deps, parent fyne.Window) *StatusPage {
	p := &StatusPage{deps: d, now: time.Now}
	p.icon = canvas.NewImageFromResource(trayResource(assets.TrayDisconnected))
	p.icon.FillMode = canvas.ImageFillContain
	p.icon.SetMinSize(fyne.NewSize(56, 56))
	p.headline = widget.NewLabel("Starting")
	p.headline.SizeName = theme.SizeNameHeadingText
	p.headline.TextStyle.Bold = true
	p.reason = widget.NewLabel("")
	p.reason.Wrapping = fyne.TextWrapWord
	p.holds = widget.NewLabel("")
	p.holds.Wrapping = fyne.TextWrapWord
	p.holds.Hide()

	p.startStop = widget.NewButtonWithIcon(ActionPauseNow, theme.MediaPauseIcon(), p.toggle)
	p.startStop.Importance = widget.HighImportance
	p.after = widget.NewButton(ActionFinishJob, func() { p.deps.Backend.PauseAfterCurrent() })
	p.snooze = widget.NewButtonWithIcon(ActionSnooze, theme.HistoryIcon(), func() { p.deps.Backend.PauseFor(SnoozeFor) })
	p.afterNote = widget.NewLabel("")
	p.afterNote.Hide()

	p.login = newLoginPanel(d, parent)

	p.jobTitle = widget.NewLabel("")
	p.jobTitle.TextStyle.Bold = true
	p.phase = widget.NewLabel("")
	p.bar = widget.NewProgressBar()
	p.spinner = widget.NewProgressBarInfinite()
	p.spinner.Stop()
	p.spinner.Hide()
	p.elapsed = widget.NewLabel("")
	p.jobCard = widget.NewCard("Current job", "", container.NewVBox(p.jobTitle, p.phase, p.bar, p.spinner, p.elapsed))
	p.jobCard.Hide()

	p.connection = widget.NewLabel("")
	p.connection.Wrapping = fyne.TextWrapWord
	p.heartbeat = widget.NewLabel("")
	p.vram = widget.NewLabel("")
	p.vram.Wrapping = fyne.TextWrapWord
	p.counters = widget.NewLabel("")

	p.Contribution = newContributionCard()
	if d.History == nil {
		p.Contribution.Content().Hide()
	}

	bigButton := container.NewGridWrap(fyne.NewSize(200, 56), p.startStop)
	head := container.NewBorder(nil, nil, p.icon, nil, container.NewVBox(p.headline, p.reason, p.holds))
	controls := container.NewHBox(bigButton, container.NewVBox(layout.NewSpacer(), p.after, p.afterNote, layout.NewSpacer()), container.NewVBox(layout.NewSpacer(), p.snooze, layout.NewSpacer()))
	p.content = container.NewVScroll(container.NewVBox(
		head,
		controls,
		p.login.Content(),
		p.jobCard,
		p.Contribution.Content(),
		widget.NewCard("Studio", "", container.NewVBox(p.connection, p.heartbeat)),
		widget.NewCard("Graphics memory", "", p.vram),
		p.counters,
	))
	return p
}

// Content is the page's root object.
func (p *StatusPage) Content() fyne.CanvasObject { return p.content }

func (p *StatusPage) toggle() {
	if p.last.Paused {
		p.deps.Backend.Resume()
	} else {
		p.deps.Backend.PauseNow()
	}
}

// observe follows s without drawing it: the state the reason line's
// "since" counts from starts when the window sees it change, hidden or not.
func (p *StatusPage) observe(s studio.Snapshot, now time.Time) {
	p.last = s
	if key := sinceKey(s); key != p.sinceKey {
		p.sinceKey, p.since = key, now
	}
}

// Render shows s. It runs on the UI goroutine.
func (p *StatusPage) Render(s studio.Snapshot) {
	look, _ := TrayLook(s)
	if look != p.trayLook {
		p.trayLook = look
		p.icon.Resource = trayResource(look)
		p.icon.Refresh()
	}
	p.headline.SetText(Headline(s))
	now := p.now()
	p.observe(s, now)
	p.reason.SetText(reasonLine(s, p.since, now))
	if h := holdLines(s, now); h != "" {
		p.holds.SetText(h)
		p.holds.Show()
	} else {
		p.holds.Hide()
	}

	p.startStop.SetText(PauseLabel(s))
	if s.Paused {
		p.startStop.SetIcon(theme.MediaPlayIcon())
	} else {
		p.startStop.SetIcon(theme.MediaPauseIcon())
	}
	switch {
	case s.Current != nil && s.PauseAfterJob:
		p.after.Hide()
		p.afterNote.SetText("Will pause when this job is done.")
		p.afterNote.Show()
	case s.Current != nil && !s.Paused:
		p.after.Show()
		p.afterNote.Hide()
	default:
		p.after.Hide()
		p.afterNote.Hide()
	}

	if s.Paused {
		p.snooze.Hide()
	} else {
		p.snooze.Show()
	}

	p.login.Render(s)
	p.renderJob(s.Current)
	p.connection.SetText(connectionLine(s))
	if s.LastHeartbeat.IsZero() {
		p.heartbeat.SetText("No heartbeat acknowledged yet.")
	} else {
		p.heartbeat.SetText("Last heartbeat acknowledged at " + s.LastHeartbeat.Local().Format("15:04:05") + ".")
	}
	p.vram.SetText(vramLine(s.VRAM) + heldLines(s.Held))
	p.counters.SetText("Since start: " + countersLine(s.Counters) + ".")
}

func (p *StatusPage) renderJob(j *studio.JobInfo) {
	if j == nil {
		p.jobCard.Hide()
		p.spinner.Stop()
		return
	}
	p.jobCard.Show()
	p.jobTitle.SetText(titleCase(jobTitle(*j)))
	p.phase.SetText(progressLine(*j))
	if j.Total > 0 {
		p.spinner.Stop()
		p.spinner.Hide()
		p.bar.Max = float64(j.Total)
		p.bar.SetValue(float64(min(j.Done, j.Total)))
		p.bar.Show()
	} else {
		p.bar.Hide()
		p.spinner.Show()
		if !p.spinner.Running() {
			p.spinner.Start()
		}
	}
	p.tick()
}

// tick refreshes the elapsed time of the running job and its ETA.
func (p *StatusPage) tick() {
	j := p.last.Current
	if j == nil || j.Started.IsZero() {
		return
	}
	now := p.now()
	key := j.ID + "/" + string(j.Phase)
	if key != p.etaKey {
		p.etaKey, p.etaAt, p.etaDone = key, now, j.Done
	}
	line := "Elapsed " + formatDuration(now.Sub(j.Started).Truncate(time.Second))
	if left, ok := eta(j.Done, j.Total, p.etaDone, now.Sub(p.etaAt)); ok {
		line += " · about " + formatDuration(left.Round(time.Second)) + " left in this step"
	}
	p.elapsed.SetText(line)
}

// eta is the time left at the job's own pace: done0 units were done when
// the phase was first seen, done after spent. It needs a second of
// progress to tell.
func eta(done, total, done0 int64, spent time.Duration) (time.Duration, bool) {
	if total <= 0 || done <= done0 || done >= total || spent < time.Second {
		return 0, false
	}
	rate := float64(done-done0) / spent.Seconds() // units per second
	return time.Duration(float64(total-done) / rate * float64(time.Second)), true
}

// sinceKey names the state the reason line's "since" follows.
func sinceKey(s studio.Snapshot) string {
	return fmt.Sprintf("%s/%t/%s", s.State, s.Paused, s.Registration.State)
}

// reasonLine is the one line under the headline: for every state that is
// not working, why, since when, and what the donor can do. since is when
// this state began.
func reasonLine(s studio.Snapshot, since, now time.Time) string {
	at := func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return clockAt(t, now)
	}
	reg := s.Registration
	switch {
	case s.State == studio.StateWorking && s.Paused && !s.PauseAfterJob:
		return "Stopping the current job because you pressed " + ActionPauseNow + "; it goes back to the studio for another computer. No new jobs are taken until you press " + ActionResume + "."
	case s.State == studio.StateWorking:
		if s.Current != nil {
			return titleCase(jobTitle(*s.Current)) + "."
		}
		return ""
	case s.State == studio.StatePaused && !s.ResumeAt.IsZero():
		return "Paused by you since " + at(since) + " for an hour: jobs are taken again at " + at(s.ResumeAt) + ", or when you press " + ActionResume + "."
	case s.State == studio.StatePaused:
		return "Paused by you since " + at(since) + ". No new jobs are taken until you press " + ActionResume + "."
	case s.State == studio.StateHeld:
		return heldLine(s.Controls, now)
	case s.State == studio.StateRegistering && reg.Problem != "":
		line := "Cannot reach the studio to register: " + reg.Problem + "."
		if !reg.NextTry.IsZero() {
			line += fmt.Sprintf(" Next try in %d s.", max(0, int(reg.NextTry.Sub(now).Round(time.Second)/time.Second)))
		}
		return line
	case s.State == studio.StateWaitingApproval:
		line := "Waiting since " + at(since) + " for the studio's operator to approve this computer."
		if reg.Problem != "" {
			line += " The last check failed: " + reg.Problem + "."
		}
		return line
	case s.State == studio.StateRejected:
		r := "The studio turned this computer down"
		if reg.Reason != "" {
			r += ": " + reg.Reason
		}
		return r + ". Press Try again below to send a new request."
	case s.State == studio.StateIdle && len(s.Kinds) == 0:
		return "No engine is ready, so the studio has nothing to offer this computer. The notice above says what is missing; the Logs page has the details."
	case s.State == studio.StateIdle:
		why := s.IdleReason
		if why == "" {
			why = "waiting for the next job"
		}
		line := "Nothing offered since " + at(since) + ": " + why + "."
		if strings.HasPrefix(why, "last offer needed ") {
			line += " Raise the graphics memory budget on the Settings page if this computer has the memory."
		}
		return line
	case s.IdleReason != "" && !strings.EqualFold(s.IdleReason, Headline(s)):
		return titleCase(s.IdleReason) + "."
	}
	return ""
}

// countersLine is "3 done, 1 failed, 2 offers turned down".
func countersLine(c studio.Counters) string {
	return fmt.Sprintf("%d done, %d failed, %s turned down", c.Done, c.Failed, plural(c.Rejected, "offer", "offers"))
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

func connectionLine(s studio.Snapshot) string {
	url := s.StudioURL
	if url == "" {
		url = "the studio"
	}
	who := ""
	if s.Registration.WorkerID != "" {
		who = " as worker " + s.Registration.WorkerID
	}
	switch s.Session {
	case studio.SessionConnected:
		return "Connected to " + url + who + "."
	case studio.SessionConnecting:
		return "Connecting to " + url + who + "…"
	case studio.SessionRetrying:
		if s.SessionDetail != "" {
			return titleCase(s.SessionDetail) + " (" + url + ")."
		}
		return fmt.Sprintf("Studio unreachable, retrying in %d s (%s).", int(s.RetryIn.Round(time.Second)/time.Second), url)
	case studio.SessionStopped:
		r := s.StopReason
		if r == "" {
			r = "stopped"
		}
		return "Disconnected from " + url + ": " + r + "."
	}
	return "Not connected to " + url + " yet."
}

// heldLines says what each engine process holds in memory, one line each
// ("" when none runs).
func heldLines(held []engine.Held) string {
	var b strings.Builder
	for _, h := range held {
		what := titleCase(h.Engine.Words())
		fmt.Fprintf(&b, "\n%s holds %s", what, formatBytes(h.Bytes))
		if h.VRAMBytes > 0 {
			fmt.Fprintf(&b, " (%s on the GPU)", formatBytes(h.VRAMBytes))
		}
		if h.Model != "" {
			b.WriteString(" with " + filepath.Base(h.Model))
		} else {
			b.WriteString(", no model loaded")
		}
		if h.PID != 0 {
			fmt.Fprintf(&b, " · process %d", h.PID)
		}
		b.WriteString(".")
	}
	return b.String()
}

func vramLine(v studio.VRAM) string {
	inUse := "None in use by Studio Worker"
	if v.InUseBytes > 0 {
		inUse = formatGB(bytesToGB(v.InUseBytes)) + " in use by Studio Worker"
	}
	budget := "budget " + formatGB(v.BudgetGB)
	if !v.Known {
		return inUse + " · " + budget + " · total unknown: this computer's graphics memory could not be detected, so the budget is taken as you set it."
	}
	line := inUse + " · " + budget + " · " + formatGB(bytesToGB(v.TotalBytes)) + " total"
	if v.FreeBytes > 0 {
		line += ", " + formatGB(bytesToGB(v.FreeBytes)) + " free"
	}
	return line
}

func progressLine(j studio.JobInfo) string {
	line := progressFigures(j)
	if j.Note != "" && j.Phase != engine.PhaseRuntime { // a runtime's note repeats the figures
		// A stalled download says so, beside what has arrived.
		line += " — " + j.Note
	}
	return line
}

func progressFigures(j studio.JobInfo) string {
	head := phaseWord(j.Phase)
	switch {
	case (j.Phase == engine.PhaseDownload || j.Phase == engine.PhaseRuntime) && j.Total > 0:
		return fmt.Sprintf("%s: %s of %s (%d%%)", head, formatBytes(uint64(j.Done)), formatBytes(uint64(j.Total)), j.Done*100/j.Total)
	case (j.Phase == engine.PhaseDownload || j.Phase == engine.PhaseRuntime) && j.Done > 0:
		return fmt.Sprintf("%s: %s so far", head, formatBytes(uint64(j.Done)))
	case j.Phase == engine.PhaseGenerate:
		unit := "steps"
		if j.Kind == engine.KindLLM {
			unit = "tokens"
		}
		if j.Total > 0 {
			return fmt.Sprintf("%s: %d of %d %s", head, j.Done, j.Total, unit)
		}
		if j.Done > 0 {
			return fmt.Sprintf("%s: %d %s so far", head, j.Done, unit)
		}
	}
	return head + "…"
}

func titleCase(s string) string {
	if s == "" {
		return s
	}
	r := []rune(s)
	if r[0] >= 'a' && r[0] <= 'z' {
		r[0] -= 'a' - 'A'
	}
	return string(r)
}

// trayResources wraps each embedded PNG once, so that Fyne's image cache
// sees the same resource each time; it is never written after init.
var trayResources = func() map[assets.TrayState]fyne.Resource {
	m := map[assets.TrayState]fyne.Resource{}
	for _, s := range []assets.TrayState{assets.TrayIdle, assets.TrayWorking, assets.TrayPaused, assets.TrayError, assets.TrayDisconnected} {
		m[s] = fyne.NewStaticResource("tray-"+string(s)+".png", assets.Tray(s))
	}
	return m
}()

func trayResource(s assets.TrayState) fyne.Resource {
	if r, ok := trayResources[s]; ok {
		return r
	}
	return trayResources[assets.TrayDisconnected]
}

// TrayResource is the tray icon for a state, for the app's tray.
func TrayResource(s assets.TrayState) fyne.Resource { return trayResource(s) }
