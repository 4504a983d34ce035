package studio

import (
	"time"

	"github.com/minisgg/studio-worker/controls"
	"github.com/minisgg/studio-worker/engine"
)

// WorkerState is the one word the tray and the Status page show.
type WorkerState string

const (
	StateStarting        WorkerState = "starting"
	StateRegistering     WorkerState = "registering"      // register-request not yet accepted
	StateWaitingApproval WorkerState = "waiting-approval" // pending, polling every 30 s
	StateRejected        WorkerState = "rejected"         // the studio said no; Reason says why
	StateConnecting      WorkerState = "connecting"       // approved, no welcome yet
	StateIdle            WorkerState = "idle"             // connected, waiting for an offer
	StateWorking         WorkerState = "working"
	StatePaused          WorkerState = "paused"
	// StateHeld is connected but held by a control other than the donor's
	// pause (work hours, only when idle, GPU busy…); IdleReason says which.
	StateHeld    WorkerState = "held"
	StateStopped WorkerState = "stopped" // session ended for good (401, 4003, error frame…)
)

// SessionState is the state of the WebSocket session.
type SessionState string

const (
	SessionOffline    SessionState = "offline" // no credentials yet
	SessionConnecting SessionState = "connecting"
	SessionConnected  SessionState = "connected"
	SessionRetrying   SessionState = "retrying" // waiting out the backoff
	SessionStopped    SessionState = "stopped"  // fatal; StopReason says why
)

// Registration is where the register-and-approve handshake stands.
type Registration struct {
	State     string // "none", "pending", "approved", "rejected"
	RequestID string
	WorkerID  string
	Reason    string // rejection reason
	// Problem is why the last try to ask or check failed, in words ("the
	// studio could not be reached: …"); "" when it went through.
	Problem string
	// NextTry is when the registrar tries again after a Problem.
	NextTry time.Time
}

// JobInfo describes one job for the Status and Jobs pages.
type JobInfo struct {
	ID    string
	Kind  engine.TaskKind
	Model string
	Phase engine.Phase
	Done  int64  // progress within Phase
	Total int64  // 0 = unknown
	Note  string // a passing state beside the figures (a stalled download); "" when none
	// Started is when the offer came (the job took the one-job gate).
	Started time.Time
	// Accepted is when the studio was told yes; zero until then, and for a
	// job reported from the journal after a restart.
	Accepted time.Time
	// Generating is when the engine began generating (the first progress
	// of the generate phase); zero when it never did.
	Generating time.Time
	Finished   time.Time // zero while running
	Outcome    string    // "running", "done", "failed", "lost"
	Error      string    // in words a donor understands
	// EngineCrashed says the engine's process died or hung on this job
	// (an engine.CrashError) or the engine panicked.
	EngineCrashed bool
	Stats         engine.Stats
	Ext           string
	// Prompt is the task's prompt (the last chat message for text), cut
	// to PromptChars runes, for the history's detail pane.
	Prompt string
	// Width and Height are an image task's size in pixels; 0 otherwise.
	Width, Height int
	// Thumbnail is a small PNG of an image result, for the Jobs page.
	Thumbnail []byte
	// Local marks a job asked for on this computer through the local API
	// (Worker.RunLocal): the studio never saw it, and it counts toward
	// none of the studio's totals.
	Local bool
}

// PromptChars bounds JobInfo.Prompt, in runes.
const PromptChars = 300

// shortPrompt cuts p to PromptChars runes, marking the cut with "…".
func shortPrompt(p string) string {
	r := []rune(p)
	if len(r) <= PromptChars {
		return p
	}
	return string(r[:PromptChars-1]) + "…"
}

// Counters add up over the life of the process.
type Counters struct {
	Offered, Accepted, Rejected, Done, Failed int
}

// VRAM is what the Status page shows about GPU memory.
type VRAM struct {
	Known      bool   // false: the probe could not tell
	TotalBytes uint64 // all devices
	FreeBytes  uint64
	InUseBytes uint64 // held by our resident model
	BudgetGB   float64
}

// Snapshot is an immutable picture of the worker, published on every change.
type Snapshot struct {
	State WorkerState
	// Controls is the one decision at the time of the snapshot: whether
	// the worker may take studio work and, if not, which controls hold it
	// since when (the Status page's "Held by" line, the tray, the title).
	Controls      controls.Decision
	Paused        bool
	PauseAfterJob bool // "finish the current job, then pause" is armed
	// ResumeAt is when a PauseFor snooze ends and the worker resumes by
	// itself; zero when none is in force.
	ResumeAt      time.Time
	Session       SessionState
	SessionDetail string        // e.g. "studio unreachable, retrying in 8 s"
	RetryIn       time.Duration // when Session == SessionRetrying
	StopReason    string        // why the session stopped for good
	Registration  Registration
	Current       *JobInfo
	Recent        []JobInfo // newest first, bounded
	Counters      Counters
	IdleReason    string // why the worker is idle, in words
	LastReject    string // the last offer it turned down and why
	LastHeartbeat time.Time
	VRAM          VRAM
	Kinds         []engine.TaskKind // what it advertises now
	// Held is what each engine holds in memory (its process, its model).
	Held      []engine.Held
	StudioURL string
	Version   string
}
