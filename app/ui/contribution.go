package ui

import (
	"fmt"
	"strconv"
	"time"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/canvas"
	"fyne.io/fyne/v2/container"
	"fyne.io/fyne/v2/layout"
	"fyne.io/fyne/v2/theme"
	"fyne.io/fyne/v2/widget"

	"github.com/minisgg/studio-worker/app/history"
)

// ContributionCard is the Status page's account of what this computer has
// given the studio: jobs, tokens, images and time working today, over the
// last 7 days and all time, and a chart of jobs per day over the last 30
// days. It is drawn from the job history, so it survives a restart.
type ContributionCard struct {
	card  *widget.Card
	cells [4][3]*widget.Label // rows: jobs, tokens, images, time; columns: today, 7 days, all time
	note  *widget.Label
	chart *BarChart
	axis  [2]*widget.Label
}

func newContributionCard() *ContributionCard {
	c := &ContributionCard{}
	grid := container.NewGridWithColumns(4)
	bold := func(s string) *widget.Label {
		l := widget.NewLabel(s)
		l.TextStyle.Bold = true
		return l
	}
	grid.Add(widget.NewLabel(""))
	for _, h := range []string{"Today", "Last 7 days", "All time"} {
		grid.Add(bold(h))
	}
	for i, name := range []string{"Jobs done", "Tokens", "Images", "Time working"} {
		grid.Add(widget.NewLabel(name))
		for j := range 3 {
			c.cells[i][j] = widget.NewLabel("0")
			grid.Add(c.cells[i][j])
		}
	}
	c.note = widget.NewLabel("")
	c.note.Wrapping = fyne.TextWrapWord
	c.note.Hide()
	c.chart = NewBarChart()
	c.axis[0] = widget.NewLabel("")
	c.axis[1] = widget.NewLabel("today")
	c.axis[0].SizeName, c.axis[1].SizeName = theme.SizeNameCaptionText, theme.SizeNameCaptionText
	axis := container.NewHBox(c.axis[0], layout.NewSpacer(), c.axis[1])
	c.card = widget.NewCard("What this computer has given", "", container.NewVBox(grid, c.note,
		widget.NewLabel("Jobs per day, last 30 days"), c.chart, axis))
	return c
}

// Content is the card.
func (c *ContributionCard) Content() fyne.CanvasObject { return c.card }

// Cell is the text of a figure: row 0 jobs, 1 tokens, 2 images, 3 time;
// column 0 today, 1 last 7 days, 2 all time (tests).
func (c *ContributionCard) Cell(row, col int) string { return c.cells[row][col].Text }

// Chart is the jobs-per-day chart.
func (c *ContributionCard) Chart() *BarChart { return c.chart }

// Render shows s; err, when set, says the history could not be read.
func (c *ContributionCard) Render(s history.Summary, err error) {
	if err != nil {
		c.note.SetText("The totals could not be read from the job history: " + err.Error())
		c.note.Show()
		return
	}
	c.note.Hide()
	for j, t := range []history.Totals{s.Today, s.Week, s.All} {
		jobs := strconv.Itoa(t.Done)
		if t.Failed > 0 {
			jobs += fmt.Sprintf(" (+%d failed)", t.Failed)
		}
		c.cells[0][j].SetText(jobs)
		c.cells[1][j].SetText(formatCount(t.Tokens))
		c.cells[2][j].SetText(strconv.Itoa(t.Images))
		c.cells[3][j].SetText(formatDuration(t.Working.Truncate(time.Second)))
	}
	vals := make([]float64, len(s.Days))
	for i, d := range s.Days {
		vals[i] = float64(d.Jobs)
	}
	c.chart.SetValues(vals)
	if len(s.Days) > 0 {
		c.axis[0].SetText(s.Days[0].Date.Format("Jan 2"))
	}
}

// formatCount prints 1234567 as "1,234,567".
func formatCount(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := n < 0
	if neg {
		s = s[1:]
	}
	out := make([]byte, 0, len(s)+len(s)/3)
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}

// BarChart draws one bar per value, scaled to the largest, with Fyne
// canvas rectangles; an empty day is a thin baseline mark.
type BarChart struct {
	widget.BaseWidget
	values []float64
	max    float64
}

// NewBarChart returns an empty chart.
func NewBarChart() *BarChart {
	c := &BarChart{}
	c.ExtendBaseWidget(c)
	return c
}

// SetValues replaces the bars.
func (c *BarChart) SetValues(v []float64) {
	c.values = append(c.values[:0], v...)
	c.max = 0
	for _, x := range v {
		c.max = max(c.max, x)
	}
	c.Refresh()
}

// Values are the bars' values (tests).
func (c *BarChart) Values() []float64 { return c.values }

// CreateRenderer is Fyne's widget hook.
func (c *BarChart) CreateRenderer() fyne.WidgetRenderer {
	r := &barRenderer{c: c, bg: canvas.NewRectangle(theme.Color(theme.ColorNameInputBackground)),
		peak: canvas.NewText("", theme.Color(theme.ColorNameForeground))}
	r.peak.TextSize = theme.CaptionTextSize()
	r.Refresh()
	return r
}

type barRenderer struct {
	c    *BarChart
	bg   *canvas.Rectangle
	bars []*canvas.Rectangle
	peak *canvas.Text
}

const chartHeight = 110

func (r *barRenderer) MinSize() fyne.Size { return fyne.NewSize(240, chartHeight) }

func (r *barRenderer) Layout(size fyne.Size) {
	r.bg.Resize(size)
	r.bg.Move(fyne.NewPos(0, 0))
	n := len(r.bars)
	if n == 0 {
		return
	}
	top := r.peak.MinSize().Height + 2
	slot := size.Width / float32(n)
	gap := max(slot*0.2, 1)
	for i, b := range r.bars {
		v := r.c.values[i]
		h := float32(1)
		if r.c.max > 0 && v > 0 {
			h = max(float32(v/r.c.max)*(size.Height-top), 2)
		}
		b.Resize(fyne.NewSize(slot-gap, h))
		b.Move(fyne.NewPos(float32(i)*slot+gap/2, size.Height-h))
	}
	r.peak.Move(fyne.NewPos(4, 0))
}

func (r *barRenderer) Refresh() {
	for len(r.bars) < len(r.c.values) {
		r.bars = append(r.bars, canvas.NewRectangle(theme.Color(theme.ColorNamePrimary)))
	}
	r.bars = r.bars[:len(r.c.values)]
	r.bg.FillColor = theme.Color(theme.ColorNameInputBackground)
	for _, b := range r.bars {
		b.FillColor = theme.Color(theme.ColorNamePrimary)
	}
	r.peak.Text = ""
	if r.c.max > 0 {
		r.peak.Text = "most: " + strconv.FormatFloat(r.c.max, 'f', -1, 64) + " a day"
	}
	r.peak.Color = theme.Color(theme.ColorNameForeground)
	r.Layout(r.c.Size())
	canvas.Refresh(r.c)
}

func (r *barRenderer) Objects() []fyne.CanvasObject {
	objs := []fyne.CanvasObject{r.bg}
	for _, b := range r.bars {
		objs = append(objs, b)
	}
	return append(objs, r.peak)
}

func (r *barRenderer) Destroy() {}
