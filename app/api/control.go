package api

import (
	"net/http"
	"time"

	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/logging"
	"github.com/minisgg/studio-worker/studio"
)

// Status is GET /status: the snapshot the window shows, without secrets
// (no token, no credentials; the studio address with any user info or
// query redacted) and without image thumbnails.
type Status struct {
	State         studio.WorkerState  `json:"state"`
	Paused        bool                `json:"paused"`
	PauseAfterJob bool                `json:"pauseAfterJob"`
	Session       studio.SessionState `json:"session"`
	SessionDetail string              `json:"sessionDetail,omitempty"`
	IdleReason    string              `json:"idleReason,omitempty"`
	StopReason    string              `json:"stopReason,omitempty"`
	Registration  Registration        `json:"registration"`
	Current       *Job                `json:"current,omitempty"`
	Recent        []Job               `json:"recent"`
	// Counters are the studio's jobs only; local jobs count toward none.
	Counters      studio.Counters `json:"counters"`
	LastReject    string          `json:"lastReject,omitempty"`
	LastHeartbeat *time.Time      `json:"lastHeartbeat,omitempty"`
	VRAM          VRAM            `json:"vram"`
	Kinds         []string        `json:"kinds"`
	Held          []Held          `json:"held,omitempty"`
	StudioURL     string          `json:"studioUrl"`
	Version       string          `json:"version"`
}

// Registration is where this computer's registration stands.
type Registration struct {
	State    string `json:"state"`
	WorkerID string `json:"workerId,omitempty"`
	Reason   string `json:"reason,omitempty"`
}

// Job is one job of the status.
type Job struct {
	ID               string     `json:"id"`
	Kind             string     `json:"kind"`
	Model            string     `json:"model"`
	Local            bool       `json:"local"`
	Phase            string     `json:"phase,omitempty"`
	Done             int64      `json:"done,omitempty"`
	Total            int64      `json:"total,omitempty"`
	Outcome          string     `json:"outcome"`
	Error            string     `json:"error,omitempty"`
	Started          time.Time  `json:"started"`
	Finished         *time.Time `json:"finished,omitempty"`
	PromptTokens     int        `json:"promptTokens,omitempty"`
	CompletionTokens int        `json:"completionTokens,omitempty"`
	TokensPerSecond  float64    `json:"tokensPerSecond,omitempty"`
	Images           int        `json:"images,omitempty"`
}

// VRAM is GPU memory in bytes and the budget in GB.
type VRAM struct {
	Known      bool    `json:"known"`
	TotalBytes uint64  `json:"totalBytes,omitempty"`
	FreeBytes  uint64  `json:"freeBytes,omitempty"`
	InUseBytes uint64  `json:"inUseBytes"`
	BudgetGB   float64 `json:"budgetGb"`
}

// Held is what one engine process holds.
type Held struct {
	Engine    string `json:"engine"`
	Model     string `json:"model,omitempty"`
	Bytes     uint64 `json:"bytes,omitempty"`
	VRAMBytes uint64 `json:"vramBytes,omitempty"`
	PID       int    `json:"pid,omitempty"`
}

// StatusOf turns a snapshot into the API's status.
func StatusOf(s studio.Snapshot) Status {
	st := Status{
		State: s.State, Paused: s.Paused, PauseAfterJob: s.PauseAfterJob,
		Session: s.Session, SessionDetail: s.SessionDetail, IdleReason: s.IdleReason, StopReason: s.StopReason,
		Registration: Registration{State: s.Registration.State, WorkerID: s.Registration.WorkerID, Reason: s.Registration.Reason},
		Recent:       []Job{},
		Counters:     s.Counters, LastReject: s.LastReject,
		VRAM: VRAM{Known: s.VRAM.Known, TotalBytes: s.VRAM.TotalBytes, FreeBytes: s.VRAM.FreeBytes,
			InUseBytes: s.VRAM.InUseBytes, BudgetGB: s.VRAM.BudgetGB},
		Kinds:     []string{},
		StudioURL: logging.RedactURL(s.StudioURL),
		Version:   s.Version,
	}
	if !s.LastHeartbeat.IsZero() {
		t := s.LastHeartbeat
		st.LastHeartbeat = &t
	}
	if s.Current != nil {
		j := jobOf(*s.Current)
		st.Current = &j
	}
	for _, j := range s.Recent {
		st.Recent = append(st.Recent, jobOf(j))
	}
	for _, k := range s.Kinds {
		st.Kinds = append(st.Kinds, string(k))
	}
	for _, h := range s.Held {
		st.Held = append(st.Held, heldOf(h))
	}
	return st
}

func heldOf(h engine.Held) Held {
	return Held{Engine: string(h.Engine), Model: h.Model, Bytes: h.Bytes, VRAMBytes: h.VRAMBytes, PID: h.PID}
}

func jobOf(j studio.JobInfo) Job {
	out := Job{ID: j.ID, Kind: string(j.Kind), Model: j.Model, Local: j.Local, Phase: string(j.Phase),
		Done: j.Done, Total: j.Total, Outcome: j.Outcome, Error: j.Error, Started: j.Started,
		PromptTokens: j.Stats.PromptTokens, CompletionTokens: j.Stats.CompletionTokens,
		TokensPerSecond: j.Stats.TokensPerSecond, Images: j.Stats.Images}
	if !j.Finished.IsZero() {
		t := j.Finished
		out.Finished = &t
	}
	return out
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, StatusOf(s.opts.Worker.Snapshot()))
}

// handlePause is POST /pause (finish the running job, then take no more)
// and POST /pause?now=1 (stop the running job too and give every engine's
// memory back).
func (s *Server) handlePause(w http.ResponseWriter, r *http.Request) {
	now := r.URL.Query().Get("now")
	switch now {
	case "", "0", "false":
		s.log.Info("paused through the local API", "op", "api")
		s.opts.Worker.Pause()
	case "1", "true":
		s.log.Info("paused now through the local API", "op", "api")
		s.opts.Worker.PauseNow()
	default:
		writeError(w, http.StatusBadRequest, "invalid_request_error", "now must be 1 or 0")
		return
	}
	writeJSON(w, http.StatusOK, StatusOf(s.opts.Worker.Snapshot()))
}

func (s *Server) handleResume(w http.ResponseWriter, r *http.Request) {
	s.log.Info("resumed through the local API", "op", "api")
	s.opts.Worker.Resume()
	writeJSON(w, http.StatusOK, StatusOf(s.opts.Worker.Snapshot()))
}

// handleReset is POST /register/reset: the running app forgets its
// credentials and asks the studio to register it again.
func (s *Server) handleReset(w http.ResponseWriter, r *http.Request) {
	s.log.Info("credentials reset through the local API", "op", "api")
	if err := s.opts.StartOver(); err != nil {
		writeError(w, http.StatusInternalServerError, "server_error", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, StatusOf(s.opts.Worker.Snapshot()))
}
