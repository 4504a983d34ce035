package ui

import (
	"bytes"
	"fmt"
	"strings"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/canvas"
	"fyne.io/fyne/v2/container"
	"fyne.io/fyne/v2/theme"
	"fyne.io/fyne/v2/widget"

	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/studio"
)

// JobsPage lists the recent jobs, newest first.
type JobsPage struct {
	content fyne.CanvasObject
	summary *widget.Label
	empty   *widget.Label
	rows    *fyne.Container
	sig     string
}

func newJobsPage() *JobsPage {
	p := &JobsPage{}
	p.summary = widget.NewLabel("")
	p.empty = widget.NewLabel("No jobs yet. Finished jobs appear here, newest first.")
	p.rows = container.NewVBox()
	p.content = container.NewBorder(p.summary, nil, nil, nil,
		container.NewVScroll(container.NewVBox(p.empty, p.rows)))
	return p
}

// Content is the page's root object.
func (p *JobsPage) Content() fyne.CanvasObject { return p.content }

// Rows is how many jobs are listed.
func (p *JobsPage) Rows() int { return len(p.rows.Objects) }

// Render lists s.Recent. The rows are rebuilt only when the list changed,
// not on every progress snapshot of a running job.
func (p *JobsPage) Render(s studio.Snapshot) {
	c := s.Counters
	p.summary.SetText(fmt.Sprintf("%d done · %d failed · %s turned down", c.Done, c.Failed, plural(c.Rejected, "offer", "offers")))
	var sig strings.Builder
	for _, j := range s.Recent {
		fmt.Fprintf(&sig, "%s/%s/%d;", j.ID, j.Outcome, j.Finished.UnixNano())
	}
	if sig.String() == p.sig {
		return
	}
	p.sig = sig.String()
	objs := make([]fyne.CanvasObject, 0, len(s.Recent))
	for _, j := range s.Recent {
		objs = append(objs, jobRow(j))
	}
	setRows(p.rows, p.empty, objs)
}

func jobRow(j studio.JobInfo) fyne.CanvasObject {
	var thumb fyne.CanvasObject
	if len(j.Thumbnail) > 0 {
		img := canvas.NewImageFromReader(bytes.NewReader(j.Thumbnail), j.ID+"-thumb.png")
		img.FillMode = canvas.ImageFillContain
		img.SetMinSize(fyne.NewSize(64, 64))
		thumb = img
	} else {
		icon := theme.DocumentIcon()
		if j.Kind == engine.KindImage {
			icon = theme.MediaPhotoIcon()
		}
		ic := widget.NewIcon(icon)
		thumb = container.NewGridWrap(fyne.NewSize(64, 64), ic)
	}

	title := widget.NewLabel(titleCase(jobTitle(j)))
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
		facts = append(facts, j.Finished.Local().Format("15:04:05"))
		facts = append(facts, "took "+formatDuration(j.Finished.Sub(j.Started)))
	}
	if sp := speed(j); sp != "" {
		facts = append(facts, sp)
	}
	facts = append(facts, "job "+j.ID)
	details := widget.NewLabel(strings.Join(facts, " · "))
	details.Truncation = fyne.TextTruncateEllipsis

	body := container.NewVBox(container.NewBorder(nil, nil, nil, outcome, title), details)
	if j.Error != "" {
		e := widget.NewLabel(j.Error)
		e.Wrapping = fyne.TextWrapWord
		e.Importance = widget.DangerImportance
		body.Add(e)
	}
	return container.NewVBox(container.NewBorder(nil, nil, thumb, nil, body), widget.NewSeparator())
}

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
