package ui

import (
	"fmt"
	"log/slog"
	"strings"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/container"
	"fyne.io/fyne/v2/theme"
	"fyne.io/fyne/v2/widget"

	"github.com/minisgg/studio-worker/logging"
)

// Level filter choices, lowest first.
var logLevels = []struct {
	label string
	level slog.Level
}{
	{"Everything (debug)", slog.LevelDebug},
	{"Info and above", slog.LevelInfo},
	{"Warnings and errors", slog.LevelWarn},
	{"Errors only", slog.LevelError},
}

// LogsPage shows the in-memory log ring live, with a level filter, a
// search box, follow and copy.
type LogsPage struct {
	src LogSource

	content fyne.CanvasObject
	level   *widget.Select
	search  *widget.Entry
	follow  *widget.Check
	copyBtn *widget.Button
	count   *widget.Label
	list    *widget.List
	detail  *widget.Label

	min   slog.Level
	shown []string // formatted lines passing the filter
}

func newLogsPage(src LogSource) *LogsPage {
	p := &LogsPage{src: src, min: slog.LevelInfo}
	labels := make([]string, len(logLevels))
	for i, l := range logLevels {
		labels[i] = l.label
	}
	p.level = widget.NewSelect(labels, func(choice string) {
		for _, l := range logLevels {
			if l.label == choice {
				p.min = l.level
			}
		}
		p.Reload()
	})
	p.level.SetSelected(logLevels[1].label)
	p.search = widget.NewEntry()
	p.search.SetPlaceHolder("Search the log")
	p.search.OnChanged = func(string) { p.Reload() }
	p.follow = widget.NewCheck("Follow", nil)
	p.follow.SetChecked(true)
	p.copyBtn = widget.NewButtonWithIcon("Copy", theme.ContentCopyIcon(), p.copyShown)
	p.count = widget.NewLabel("")
	p.detail = widget.NewLabel("Select a line to see all of it here.")
	p.detail.Wrapping = fyne.TextWrapWord
	p.detail.Selectable = true

	p.list = widget.NewList(
		func() int { return len(p.shown) },
		func() fyne.CanvasObject {
			l := widget.NewLabel("")
			l.TextStyle.Monospace = true
			l.Truncation = fyne.TextTruncateEllipsis
			return l
		},
		func(id widget.ListItemID, o fyne.CanvasObject) {
			if id < len(p.shown) {
				o.(*widget.Label).SetText(p.shown[id])
			}
		})
	p.list.OnSelected = func(id widget.ListItemID) {
		if id < len(p.shown) {
			p.detail.SetText(p.shown[id])
		}
	}

	p.follow.OnChanged = func(on bool) {
		if on {
			p.list.ScrollToBottom()
		}
	}

	// Wide enough for the longest level choice, which a Select would cut.
	level := container.NewGridWrap(fyne.NewSize(220, p.level.MinSize().Height), p.level)
	bar := container.NewBorder(nil, nil, level, container.NewHBox(p.follow, p.copyBtn, p.count), p.search)
	p.content = container.NewBorder(bar, p.detail, nil, nil, p.list)
	p.Reload()
	return p
}

// Content is the page's root object.
func (p *LogsPage) Content() fyne.CanvasObject { return p.content }

// Shown returns the lines that pass the filter, oldest first.
func (p *LogsPage) Shown() []string { return append([]string(nil), p.shown...) }

// Reload re-reads the ring and applies the filter. It runs on the UI
// goroutine, after each change notification from the ring.
func (p *LogsPage) Reload() {
	if p.src == nil || p.list == nil {
		return
	}
	needle := strings.ToLower(strings.TrimSpace(p.search.Text))
	entries := p.src.Entries()
	shown := p.shown[:0]
	for _, e := range entries {
		if e.Level < p.min {
			continue
		}
		line := FormatLogLine(e)
		if needle != "" && !strings.Contains(strings.ToLower(line), needle) {
			continue
		}
		shown = append(shown, line)
	}
	p.shown = shown
	p.count.SetText(fmt.Sprintf("%d of %d lines", len(shown), len(entries)))
	p.list.Refresh()
	if p.follow.Checked {
		p.list.ScrollToBottom()
	}
}

func (p *LogsPage) copyShown() {
	fyne.CurrentApp().Clipboard().SetContent(strings.Join(p.shown, "\n"))
	p.count.SetText(fmt.Sprintf("copied %d lines", len(p.shown)))
}

// FormatLogLine is one entry as the Logs page and the clipboard show it.
func FormatLogLine(e logging.Entry) string {
	var b strings.Builder
	b.WriteString(e.Time.Local().Format("15:04:05"))
	b.WriteByte(' ')
	fmt.Fprintf(&b, "%-5s ", levelWord(e.Level))
	if e.Op != "" {
		b.WriteString("[" + e.Op + "] ")
	}
	b.WriteString(e.Text())
	if e.Job != "" {
		b.WriteString(" job=" + e.Job)
	}
	return b.String()
}

func levelWord(l slog.Level) string {
	switch {
	case l >= slog.LevelError:
		return "ERROR"
	case l >= slog.LevelWarn:
		return "WARN"
	case l >= slog.LevelInfo:
		return "INFO"
	}
	return "DEBUG"
}
