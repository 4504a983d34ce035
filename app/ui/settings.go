package ui

import (
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/container"
	"fyne.io/fyne/v2/dialog"
	"fyne.io/fyne/v2/storage"
	"fyne.io/fyne/v2/theme"
	"fyne.io/fyne/v2/widget"

	"github.com/minisgg/studio-worker/app/update"
	"github.com/minisgg/studio-worker/settings"
	"github.com/minisgg/studio-worker/studio"
)

// Budget slider bounds when the graphics memory is unknown: large enough
// for any consumer card, and never below what the donor already chose.
const (
	unknownBudgetMaxGB = 48
	budgetStepGB       = 0.5
	budgetMinGB        = 0.5
)

// SettingsPage edits the donor's settings. Invalid values are refused in
// place, next to the field, with the reason.
type SettingsPage struct {
	deps   *Deps
	parent fyne.Window

	content fyne.CanvasObject

	url        *widget.Entry
	urlErr     *widget.Label
	budget     *widget.Slider
	budgetVal  *widget.Label
	budgetNote *widget.Label
	budgetErr  *widget.Label
	dir        *widget.Entry
	dirErr     *widget.Label
	choose     *widget.Button

	// The models folder's disk budget (issue #12 item 4).
	diskBudget    *widget.Entry
	diskBudgetErr *widget.Label

	threads    *widget.Entry
	threadsErr *widget.Label
	days       *widget.Entry
	daysErr    *widget.Label
	login      *widget.Check
	minimised  *widget.Check
	localAPI   *widget.Check
	// notify are the notification switches: job failed, studio refused,
	// engine crashed, studio unreachable.
	notify [4]*widget.Check
	// controls are the donor's controls (issue 12): only when away, GPU
	// busy, programs, ceilings, work hours.
	controls *controlsForm
	// Updates (issue #14): the switch, the interval, Check now and what
	// the updater says.
	autoUpdate  *widget.Check
	updateHours *widget.Entry
	updateErr   *widget.Label
	checkNow    *widget.Button
	updateLine  *widget.Label
	save        *widget.Button
	revert      *widget.Button
	result      *widget.Label

	workerID *widget.Label
	about    *widget.Label
	logout   *widget.Button

	vram      studio.VRAM
	vramShown bool
}

func errLabel() *widget.Label {
	l := widget.NewLabel("")
	l.Importance = widget.DangerImportance
	l.Wrapping = fyne.TextWrapWord
	l.Hide()
	return l
}

func newSettingsPage(d *Deps, parent fyne.Window) *SettingsPage {
	p := &SettingsPage{deps: d, parent: parent}
	p.url = widget.NewEntry()
	p.url.SetPlaceHolder(settings.DefaultStudioURL)
	p.url.Validator = func(s string) error {
		if err := settings.ValidateStudioURL(s); err != nil {
			return errors.New(reasonOf(err))
		}
		return nil
	}
	p.urlErr = errLabel()

	p.budget = widget.NewSlider(budgetMinGB, unknownBudgetMaxGB)
	p.budget.Step = budgetStepGB
	p.budgetVal = widget.NewLabel("")
	p.budget.OnChanged = func(float64) { p.showBudget() }
	p.budgetNote = widget.NewLabel("")
	p.budgetNote.Wrapping = fyne.TextWrapWord
	p.budgetErr = errLabel()

	p.dir = widget.NewEntry()
	p.dirErr = errLabel()
	p.choose = widget.NewButtonWithIcon("Choose…", theme.FolderOpenIcon(), p.chooseFolder)

	p.diskBudget = widget.NewEntry()
	p.diskBudget.Validator = func(s string) error {
		_, err := parseDiskBudget(s)
		return err
	}
	p.diskBudgetErr = errLabel()

	p.threads = widget.NewEntry()
	p.threads.Validator = func(s string) error {
		n, err := parseThreads(s)
		if err == nil {
			// The same bound Save applies, so no check mark shows for a
			// value that would then be refused.
			if err = settings.ValidateThreads(n); err != nil {
				err = errors.New(reasonOf(err))
			}
		}
		return err
	}
	p.threadsErr = errLabel()

	p.days = widget.NewEntry()
	p.days.Validator = func(s string) error {
		_, err := parseDays(s)
		return err
	}
	p.daysErr = errLabel()

	p.login = widget.NewCheck("Start Studio Worker when I log in", nil)
	p.minimised = widget.NewCheck("Start minimised to the tray", nil)
	p.localAPI = widget.NewCheck("Serve the local API on 127.0.0.1 (studio-worker status, pause, resume; OpenAI-compatible chat and images with the models on disk)", nil)
	for i, label := range []string{"A job failed", "The studio turned this computer down or removed it",
		"An engine crashed", "The studio cannot be reached for more than 10 minutes"} {
		p.notify[i] = widget.NewCheck(label, nil)
	}

	p.controls = newControlsForm(func() { p.staleResult() })
	p.autoUpdate = widget.NewCheck("Install new versions of Studio Worker by themselves (checked at start and every few hours, never during a job)", nil)
	p.updateHours = widget.NewEntry()
	p.updateHours.Validator = func(s string) error {
		_, err := parseUpdateHours(s)
		return err
	}
	p.updateErr = errLabel()
	p.checkNow = widget.NewButtonWithIcon("Check now", theme.ViewRefreshIcon(), p.CheckNow)
	p.updateLine = widget.NewLabel("")
	p.updateLine.Wrapping = fyne.TextWrapWord
	if d.Updates == nil {
		p.checkNow.Disable()
	}

	p.save = widget.NewButtonWithIcon("Save", theme.DocumentSaveIcon(), p.Save)
	p.save.Importance = widget.HighImportance
	p.revert = widget.NewButton("Undo changes", p.Load)
	p.result = widget.NewLabel("")
	p.result.Wrapping = fyne.TextWrapWord

	p.workerID = widget.NewLabel("")
	p.workerID.Wrapping = fyne.TextWrapWord
	p.logout = widget.NewButtonWithIcon("Log out / reset…", theme.LogoutIcon(), p.confirmLogout)
	p.about = widget.NewLabel("")
	p.about.Wrapping = fyne.TextWrapWord

	cores := fmt.Sprintf("CPU threads for text jobs (0 = automatic, which is %d here; at most %d)",
		settings.Settings{}.EffectiveThreads(), runtime.NumCPU())
	form := container.NewVBox(
		widget.NewLabelWithStyle("Studio address", fyne.TextAlignLeading, fyne.TextStyle{Bold: true}),
		p.url, p.urlErr,
		widget.NewLabelWithStyle("Graphics memory the studio may use", fyne.TextAlignLeading, fyne.TextStyle{Bold: true}),
		container.NewBorder(nil, nil, nil, p.budgetVal, p.budget), p.budgetNote, p.budgetErr,
		widget.NewLabelWithStyle("Models folder", fyne.TextAlignLeading, fyne.TextStyle{Bold: true}),
		container.NewBorder(nil, nil, nil, p.choose, p.dir), p.dirErr,
		widget.NewLabelWithStyle("Disk budget for downloaded models, in GB (0 = none)", fyne.TextAlignLeading, fyne.TextStyle{Bold: true}),
		p.diskBudget, p.diskBudgetErr,
		wrapped("Before a download, the downloaded models used longest ago are deleted to stay within it; a model in use or loaded is kept, and files you put in the models folder yourself are never counted or deleted. A job whose model cannot fit is left to other computers."),
		widget.NewLabelWithStyle(cores, fyne.TextAlignLeading, fyne.TextStyle{Bold: true}),
		p.threads, p.threadsErr,
		widget.NewLabelWithStyle(fmt.Sprintf("Days of job history to keep (0 = the default, %d)", settings.DefaultHistoryDays), fyne.TextAlignLeading, fyne.TextStyle{Bold: true}),
		p.days, p.daysErr,
		p.login, p.minimised, p.localAPI,
		widget.NewLabelWithStyle("Notify me when", fyne.TextAlignLeading, fyne.TextStyle{Bold: true}),
		p.notify[0], p.notify[1], p.notify[2], p.notify[3],
		p.controls.content(),
		widget.NewLabelWithStyle("Updates", fyne.TextAlignLeading, fyne.TextStyle{Bold: true}),
		p.autoUpdate,
		widget.NewLabel(fmt.Sprintf("Hours between two checks (0 = the default, %d)", settings.DefaultUpdateCheckHours)),
		p.updateHours, p.updateErr,
		container.NewHBox(p.checkNow), p.updateLine,
		container.NewHBox(p.save, p.revert),
		p.result,
		widget.NewSeparator(),
		widget.NewLabelWithStyle("Account", fyne.TextAlignLeading, fyne.TextStyle{Bold: true}),
		p.workerID,
		container.NewHBox(p.logout),
		widget.NewSeparator(),
		widget.NewLabelWithStyle("About", fyne.TextAlignLeading, fyne.TextStyle{Bold: true}),
		p.about,
	)
	p.content = container.NewVScroll(form)
	// An error next to a field goes once the donor edits that field.
	p.url.OnChanged = func(string) { hideErr(p.urlErr); p.staleResult() }
	p.dir.OnChanged = func(string) { hideErr(p.dirErr); p.staleResult() }
	p.diskBudget.OnChanged = func(string) { hideErr(p.diskBudgetErr); p.staleResult() }
	p.threads.OnChanged = func(string) { hideErr(p.threadsErr); p.staleResult() }
	p.days.OnChanged = func(string) { hideErr(p.daysErr); p.staleResult() }
	p.updateHours.OnChanged = func(string) { hideErr(p.updateErr); p.staleResult() }
	for _, c := range append([]*widget.Check{p.login, p.minimised, p.localAPI, p.autoUpdate}, p.notify[:]...) {
		c.OnChanged = func(bool) { p.staleResult() }
	}

	p.configureBudget()
	p.Load()
	return p
}

// staleResult clears what the last Save said ("Not saved: …", or
// "Saved. The changes are in effect.", no longer true of an edited form)
// once the donor edits the form again.
func (p *SettingsPage) staleResult() {
	if p.result.Text != "" {
		p.result.SetText("")
	}
}

func hideErr(l *widget.Label) {
	if l.Visible() {
		l.SetText("")
		l.Hide()
	}
}

// Content is the page's root object.
func (p *SettingsPage) Content() fyne.CanvasObject { return p.content }

// Load fills the form from the saved settings.
func (p *SettingsPage) Load() {
	s := p.deps.Settings.Current()
	p.url.SetText(s.StudioURL)
	p.setBudget(s.VRAMBudgetGB)
	p.dir.SetText(s.ModelsDir)
	p.diskBudget.SetText(strconv.FormatFloat(s.ModelsDiskBudgetGB, 'f', -1, 64))
	p.threads.SetText(strconv.Itoa(s.Threads))
	p.days.SetText(strconv.Itoa(s.HistoryDays))
	p.login.SetChecked(s.StartAtLogin)
	p.minimised.SetChecked(s.StartMinimised)
	p.localAPI.SetChecked(!s.LocalAPIOff)
	for i, on := range []bool{s.NotifyJobFailed, s.NotifyStudioRefused, s.NotifyEngineCrashed, s.NotifyUnreachable} {
		p.notify[i].SetChecked(on)
	}
	p.controls.load(s)
	p.autoUpdate.SetChecked(s.AutoUpdate)
	p.updateHours.SetText(strconv.Itoa(s.UpdateCheckHours))
	p.clearErrors()
	p.result.SetText("")
}

// Render follows the detected graphics memory and the account.
func (p *SettingsPage) Render(s studio.Snapshot) {
	p.controls.render(s.Controls)
	if !p.vramShown || s.VRAM.Known != p.vram.Known || s.VRAM.TotalBytes != p.vram.TotalBytes {
		p.vram = s.VRAM
		p.vramShown = true
		v := p.budget.Value
		p.configureBudget()
		p.setBudget(v)
	}
	// The same version the studio sees as agentVersion and the installers carry.
	p.about.SetText("Studio Worker " + s.Version + ", which lends this computer's GPU to the minis.gg studio.")
	switch {
	case s.Registration.WorkerID != "":
		p.workerID.SetText("This computer is worker " + s.Registration.WorkerID + " at " + orStudio(s.StudioURL) + ". Logging out forgets its credentials; it must then be approved again.")
	case s.Registration.State == "pending":
		p.workerID.SetText("Waiting for the studio to approve request " + s.Registration.RequestID + ".")
	default:
		p.workerID.SetText("Not registered with a studio yet.")
	}
}

func orStudio(u string) string {
	if u == "" {
		return "the studio"
	}
	return u
}

// detectedGB is the detected total graphics memory; 0 = unknown.
func (p *SettingsPage) detectedGB() float64 {
	if !p.vram.Known || p.vram.TotalBytes == 0 {
		return 0
	}
	return bytesToGB(p.vram.TotalBytes)
}

// BudgetMax is the slider's upper bound.
func (p *SettingsPage) BudgetMax() float64 { return p.budget.Max }

// configureBudget bounds the slider by the detected memory, or explains
// that it is unknown.
func (p *SettingsPage) configureBudget() {
	if gb := p.detectedGB(); gb > 0 {
		p.budget.Max = max(budgetMinGB, math.Floor(gb/budgetStepGB)*budgetStepGB)
		p.budgetNote.SetText(fmt.Sprintf("This computer has %s of graphics memory; the studio only sends jobs that fit in the budget.", formatGB(gb)))
	} else {
		p.budget.Max = unknownBudgetMaxGB
		p.budgetNote.SetText("The graphics memory of this computer could not be detected (no supported GPU driver answered). Set the budget to at most what your card has: jobs that need more than the card holds will fail.")
	}
	p.budget.Refresh()
}

func (p *SettingsPage) setBudget(v float64) {
	if p.detectedGB() == 0 && v > p.budget.Max {
		// Unknown memory: never cut a budget the donor chose.
		p.budget.Max = math.Ceil(v)
	}
	clamped := min(max(v, p.budget.Min), p.budget.Max)
	p.budget.SetValue(clamped)
	p.showBudget()
	if clamped < v {
		p.budgetErr.SetText(fmt.Sprintf("Your saved budget of %s is more than this computer has; Save to lower it to %s.", formatGB(v), formatGB(clamped)))
		p.budgetErr.Show()
	}
}

func (p *SettingsPage) showBudget() {
	p.budgetVal.SetText(formatGB(p.budget.Value))
}

func (p *SettingsPage) chooseFolder() {
	d := dialog.NewFolderOpen(func(u fyne.ListableURI, err error) {
		if err != nil {
			p.showFieldError(&settings.FieldError{Field: settings.FieldModelsDir, Reason: err.Error()})
			return
		}
		if u == nil {
			return // cancelled
		}
		p.dir.SetText(u.Path())
	}, p.parent)
	if st, err := os.Stat(settings.ExpandHome(p.dir.Text)); err == nil && st.IsDir() {
		if l, err := storage.ListerForURI(storage.NewFileURI(settings.ExpandHome(p.dir.Text))); err == nil {
			d.SetLocation(l)
		}
	}
	d.Resize(fyne.NewSize(760, 520))
	d.Show()
}

func parseDays(s string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return 0, errors.New("must be a whole number of days; 0 keeps the default")
	}
	v := settings.Settings{HistoryDays: n}
	if n < 0 || v.EffectiveHistoryDays() != n && n != 0 {
		return 0, fmt.Errorf("must be between 0 (the default, %d) and 3650 days", settings.DefaultHistoryDays)
	}
	return n, nil
}

// parseDiskBudget reads the disk budget entry: a number of GB, 0 for none.
func parseDiskBudget(s string) (float64, error) {
	v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil {
		return 0, errors.New("must be a number of GB; 0 means no budget")
	}
	if err := settings.ValidateModelsDiskBudget(v); err != nil {
		return 0, errors.New(reasonOf(err))
	}
	return v, nil
}

func wrapped(text string) *widget.Label {
	l := widget.NewLabel(text)
	l.Wrapping = fyne.TextWrapWord
	return l
}

func parseUpdateHours(s string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 0 || n > 720 {
		return 0, fmt.Errorf("must be a whole number of hours between 0 (the default, %d) and 720", settings.DefaultUpdateCheckHours)
	}
	return n, nil
}

// CheckNow asks the updater to check the release feed now (and install
// what it finds, between jobs); UpdateStatus shows how it goes.
func (p *SettingsPage) CheckNow() {
	if p.deps.Updates == nil {
		return
	}
	p.updateLine.SetText("Checking for a new version…")
	p.deps.Updates.CheckNow()
}

// UpdateStatus shows what the updater says (on the UI goroutine).
func (p *SettingsPage) UpdateStatus(st update.Status) {
	line := st.Line
	if st.State == update.StateDownloading && st.Total > 0 {
		line = fmt.Sprintf("%s %d%% of %s", line, st.Done*100/st.Total, formatBytes(uint64(st.Total)))
	}
	p.updateLine.SetText(line)
	busy := st.State == update.StateChecking || st.State == update.StateDownloading || st.State == update.StateWaiting ||
		st.State == update.StateInstalling || st.State == update.StateRestarting
	if busy {
		p.checkNow.Disable()
	} else {
		p.checkNow.Enable()
	}
}

// UpdateLine is what the Updates block says now.
func (p *SettingsPage) UpdateLine() string { return p.updateLine.Text }

func parseThreads(s string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return 0, errors.New("must be a whole number: 0 for automatic, or how many CPU threads to use")
	}
	if n < 0 {
		return 0, errors.New("cannot be negative; 0 means automatic")
	}
	return n, nil
}

// Form reads the settings the form describes, on top of the saved ones
// (fields the page does not show are kept).
func (p *SettingsPage) Form() (settings.Settings, error) {
	s := p.deps.Settings.Current()
	s.StudioURL = strings.TrimSpace(p.url.Text)
	s.VRAMBudgetGB = p.budget.Value
	s.ModelsDir = strings.TrimSpace(p.dir.Text)
	var errs []error
	if n, err := parseThreads(p.threads.Text); err != nil {
		errs = append(errs, &settings.FieldError{Field: settings.FieldThreads, Reason: err.Error()})
	} else {
		s.Threads = n
	}
	if gb, err := strconv.ParseFloat(strings.TrimSpace(p.diskBudget.Text), 64); err != nil {
		errs = append(errs, &settings.FieldError{Field: settings.FieldModelsDiskBudget, Reason: "must be a number of GB; 0 means no budget"})
	} else {
		s.ModelsDiskBudgetGB = gb // its range is settings.Validate's
	}
	if days, err := parseDays(p.days.Text); err != nil {
		errs = append(errs, &settings.FieldError{Field: settings.FieldHistoryDays, Reason: err.Error()})
	} else {
		s.HistoryDays = days
	}
	if h, err := parseUpdateHours(p.updateHours.Text); err != nil {
		errs = append(errs, &settings.FieldError{Field: settings.FieldUpdateHours, Reason: err.Error()})
	} else {
		s.UpdateCheckHours = h
	}
	s.AutoUpdate = p.autoUpdate.Checked
	s.StartAtLogin = p.login.Checked
	s.StartMinimised = p.minimised.Checked
	s.LocalAPIOff = !p.localAPI.Checked
	s.NotifyJobFailed, s.NotifyStudioRefused = p.notify[0].Checked, p.notify[1].Checked
	s.NotifyEngineCrashed, s.NotifyUnreachable = p.notify[2].Checked, p.notify[3].Checked
	errs = append(errs, p.controls.read(&s)...)
	return s, errors.Join(errs...)
}

// Save validates the form, refuses an invalid value next to its field, and
// otherwise saves and applies the settings.
func (p *SettingsPage) Save() {
	p.clearErrors()
	p.result.SetText("")
	s, problems := p.check()
	if len(problems) > 0 {
		for _, err := range problems {
			p.showFieldError(err)
		}
		if len(problems) == 1 {
			p.result.SetText("Not saved: fix the field marked above.")
		} else {
			p.result.SetText(fmt.Sprintf("Not saved: fix the %d fields marked above.", len(problems)))
		}
		return
	}
	note, err := p.deps.Settings.Save(s)
	if err != nil {
		p.deps.log().Warn("settings not saved: "+err.Error(), "op", "settings")
		p.showFieldError(err)
		p.result.SetText("Not saved: " + err.Error())
		return
	}
	// The settings store logs "settings saved and applied" itself.
	msg := "Saved. The changes are in effect."
	if note != "" {
		msg = "Saved. " + note
	}
	p.result.SetText(msg)
}

// check reads the form and finds every field that cannot be saved, each
// with its own reason, in the order of the page: settings.Validate stops
// at the first, so each field it refuses is set back to its saved value
// and the rest checked again.
func (p *SettingsPage) check() (settings.Settings, []error) {
	var problems []error
	s, err := p.Form()
	seen := map[string]bool{}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		// Fields that are not even numbers keep their saved values
		// in s (Form leaves them), so the rest can still be checked.
		for _, e := range j.Unwrap() {
			problems = append(problems, e)
			var fe *settings.FieldError
			if errors.As(e, &fe) {
				seen[fe.Field] = true
			}
		}
	}
	saved := p.deps.Settings.Current()
	probe := s
	for range 16 {
		err := probe.Validate(p.detectedGB())
		if err == nil {
			break
		}
		var fe *settings.FieldError
		if !errors.As(err, &fe) {
			problems = append(problems, err)
			break
		}
		if seen[fe.Field] {
			break
		}
		seen[fe.Field] = true
		problems = append(problems, err)
		if !resetField(&probe, saved, fe.Field) {
			break
		}
	}
	return s, problems
}

// resetField sets field of s back to its value in saved; false when the
// field is not one it knows.
func resetField(s *settings.Settings, saved settings.Settings, field string) bool {
	switch field {
	case settings.FieldStudioURL:
		s.StudioURL = saved.StudioURL
		if settings.ValidateStudioURL(s.StudioURL) != nil {
			s.StudioURL = settings.DefaultStudioURL
		}
	case settings.FieldVRAMBudgetGB:
		s.VRAMBudgetGB = budgetMinGB
	case settings.FieldModelsDir:
		s.ModelsDir = os.TempDir()
	case settings.FieldThreads:
		s.Threads = 0
	case settings.FieldKeepAlive:
		s.EngineKeepAliveMinutes = 0
	case settings.FieldDiskReserve:
		s.DiskReserveGB = 0
	case settings.FieldModelsDiskBudget:
		s.ModelsDiskBudgetGB = 0
	case settings.FieldHistoryDays:
		s.HistoryDays = 0
	case settings.FieldUpdateHours:
		s.UpdateCheckHours = 0
	case settings.FieldUpdateFeed:
		s.UpdateFeedURL = ""
	case settings.FieldLlamaLibDir:
		s.LlamaLibDir = ""
	case settings.FieldSDLibPath:
		s.SDLibPath = ""
	default:
		return resetControlField(s, saved, field)
	}
	return true
}

func (p *SettingsPage) clearErrors() {
	for _, l := range append([]*widget.Label{p.urlErr, p.budgetErr, p.dirErr, p.diskBudgetErr, p.threadsErr, p.daysErr, p.updateErr}, p.controls.errLabels()...) {
		l.SetText("")
		l.Hide()
	}
}

// FieldError returns the error shown next to a field ("" = none).
func (p *SettingsPage) FieldError(field string) string {
	if l := p.errLabelFor(field); l != nil && l.Visible() {
		return l.Text
	}
	return ""
}

func (p *SettingsPage) errLabelFor(field string) *widget.Label {
	switch field {
	case settings.FieldStudioURL:
		return p.urlErr
	case settings.FieldVRAMBudgetGB:
		return p.budgetErr
	case settings.FieldModelsDir:
		return p.dirErr
	case settings.FieldModelsDiskBudget:
		return p.diskBudgetErr
	case settings.FieldThreads:
		return p.threadsErr
	case settings.FieldHistoryDays:
		return p.daysErr
	case settings.FieldUpdateHours:
		return p.updateErr
	}
	return p.controls.errLabelFor(field)
}

func (p *SettingsPage) showFieldError(err error) {
	var fe *settings.FieldError
	if !errors.As(err, &fe) {
		return
	}
	if l := p.errLabelFor(fe.Field); l != nil {
		l.SetText(titleCase(fe.Reason) + ".")
		l.Show()
	}
}

// reasonOf is a FieldError's reason alone, for an entry's own error icon.
func reasonOf(err error) string {
	var fe *settings.FieldError
	if errors.As(err, &fe) {
		return fe.Reason
	}
	return err.Error()
}

func (p *SettingsPage) confirmLogout() {
	dialog.ShowConfirm("Log out of the studio?",
		"This computer forgets its worker credentials and sends a new registration request, which the studio's operator must approve again.",
		func(ok bool) {
			if !ok {
				return
			}
			if err := p.deps.Backend.StartOver(); err != nil {
				dialog.ShowError(err, p.parent)
			}
		}, p.parent)
}
