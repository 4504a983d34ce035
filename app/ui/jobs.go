package ui

import (
	"bytes"
	"fmt"
	"strings"
	"time"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/canvas"
	"fyne.io/fyne/v2/container"
	"fyne.io/fyne/v2/theme"
	"fyne.io/fyne/v2/widget"

	"github.com/minisgg/studio-worker/app/history"
	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/studio"
)

// Outcome filter choices on the Jobs page.
const (
	FilterAll    = "All jobs"
	FilterDone   = "Done"
	FilterFailed = "Failed or lost"
)

// JobsPage is the job history: finished jobs grouped by day, newest first,
// with an outcome filter and a detail pane (prompt, timings, the reason of
// a failure, the job's own log with Copy). Without a history it lists the
// worker's recent jobs since start.
type JobsPage struct {
	deps   *Deps
	reload func()

	content fyne.CanvasObject
	summary *widget.Label
	Filter  *widget.Select
	empty   *widget.Label
	rows    *fyne.Container
	sig     string
	jobs    []history.Job

	// the detail pane
	detail     *fyne.Container
	detailNone *widget.Label
	dTitle     *widget.Label
	dFacts     *widget.Label
	dPrompt    *widget.Label
	dReason    *widget.Label
	dLog       *widget.Label
	copyLog    *widget.Button
	selected   string
}

func newJobsPage(d *Deps, reload func()) *JobsPage {
	p := &JobsPage{deps: d, reload: reload}
	p.summary = widget.NewLabel("")
	p.Filter = widget.NewSelect([]string{FilterAll, FilterDone, FilterFailed}, func(string) {
		if p.reload != nil && p.deps.History != nil {
			p.reload()
		} else {
			p.sig = ""
			p.Render(p.deps.Backend.Snapshot())
		}
	})
	p.Filter.Selected = FilterAll
	p.empty = widget.NewLabel("No jobs yet. Finished jobs appear here, newest first.")
	p.rows = container.NewVBox()

	p.detailNone = widget.NewLabel("Choose a job to see its prompt, timings and log.")
	p.dTitle = widget.NewLabel("")
	p.dTitle.TextStyle.Bold = true
	p.dTitle.Wrapping = fyne.TextWrapWord
	p.dFacts = widget.NewLabel("")
	p.dFacts.Wrapping = fyne.TextWrapWord
	p.dPrompt = widget.NewLabel("")
	p.dPrompt.Wrapping = fyne.TextWrapWord
	p.dReason = widget.NewLabel("")
	p.dReason.Wrapping = fyne.TextWrapWord
	p.dReason.Importance = widget.DangerImportance
	p.dLog = widget.NewLabel("")
	p.dLog.Wrapping = fyne.TextWrapWord
	p.dLog.TextStyle.Monospace = true
	p.copyLog = widget.NewButtonWithIcon("Copy log", theme.ContentCopyIcon(), func() {
		if a := fyne.CurrentApp(); a != nil {
			a.Clipboard().SetContent(p.dLog.Text)
		}
	})
	p.detail = container.NewVBox(p.dTitle, p.dFacts, p.dPrompt, p.dReason,
		container.NewBorder(nil, nil, widget.NewLabelWithStyle("Log", fyne.TextAlignLeading, fyne.TextStyle{Bold: true}), p.copyLog), p.dLog)
	p.detail.Hide()

	list := container.NewVScroll(container.NewVBox(p.empty, p.rows))
	pane := container.NewVScroll(container.NewVBox(p.detailNone, p.detail))
	split := container.NewHSplit(list, pane)
	split.Offset = 0.55
	p.content = container.NewBorder(container.NewBorder(nil, nil, nil, p.Filter, p.summary), nil, nil, nil, split)
	return p
}

// Content is the page's root object.
func (p *JobsPage) Content() fyne.CanvasObject { return p.content }

// Rows is how many jobs are listed.
func (p *JobsPage) Rows() int { return len(p.jobs) }

// Listed is the list as drawn: day headings and job titles, top to bottom
// (tests).
func (p *JobsPage) Listed() []string {
	var out []string
	for _, o := range p.rows.Objects {
		switch v := o.(type) {
		case *widget.Label:
			out = append(out, "# "+v.Text)
		case *jobRow:
			out = append(out, v.job.ID)
		}
	}
	return out
}

func (p *JobsPage) filter() history.Filter {
	switch p.Filter.Selected {
	case FilterDone:
		return history.Filter{Outcome: history.OutcomeDone}
	case FilterFailed:
		return history.Filter{Outcome: history.OutcomeFailed}
	}
	return history.Filter{}
}

// Render draws the counters; without a history it also lists s.Recent.
// The rows are rebuilt only when the list changed, not on every progress
// snapshot of a running job.
func (p *JobsPage) Render(s studio.Snapshot) {
	c := s.Counters
	p.summary.SetText(fmt.Sprintf("Since start: %d done · %d failed · %s turned down", c.Done, c.Failed, plural(c.Rejected, "offer", "offers")))
	if p.deps.History != nil {
		return
	}
	f := p.filter()
	var jobs []history.Job
	for _, info := range s.Recent {
		j := history.FromJobInfo(info, nil)
		if (f.Outcome == history.OutcomeDone && j.Outcome != history.OutcomeDone) || (f.Outcome == history.OutcomeFailed && j.Outcome == history.OutcomeDone) {
			continue
		}
		jobs = append(jobs, j)
	}
	p.showHistory(jobs, nil)
}

// showHistory lists jobs (newest first), grouped by day.
func (p *JobsPage) showHistory(jobs []history.Job, err error) {
	if err != nil {
		p.empty.SetText("The job history could not be read: " + err.Error())
		setRows(p.rows, p.empty, nil)
		p.jobs, p.sig = nil, ""
		return
	}
	var sig strings.Builder
	for _, j := range jobs {
		fmt.Fprintf(&sig, "%s/%s/%d;", j.ID, j.Outcome, j.Finished.UnixNano())
	}
	if sig.String() == p.sig {
		return
	}
	p.sig = sig.String()
	p.jobs = jobs
	p.empty.SetText("No jobs yet. Finished jobs appear here, newest first.")
	if p.Filter.Selected != FilterAll {
		p.empty.SetText("No jobs match this filter.")
	}
	objs := make([]fyne.CanvasObject, 0, len(jobs)+8)
	day := ""
	for _, j := range jobs {
		if d := dayHeading(j.Finished, time.Now()); d != day {
			day = d
			h := widget.NewLabel(d)
			h.TextStyle.Bold = true
			objs = append(objs, h)
		}
		objs = append(objs, newJobRow(j, func() { p.Select(j.ID) }))
	}
	setRows(p.rows, p.empty, objs)
	if p.selected != "" {
		p.Select(p.selected)
	}
}

// dayHeading is "Today", "Yesterday" or "Monday 30 November 2026".
func dayHeading(t, now time.Time) string {
	t, now = t.Local(), now.Local()
	y1, m1, d1 := t.Date()
	y2, m2, d2 := now.Date()
	switch {
	case y1 == y2 && m1 == m2 && d1 == d2:
		return "Today"
	}
	yy, ym, yd := now.AddDate(0, 0, -1).Date()
	if y1 == yy && m1 == ym && d1 == yd {
		return "Yesterday"
	}
	return t.Format("Monday 2 January 2006")
}

// Select shows job id in the detail pane; its log is read off the UI
// goroutine.
func (p *JobsPage) Select(id string) {
	var j *history.Job
	for i := range p.jobs {
		if p.jobs[i].ID == id {
			j = &p.jobs[i]
		}
	}
	if j == nil {
		p.selected = ""
		p.detail.Hide()
		p.detailNone.Show()
		return
	}
	p.selected = id
	p.detailNone.Hide()
	p.detail.Show()
	p.dTitle.SetText(titleCase(jobTitle(studio.JobInfo{Kind: engine.TaskKind(j.Kind), Model: j.Model})) + " — " + outcomeWord(j.Outcome))
	p.dFacts.SetText(jobFacts(*j))
	if j.Prompt != "" {
		p.dPrompt.SetText("Prompt: " + j.Prompt)
		p.dPrompt.Show()
	} else {
		p.dPrompt.Hide()
	}
	if j.Reason != "" {
		p.dReason.SetText("Why it failed: " + j.Reason)
		p.dReason.Show()
	} else {
		p.dReason.Hide()
	}
	p.dLog.SetText("")
	h := p.deps.History
	if h == nil {
		p.dLog.SetText("The job's log is kept with the job history, which is not available.")
		return
	}
	p.deps.async(func() {
		lines, err := h.JobLog(id)
		fyne.Do(func() {
			if p.selected != id {
				return
			}
			p.dLog.SetText(formatJobLog(lines, err))
		})
	})
}

// DetailText is the detail pane's text, top to bottom (tests).
func (p *JobsPage) DetailText() string {
	if !p.detail.Visible() {
		return ""
	}
	var parts []string
	for _, l := range []*widget.Label{p.dTitle, p.dFacts, p.dPrompt, p.dReason, p.dLog} {
		if l.Visible() && l.Text != "" {
			parts = append(parts, l.Text)
		}
	}
	return strings.Join(parts, "\n")
}

// CopyLog presses Copy log (tests).
func (p *JobsPage) CopyLog() { p.copyLog.OnTapped() }

func formatJobLog(lines []history.LogLine, err error) string {
	if err != nil {
		return "The log could not be read: " + err.Error()
	}
	if len(lines) == 0 {
		return "No log lines were kept for this job."
	}
	var b strings.Builder
	for _, l := range lines {
		fmt.Fprintf(&b, "%s %-5s %s\n", l.Time.Local().Format("15:04:05"), l.Level, l.Message)
	}
	return strings.TrimRight(b.String(), "\n")
}

// jobFacts are the timings and figures of a finished job, one per line.
func jobFacts(j history.Job) string {
	var lines []string
	at := func(name string, t time.Time) {
		if !t.IsZero() {
			lines = append(lines, name+" "+t.Local().Format("15:04:05"))
		}
	}
	at("Offered", j.Offered)
	at("Accepted", j.Accepted)
	at("Generating from", j.Started)
	at("Finished", j.Finished)
	lines = append(lines, "Took "+formatDuration(j.Took()))
	if sp := historySpeed(j); sp != "" {
		lines = append(lines, sp)
	}
	if j.PromptTokens > 0 {
		lines = append(lines, fmt.Sprintf("%d prompt tokens", j.PromptTokens))
	}
	if j.Width > 0 && j.Height > 0 {
		lines = append(lines, fmt.Sprintf("%d×%d pixels", j.Width, j.Height))
	}
	if j.Local {
		lines = append(lines, "Asked by this computer's local API, not the studio (not counted in the totals)")
	}
	lines = append(lines, "Job "+j.ID)
	return strings.Join(lines, "\n")
}

func historySpeed(j history.Job) string {
	return speed(studio.JobInfo{Started: j.Offered, Finished: j.Finished,
		Stats: engine.Stats{CompletionTokens: j.CompletionTokens, TokensPerSecond: j.TokensPerSecond, Images: j.Images}})
}

// jobRow is one job in the list; a tap shows it in the detail pane.
type jobRow struct {
	widget.BaseWidget
	job   history.Job
	body  fyne.CanvasObject
	onTap func()
}

func newJobRow(j history.Job, onTap func()) *jobRow {
	r := &jobRow{job: j, onTap: onTap}
	var thumb fyne.CanvasObject
	if len(j.Thumbnail) > 0 {
		img := canvas.NewImageFromReader(bytes.NewReader(j.Thumbnail), j.ID+"-thumb.png")
		img.FillMode = canvas.ImageFillContain
		img.SetMinSize(fyne.NewSize(64, 64))
		thumb = img
	} else {
		icon := theme.DocumentIcon()
		if j.Kind == string(engine.KindImage) {
			icon = theme.MediaPhotoIcon()
		}
		thumb = container.NewGridWrap(fyne.NewSize(64, 64), widget.NewIcon(icon))
	}
	title := widget.NewLabel(titleCase(jobTitle(studio.JobInfo{Kind: engine.TaskKind(j.Kind), Model: j.Model})))
	title.TextStyle.Bold = true
	title.Truncation = fyne.TextTruncateEllipsis

	outcome := widget.NewLabel(outcomeWord(j.Outcome))
	switch j.Outcome {
	case outcomeDone:
		outcome.Importance = widget.SuccessImportance
	case outcomeFailed, outcomeLost:
		outcome.Importance = widget.DangerImportance
	}
	var facts []string
	if !j.Finished.IsZero() {
		facts = append(facts, j.Finished.Local().Format("15:04:05"), "took "+formatDuration(j.Took()))
	}
	if sp := historySpeed(j); sp != "" {
		facts = append(facts, sp)
	}
	if j.Local {
		facts = append(facts, "local")
	}
	facts = append(facts, "job "+j.ID)
	details := widget.NewLabel(strings.Join(facts, " · "))
	details.Truncation = fyne.TextTruncateEllipsis
	body := container.NewVBox(container.NewBorder(nil, nil, nil, outcome, title), details)
	if j.Reason != "" {
		e := widget.NewLabel(j.Reason)
		e.Truncation = fyne.TextTruncateEllipsis
		e.Importance = widget.DangerImportance
		body.Add(e)
	}
	r.body = container.NewVBox(container.NewBorder(nil, nil, thumb, nil, body), widget.NewSeparator())
	r.ExtendBaseWidget(r)
	return r
}

// Tapped is Fyne's tap hook.
func (r *jobRow) Tapped(*fyne.PointEvent) {
	if r.onTap != nil {
		r.onTap()
	}
}

// CreateRenderer is Fyne's widget hook.
func (r *jobRow) CreateRenderer() fyne.WidgetRenderer { return widget.NewSimpleRenderer(r.body) }

func outcomeWord(o string) string {
	switch o {
	case outcomeDone:
		return "Done"
	case outcomeFailed:
		return "Failed"
	case outcomeLost:
		return "Lost"
	case outcomeRunning:
		return "Running"
	}
	return titleCase(o)
}

// Job outcomes as studio.JobInfo documents them.
const (
	outcomeRunning = "running"
	outcomeDone    = "done"
	outcomeFailed  = "failed"
	outcomeLost    = "lost"
)
