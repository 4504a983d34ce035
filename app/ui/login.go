package ui

import (
	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/container"
	"fyne.io/fyne/v2/dialog"
	"fyne.io/fyne/v2/theme"
	"fyne.io/fyne/v2/widget"

	"github.com/minisgg/studio-worker/studio"
)

// LoginPanel walks the donor through the studio's register-and-approve
// handshake: request sent, waiting for approval (with the request id to
// pass on), then approved or turned down with a way to try again.
type LoginPanel struct {
	deps   *Deps
	parent fyne.Window

	card      *widget.Card
	message   *widget.Label
	requestID *widget.Label
	copyBtn   *widget.Button
	retry     *widget.Button
	dismiss   *widget.Button
	idRow     *fyne.Container

	sawPending bool // the donor watched this handshake, so approval is news
	dismissed  string
	step       string
}

// Login steps, for tests and for the panel's own bookkeeping.
const (
	StepHidden    = ""
	StepSending   = "sending"
	StepPending   = "pending"
	StepApproved  = "approved"
	StepRejected  = "rejected"
	StepStopped   = "stopped"
	stepCopyLabel = "Copy"
)

func newLoginPanel(d *Deps, parent fyne.Window) *LoginPanel {
	l := &LoginPanel{deps: d, parent: parent}
	l.message = widget.NewLabel("")
	l.message.Wrapping = fyne.TextWrapWord
	l.requestID = widget.NewLabel("")
	l.requestID.TextStyle.Monospace = true
	l.requestID.Selectable = true
	l.copyBtn = widget.NewButtonWithIcon(stepCopyLabel, theme.ContentCopyIcon(), l.copyID)
	l.idRow = container.NewHBox(widget.NewLabel("Request id:"), l.requestID, l.copyBtn)
	l.retry = widget.NewButtonWithIcon("Try again", theme.ViewRefreshIcon(), l.startOver)
	l.retry.Importance = widget.HighImportance
	l.dismiss = widget.NewButton("OK", func() {
		l.dismissed = l.deps.Backend.Snapshot().Registration.WorkerID
		l.sawPending = false
		l.card.Hide()
	})
	l.card = widget.NewCard("Sign in to the studio", "", container.NewVBox(l.message, l.idRow, container.NewHBox(l.retry, l.dismiss)))
	l.card.Hide()
	return l
}

// Content is the panel's root object.
func (l *LoginPanel) Content() fyne.CanvasObject { return l.card }

// Step is where the handshake stands on screen.
func (l *LoginPanel) Step() string { return l.step }

func (l *LoginPanel) copyID() {
	fyne.CurrentApp().Clipboard().SetContent(l.requestID.Text)
	l.copyBtn.SetText("Copied")
}

func (l *LoginPanel) startOver() {
	if err := l.deps.Backend.StartOver(); err != nil {
		dialog.ShowError(err, l.parent)
	}
}

// Render shows the handshake's state in s.
func (l *LoginPanel) Render(s studio.Snapshot) {
	reg := s.Registration
	url := s.StudioURL
	if url == "" {
		url = "the studio"
	}
	l.idRow.Hide()
	l.retry.Hide()
	l.dismiss.Hide()
	step := StepHidden
	switch {
	case s.State == studio.StateRejected || reg.State == "rejected":
		step = StepRejected
		l.card.SetTitle("The studio turned this worker down")
		msg := "The studio's operator did not approve this computer."
		if reg.Reason != "" {
			msg = "The studio said: " + reg.Reason
		}
		l.message.SetText(msg + "\nTry again to send a new request; the operator will see it as a new one.")
		l.retry.SetText("Try again")
		l.retry.Show()
	case s.State == studio.StateStopped && s.StopReason != "" && s.Session == studio.SessionStopped:
		step = StepStopped
		l.card.SetTitle("The studio stopped this worker")
		l.message.SetText(titleCase(s.StopReason) + ".\nIf the studio forgot this computer, log out and register it again.")
		l.retry.SetText("Log out and register again")
		l.retry.Show()
	case s.State == studio.StateStopped && s.StopReason != "":
		step = StepStopped
		l.card.SetTitle("The worker stopped")
		l.message.SetText(titleCase(s.StopReason) + ".\nCheck the studio address on the Settings page; saving the settings starts the worker again.")
	case reg.State == "pending" || s.State == studio.StateWaitingApproval:
		step = StepPending
		l.sawPending = true
		l.card.SetTitle("Waiting for approval")
		msg := "Your request reached " + url + ". Ask the studio's operator to approve it, giving them the request id below. This page updates by itself once they have."
		if reg.Problem != "" {
			msg += "\n" + registrationTrouble(reg, "checking the approval")
		}
		l.message.SetText(msg)
		if reg.RequestID != "" {
			if l.requestID.Text != reg.RequestID {
				l.copyBtn.SetText(stepCopyLabel)
			}
			l.requestID.SetText(reg.RequestID)
			l.idRow.Show()
		}
	case s.State == studio.StateRegistering || (reg.State == "none" && s.State == studio.StateStarting):
		step = StepSending
		l.card.SetTitle("Sign in to the studio")
		if reg.Problem != "" {
			l.message.SetText(registrationTrouble(reg, "asking "+url+" to register this computer"))
		} else {
			l.message.SetText("Sending a request to register this computer with " + url + "…")
		}
	case reg.State == "approved" && l.sawPending && l.dismissed != reg.WorkerID:
		step = StepApproved
		l.card.SetTitle("Approved")
		l.message.SetText("The studio approved this computer. It is worker " + reg.WorkerID + ".")
		l.dismiss.Show()
	}
	l.step = step
	if step == StepHidden {
		l.card.Hide()
	} else {
		l.card.Show()
	}
}

// registrationTrouble says why a registration try failed and when the
// next one comes: "Could not go on asking …: the studio could not be
// reached: … Next try at 14:05:30."
func registrationTrouble(reg studio.Registration, doing string) string {
	msg := "Could not go on " + doing + ": " + reg.Problem + "."
	if !reg.NextTry.IsZero() {
		msg += " Next try at " + reg.NextTry.Local().Format("15:04:05") + "."
	}
	return msg + " Check this computer's network connection and the studio address on the Settings page."
}
