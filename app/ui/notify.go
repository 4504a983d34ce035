package ui

import (
	"time"

	"fyne.io/fyne/v2"

	"github.com/minisgg/studio-worker/settings"
	"github.com/minisgg/studio-worker/studio"
)

// UnreachableNotifyAfter is how long the studio must stay unreachable
// before the "cannot reach the studio" notification (issue 11: more than
// 10 minutes).
const UnreachableNotifyAfter = 10 * time.Minute

// Notifier turns worker snapshots into desktop notifications through
// Fyne's notification API, each kind only when its switch is on in the
// settings (all are off by default): a job failed, the studio turned this
// computer down or removed it, an engine crashed, the studio has been
// unreachable for more than UnreachableNotifyAfter. Each event notifies
// once.
type Notifier struct {
	send     func(*fyne.Notification)
	settings func() settings.Settings
	now      func() time.Time

	started     bool
	seen        map[string]bool // finished jobs already looked at
	refused     bool            // in a turned-down / removed state
	downSince   time.Time       // zero while the studio is reachable
	downNotifed bool
}

// NewNotifier returns a notifier; send nil means the current app's
// SendNotification.
func NewNotifier(send func(*fyne.Notification), s func() settings.Settings) *Notifier {
	if send == nil {
		send = func(n *fyne.Notification) {
			if a := fyne.CurrentApp(); a != nil {
				a.SendNotification(n)
			}
		}
	}
	return &Notifier{send: send, settings: s, now: time.Now, seen: map[string]bool{}}
}

// Observe looks at one snapshot. Jobs that had finished before the first
// snapshot it saw never notify.
func (n *Notifier) Observe(s studio.Snapshot) {
	cfg := n.settings()
	first := !n.started
	n.started = true
	for _, j := range s.Recent {
		if n.seen[j.ID] {
			continue
		}
		n.seen[j.ID] = true
		if first || j.Outcome == studio.OutcomeDone || j.Outcome == studio.OutcomeRunning {
			continue
		}
		switch {
		case j.EngineCrashed && cfg.NotifyEngineCrashed:
			n.send(fyne.NewNotification("An engine crashed", titleCase(j.Error)+". The job goes back to the studio; Studio Worker carries on."))
		case cfg.NotifyJobFailed:
			n.send(fyne.NewNotification("A job failed", titleCase(jobTitle(j))+": "+j.Error+"."))
		}
	}
	if len(n.seen) > 4*studio.RecentJobs {
		keep := map[string]bool{}
		for _, j := range s.Recent {
			keep[j.ID] = true
		}
		n.seen = keep
	}

	refused := s.State == studio.StateRejected || (s.State == studio.StateStopped && s.Session == studio.SessionStopped)
	if refused && !n.refused && cfg.NotifyStudioRefused {
		if s.State == studio.StateRejected {
			why := "The studio's operator did not approve this computer"
			if s.Registration.Reason != "" {
				why = "The studio said: " + s.Registration.Reason
			}
			n.send(fyne.NewNotification("The studio turned this computer down", why+". Open Studio Worker to ask again."))
		} else {
			n.send(fyne.NewNotification("The studio stopped this computer", titleCase(s.StopReason)+". Open Studio Worker to register it again."))
		}
	}
	n.refused = refused

	down := s.Session == studio.SessionRetrying ||
		(s.State == studio.StateRegistering && s.Registration.Problem != "")
	switch {
	case !down:
		n.downSince, n.downNotifed = time.Time{}, false
	case n.downSince.IsZero():
		n.downSince = n.now()
	case !n.downNotifed && n.now().Sub(n.downSince) > UnreachableNotifyAfter && cfg.NotifyUnreachable:
		n.downNotifed = true
		n.send(fyne.NewNotification("Cannot reach the studio",
			"Studio Worker has not reached the studio since "+n.downSince.Local().Format("15:04")+". It keeps trying; check this computer's network connection."))
	}
}
