package ui

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/minisgg/studio-worker/assets"
	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/studio"
)

// TrayLook is what the tray shows for a snapshot: the icon and a tooltip
// saying the same in words.
func TrayLook(s studio.Snapshot) (assets.TrayState, string) {
	headline := Headline(s)
	detail := ""
	switch {
	case s.State == studio.StateWorking && s.Current != nil:
		detail = jobTitle(*s.Current)
	case s.IdleReason != "" && !strings.EqualFold(s.IdleReason, headline):
		detail = s.IdleReason
	}
	tip := "Studio Worker: " + strings.ToLower(headline)
	if detail != "" {
		tip += " (" + detail + ")"
	}
	return trayState(s), tip
}

func trayState(s studio.Snapshot) assets.TrayState {
	if s.State == studio.StateWorking && s.Paused && !s.PauseAfterJob {
		return assets.TrayPaused // Pause now: the job is being stopped
	}
	switch s.State {
	case studio.StateWorking:
		return assets.TrayWorking
	case studio.StatePaused, studio.StateHeld:
		return assets.TrayPaused
	case studio.StateIdle:
		return assets.TrayIdle
	case studio.StateRejected, studio.StateStopped:
		return assets.TrayError
	}
	return assets.TrayDisconnected
}

// Headline is the one or two words for the worker's state.
func Headline(s studio.Snapshot) string {
	switch s.State {
	case studio.StateStarting:
		return "Starting"
	case studio.StateRegistering:
		return "Registering"
	case studio.StateWaitingApproval:
		return "Waiting for approval"
	case studio.StateRejected:
		return "Not approved"
	case studio.StateConnecting:
		return "Connecting"
	case studio.StateIdle:
		return "Idle"
	case studio.StateWorking:
		switch {
		case s.PauseAfterJob:
			return "Working, then pausing"
		case s.Paused:
			// Pause now was pressed: the job is being stopped.
			return "Pausing"
		}
		return "Working"
	case studio.StatePaused:
		return "Paused"
	case studio.StateHeld:
		return "On hold"
	case studio.StateStopped:
		return "Stopped"
	}
	if s.State == "" {
		return "Starting"
	}
	return string(s.State)
}

// The controls' words, the same in the window and the tray.
const (
	ActionPauseNow  = "Pause now"
	ActionResume    = "Resume"
	ActionFinishJob = "Finish current job, then pause"
	ActionSnooze    = "Pause for 1 hour"
)

// SnoozeFor is how long ActionSnooze pauses.
const SnoozeFor = time.Hour

// PauseLabel is the label of the tray's pause item and the big button: it
// names what a click does (Pause now, or Resume).
func PauseLabel(s studio.Snapshot) string {
	if s.Paused {
		return ActionResume
	}
	return ActionPauseNow
}

// jobTitle is "llm job, model smollm2" in words.
func jobTitle(j studio.JobInfo) string {
	kind := kindWord(j.Kind)
	if j.Model == "" {
		return kind + " job"
	}
	return kind + " job, model " + j.Model
}

func kindWord(k engine.TaskKind) string {
	switch k {
	case engine.KindLLM:
		return "text"
	case engine.KindImage:
		return "image"
	case "":
		return "unknown"
	}
	return string(k)
}

// phaseWord names a progress phase for people.
func phaseWord(p engine.Phase) string {
	switch p {
	case engine.PhaseDownload:
		return "Downloading the model"
	case engine.PhaseRuntime:
		return "Downloading the engine's runtime"
	case engine.PhaseLoad:
		return "Loading the model"
	case engine.PhaseGenerate:
		return "Generating"
	case "":
		return "Starting"
	}
	return string(p)
}

// formatBytes prints a size in binary units, the way file managers do.
func formatBytes(b uint64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%d B", b)
	}
	div, exp := uint64(unit), 0
	for n := b / unit; n >= unit && exp < 4; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %cB", float64(b)/float64(div), "KMGTP"[exp])
}

// formatGB prints GB figures (2^30 bytes) with at most one decimal.
func formatGB(gb float64) string {
	return strconv.FormatFloat(float64(int64(gb*10+0.5))/10, 'f', -1, 64) + " GB"
}

func bytesToGB(b uint64) float64 { return float64(b) / (1 << 30) }

// formatDuration is short and human: "850 ms", "12 s", "3 min 05 s", "1 h 02 min".
func formatDuration(d time.Duration) string {
	switch {
	case d < 0:
		return "0 s"
	case d < time.Second:
		return fmt.Sprintf("%d ms", d.Milliseconds())
	case d < 10*time.Second:
		return fmt.Sprintf("%.1f s", d.Seconds())
	case d < time.Minute:
		return fmt.Sprintf("%d s", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%d min %02d s", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%d h %02d min", int(d.Hours()), int(d.Minutes())%60)
}

// speed is the Jobs page's figure: tokens per second for text, seconds
// per image for images.
func speed(j studio.JobInfo) string {
	st := j.Stats
	switch {
	case st.TokensPerSecond > 0:
		s := fmt.Sprintf("%.1f tokens/s", st.TokensPerSecond)
		if st.CompletionTokens > 0 {
			s += fmt.Sprintf(" (%d tokens)", st.CompletionTokens)
		}
		return s
	case st.Images > 0 && !j.Finished.IsZero():
		per := j.Finished.Sub(j.Started) / time.Duration(st.Images)
		return fmt.Sprintf("%.1f s per image", per.Seconds())
	}
	return ""
}
