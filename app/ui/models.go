package ui

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/container"
	"fyne.io/fyne/v2/dialog"
	"fyne.io/fyne/v2/theme"
	"fyne.io/fyne/v2/widget"

	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/studio"
)

// ModelsPage lists what is in the models folder, with sizes, the model in
// memory, disk use and free space, and a delete button per model.
type ModelsPage struct {
	deps   *Deps
	parent fyne.Window

	content fyne.CanvasObject
	folder  *widget.Label
	usage   *widget.Label
	budget  *widget.Label // the disk budget and what it counts
	leftOut *widget.Label // the donor's .gguf files not offered, and why
	problem *widget.Label
	empty   *widget.Label
	rows    *fyne.Container

	models []engine.StoredModel
	seen   modelsView // what the list was last read for
	read   bool       // the list was read at least once
}

// modelsView is what, in a snapshot, can change the Models page: a finished
// job (it may have downloaded a model), a job starting or moving on (its
// model is in use; a download ends), and the model held in memory (a job
// loads one; pausing releases it, which on a CPU-only computer changes no
// VRAM figure, so the resident file itself is compared).
type modelsView struct {
	finished int
	job      string
	started  time.Time
	phase    engine.Phase
	resident string
}

type modelListing struct {
	models    []engine.StoredModel
	used      uint64
	free      uint64
	budget    engine.BudgetUse
	budgetErr error
	leftOut   []engine.LeftOutModel
	listErr   error
	usageErr  error
	freeErr   error
	resident  string // path of the model file held in memory
	folderDir string
}

func newModelsPage(d *Deps, parent fyne.Window) *ModelsPage {
	p := &ModelsPage{deps: d, parent: parent}
	p.folder = widget.NewLabel("")
	p.folder.Wrapping = fyne.TextWrapWord
	p.usage = widget.NewLabel("")
	p.budget = widget.NewLabel("")
	p.budget.Wrapping = fyne.TextWrapWord
	p.leftOut = widget.NewLabel("")
	p.leftOut.Wrapping = fyne.TextWrapWord
	p.leftOut.Importance = widget.WarningImportance
	p.leftOut.Hide()
	p.problem = widget.NewLabel("")
	p.problem.Wrapping = fyne.TextWrapWord
	p.problem.Importance = widget.DangerImportance
	p.problem.Hide()
	p.empty = widget.NewLabel("No models yet. A model is downloaded the first time a job needs it.")
	p.empty.Wrapping = fyne.TextWrapWord
	p.rows = container.NewVBox()
	refresh := widget.NewButtonWithIcon("Refresh", theme.ViewRefreshIcon(), p.Reload)
	head := container.NewVBox(container.NewBorder(nil, nil, nil, refresh, p.folder), p.usage, p.budget, p.leftOut, p.problem)
	p.content = container.NewBorder(head, nil, nil, nil, container.NewVScroll(container.NewVBox(p.empty, p.rows)))
	return p
}

// Content is the page's root object.
func (p *ModelsPage) Content() fyne.CanvasObject { return p.content }

// Models returns the models listed now.
func (p *ModelsPage) Models() []engine.StoredModel { return p.models }

// Render re-reads the folder when the snapshot says something the list
// shows has changed (see modelsView); progress alone does not.
func (p *ModelsPage) Render(s studio.Snapshot) {
	v := modelsView{finished: s.Counters.Done + s.Counters.Failed}
	if s.Current != nil {
		v.job, v.started, v.phase = s.Current.ID, s.Current.Started, s.Current.Phase
	}
	if p.deps.ResidentModel != nil {
		v.resident = p.deps.ResidentModel()
	}
	if !p.read || v != p.seen {
		p.read, p.seen = true, v
		p.Reload()
	}
}

// Reload lists the folder off the UI goroutine and shows the result.
func (p *ModelsPage) Reload() {
	if p.deps.Models == nil {
		p.folder.SetText("The models folder is not available.")
		return
	}
	dir := p.deps.Models.Root()
	p.deps.async(func() {
		l := modelListing{folderDir: dir}
		l.models, l.listErr = p.deps.Models.List()
		l.used, l.usageErr = p.deps.Models.DiskUsage()
		l.free, l.freeErr = p.deps.Models.FreeSpace()
		l.budget, l.budgetErr = p.deps.Models.BudgetUse()
		l.leftOut = p.deps.Models.LooseLeftOut()
		if p.deps.ResidentModel != nil {
			l.resident = p.deps.ResidentModel()
		}
		fyne.Do(func() { p.show(l) })
	})
}

func (p *ModelsPage) show(l modelListing) {
	p.models = l.models
	if l.folderDir != "" {
		p.folder.SetText("Models folder: " + l.folderDir)
	} else {
		p.folder.SetText("Models folder")
	}
	usage := ""
	switch {
	case l.usageErr != nil:
		usage = "Disk use unknown"
	default:
		usage = engine.FormatSize(l.used) + " used by models"
	}
	if l.freeErr == nil {
		usage += " · " + engine.FormatSize(l.free) + " free on this disk"
	}
	p.usage.SetText(usage)
	p.budget.SetText(budgetText(l.budget, l.budgetErr))
	if t := leftOutText(l.leftOut); t != "" {
		p.leftOut.SetText(t)
		p.leftOut.Show()
	} else {
		p.leftOut.Hide()
	}
	if err := errors.Join(l.listErr, l.usageErr, l.freeErr); err != nil {
		p.problem.SetText(err.Error())
		p.problem.Show()
	} else {
		p.problem.Hide()
	}
	objs := make([]fyne.CanvasObject, 0, len(l.models))
	for _, m := range l.models {
		objs = append(objs, p.modelRow(m, holds(m, l.resident)))
	}
	setRows(p.rows, p.empty, objs)
}

// leftOutText says which of the donor's own .gguf files are not offered to
// the studio, and why; "" when none.
func leftOutText(left []engine.LeftOutModel) string {
	if len(left) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("Not offered to the studio (fix or replace the file to use it):")
	for _, l := range left {
		b.WriteString("\n" + l.Name + ": " + l.Reason)
	}
	return b.String()
}

// budgetText is the Models page's line on the models folder's disk budget,
// sizes in the page's one unit formatting (engine.FormatSize).
func budgetText(u engine.BudgetUse, err error) string {
	if err != nil {
		return "Disk budget: use unknown"
	}
	if u.BudgetBytes == 0 {
		return "Disk budget: " + u.String() + "; set one on the Settings page to have the models used longest ago deleted when a download needs room."
	}
	if over := u.Over(); over > 0 {
		return "Disk budget: " + u.String() + ", over the budget by " + engine.FormatSize(over) +
			": the models used longest ago go at the next download that needs room (never one in use or loaded); files you put in the models folder yourself are not counted and never deleted."
	}
	return "Disk budget: " + u.String() + ". When a download needs room, the models used longest ago are deleted (never one in use or loaded); files you put in the models folder yourself are not counted and never deleted."
}

// holds says whether the model file at path lives in m's folder.
func holds(m engine.StoredModel, path string) bool {
	return path != "" && m.Dir != "" && filepath.Dir(filepath.Clean(path)) == filepath.Clean(m.Dir)
}

func (p *ModelsPage) modelRow(m engine.StoredModel, loaded bool) fyne.CanvasObject {
	name := widget.NewLabel(m.ID)
	name.TextStyle.Bold = true
	name.Truncation = fyne.TextTruncateEllipsis
	facts := engine.FormatSize(m.Bytes)
	if m.Engine != "" {
		facts += " · " + string(m.Engine)
	}
	partial := 0
	for _, f := range m.Files {
		if f.Partial {
			partial++
		}
	}
	if partial > 0 {
		facts += fmt.Sprintf(" · %d unfinished download(s)", partial)
	}
	switch {
	case loaded:
		facts += " · loaded in memory"
	case m.InUse:
		facts += " · in use by a job"
	}
	if !m.Downloaded {
		facts += " · not downloaded by the worker: the disk budget never deletes it"
	}
	info := widget.NewLabel(facts)
	del := widget.NewButtonWithIcon("Delete", theme.DeleteIcon(), func() { p.confirmDelete(m.ID) })
	del.Importance = widget.DangerImportance
	if m.InUse {
		del.Disable()
	}
	return container.NewVBox(container.NewBorder(nil, nil, nil, container.NewCenter(del), container.NewVBox(name, info)), widget.NewSeparator())
}

func (p *ModelsPage) confirmDelete(id string) {
	dialog.ShowConfirm("Delete "+id+"?",
		"Its files are removed from the models folder. A job that needs it later downloads it again.",
		func(ok bool) {
			if ok {
				p.delete(id)
			}
		}, p.parent)
}

func (p *ModelsPage) delete(id string) {
	if err := p.deps.Models.Delete(id); err != nil {
		p.deps.log().Warn("could not delete model "+id+": "+err.Error(), "op", "models", "model", id)
		dialog.ShowError(err, p.parent)
	}
	p.Reload()
}
