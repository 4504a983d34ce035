package devstudio

import (
	"encoding/json"
	"errors"
	"net/http"
	"path/filepath"

	"github.com/minisgg/studio-worker/engine"
)

// jobBody is POST /dev/jobs; the task is decoded separately so its own
// error (missing kind, missing prompt) reaches the caller.
type jobBody struct {
	Task           json.RawMessage     `json:"task"`
	Model          string              `json:"model"`
	ModelSource    *engine.ModelSource `json:"modelSource"`
	VRAMGBEstimate *float64            `json:"vramGbEstimate"`
	GameID         string              `json:"gameId"`
	AssetName      string              `json:"assetName"`
}

func (s *Server) handleDevJobs(w http.ResponseWriter, r *http.Request) {
	if !allow(w, r, http.MethodGet, http.MethodPost) {
		return
	}
	if r.Method == http.MethodGet {
		writeJSON(w, http.StatusOK, s.Jobs())
		return
	}
	var b jobBody
	if !decodeBody(w, r, &b) {
		return
	}
	var spec JobSpec
	if len(b.Task) == 0 || string(b.Task) == "null" {
		writeErr(w, http.StatusBadRequest, "task is required")
		return
	}
	if err := json.Unmarshal(b.Task, &spec.Task); err != nil {
		writeErr(w, http.StatusBadRequest, "%v", err)
		return
	}
	if b.ModelSource == nil {
		writeErr(w, http.StatusBadRequest, "modelSource is required")
		return
	}
	if b.VRAMGBEstimate == nil {
		writeErr(w, http.StatusBadRequest, "vramGbEstimate is required")
		return
	}
	spec.Model, spec.ModelSource, spec.VRAMGBEstimate = b.Model, *b.ModelSource, *b.VRAMGBEstimate
	spec.GameID, spec.AssetName = b.GameID, b.AssetName
	id, err := s.EnqueueJob(spec)
	if err != nil {
		writeErr(w, http.StatusBadRequest, "%v", err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]string{"jobId": id})
}

func (s *Server) handleDevJob(w http.ResponseWriter, r *http.Request) {
	if !allow(w, r, http.MethodGet) {
		return
	}
	st, ok := s.Job(r.PathValue("id"))
	if !ok {
		writeErr(w, http.StatusNotFound, "no job %q", r.PathValue("id"))
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// handleDevResult serves a finished job's stored result file.
func (s *Server) handleDevResult(w http.ResponseWriter, r *http.Request) {
	if !allow(w, r, http.MethodGet, http.MethodHead) {
		return
	}
	st, ok := s.Job(r.PathValue("id"))
	if !ok {
		writeErr(w, http.StatusNotFound, "no job %q", r.PathValue("id"))
		return
	}
	if st.State != JobDone || st.ResultFile == "" {
		writeErr(w, http.StatusNotFound, "job %s has no result (it is %s)", st.ID, st.State)
		return
	}
	http.ServeFile(w, r, filepath.Join(s.opts.DataDir, filepath.FromSlash(st.ResultFile)))
}

func (s *Server) handleDevWorkers(w http.ResponseWriter, r *http.Request) {
	if allow(w, r, http.MethodGet) {
		writeJSON(w, http.StatusOK, s.Workers())
	}
}

// handleDevWorker: GET shows one worker, DELETE deletes it (4004).
func (s *Server) handleDevWorker(w http.ResponseWriter, r *http.Request) {
	if !allow(w, r, http.MethodGet, http.MethodDelete) {
		return
	}
	id := r.PathValue("id")
	if r.Method == http.MethodDelete {
		if err := s.DeleteWorker(id); err != nil {
			writeErr(w, http.StatusNotFound, "%v", err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"workerId": id, "status": "deleted"})
		return
	}
	for _, ws := range s.Workers() {
		if ws.ID == id {
			writeJSON(w, http.StatusOK, ws)
			return
		}
	}
	writeErr(w, http.StatusNotFound, "no worker %q", id)
}

func (s *Server) handleDevRevoke(w http.ResponseWriter, r *http.Request) {
	if !allow(w, r, http.MethodPost) {
		return
	}
	id := r.PathValue("id")
	if err := s.RevokeWorker(id); err != nil {
		writeErr(w, http.StatusNotFound, "%v", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"workerId": id, "status": "revoked"})
}

func (s *Server) handleDevLogs(w http.ResponseWriter, r *http.Request) {
	if allow(w, r, http.MethodGet) {
		logs := s.Logs(r.URL.Query().Get("workerId"))
		if logs == nil {
			logs = []WorkerLog{}
		}
		writeJSON(w, http.StatusOK, logs)
	}
}

func (s *Server) handleDevRequests(w http.ResponseWriter, r *http.Request) {
	if allow(w, r, http.MethodGet) {
		writeJSON(w, http.StatusOK, s.RegisterRequests())
	}
}

// handleDevRequestAction is POST /dev/register-requests/{id}/approve and
// .../reject (optional body {"reason": "..."}).
func (s *Server) handleDevRequestAction(w http.ResponseWriter, r *http.Request) {
	if !allow(w, r, http.MethodPost) {
		return
	}
	id := r.PathValue("id")
	var err error
	switch r.PathValue("action") {
	case "approve":
		err = s.Approve(id)
	case "reject":
		var body struct {
			Reason string `json:"reason"`
		}
		if r.ContentLength != 0 && !decodeBody(w, r, &body) {
			return
		}
		err = s.Reject(id, body.Reason)
	default:
		writeErr(w, http.StatusNotFound, "unknown action %q (use approve or reject)", r.PathValue("action"))
		return
	}
	switch {
	case errors.Is(err, ErrNotFound):
		writeErr(w, http.StatusNotFound, "%v", err)
	case err != nil:
		writeErr(w, http.StatusConflict, "%v", err)
	default:
		for _, rr := range s.RegisterRequests() {
			if rr.ID == id {
				writeJSON(w, http.StatusOK, rr)
				return
			}
		}
		writeErr(w, http.StatusNotFound, "no registration request %q", id)
	}
}
