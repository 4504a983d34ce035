package devstudio

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/google/uuid"
	"github.com/minisgg/studio-worker/studio"
)

// Registration request statuses (§2.3).
const (
	StatusPending  = "pending"
	StatusApproved = "approved"
	StatusRejected = "rejected"
)

// ErrNotFound is returned for an unknown request, worker or job id.
var ErrNotFound = errors.New("not found")

type registerBody struct {
	InstallID              string               `json:"installId"`
	RegistrationSecretHash string               `json:"registrationSecretHash"`
	Capabilities           *studio.Capabilities `json:"capabilities"`
	UserAgent              string               `json:"userAgent"`
}

// handleRegisterRequest is POST /graphics/api/workers/register-request.
func (s *Server) handleRegisterRequest(w http.ResponseWriter, r *http.Request) {
	if !allow(w, r, http.MethodPost) {
		return
	}
	var body registerBody
	if !decodeBody(w, r, &body) {
		return
	}
	body.InstallID = strings.TrimSpace(body.InstallID)
	hash := strings.ToLower(strings.TrimSpace(body.RegistrationSecretHash))
	switch {
	case body.InstallID == "":
		writeErr(w, http.StatusBadRequest, "installId is required")
		return
	case len(body.InstallID) > 200:
		writeErr(w, http.StatusBadRequest, "installId is longer than 200 characters")
		return
	case len(hash) != 64 || !isHex(hash):
		writeErr(w, http.StatusBadRequest, "registrationSecretHash must be 64 hex characters (sha256 of the secret's hex string)")
		return
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.Now()
	// Dedupe on installId: a worker that posts again while its request is
	// pending gets the same request back. The newest secret hash wins, so
	// a worker that lost its secret can still poll.
	for _, req := range s.requests {
		if req.InstallID == body.InstallID && req.Status == StatusPending {
			req.SecretHash = hash
			if body.Capabilities != nil {
				req.Capabilities = body.Capabilities
			}
			s.changedLocked()
			writeJSON(w, http.StatusOK, map[string]string{"requestId": req.ID, "status": StatusPending})
			return
		}
	}
	req := &regRequest{
		RegisterRequest: RegisterRequest{
			ID: "rr-" + uuid.NewString(), InstallID: body.InstallID, Status: StatusPending,
			UserAgent: body.UserAgent, Capabilities: body.Capabilities, CreatedAt: now,
		},
		SecretHash: hash,
	}
	s.requests[req.ID] = req
	s.log.Info("registration request", "request", req.ID, "install", req.InstallID, "userAgent", req.UserAgent)
	if s.opts.AutoApprove {
		s.approveLocked(req)
	}
	s.changedLocked()
	// The answer is always pending: even an auto-approved request hands its
	// credentials out only on a poll.
	writeJSON(w, http.StatusOK, map[string]string{"requestId": req.ID, "status": StatusPending})
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil
}

// handlePoll is GET /graphics/api/workers/register-requests/{id}.
func (s *Server) handlePoll(w http.ResponseWriter, r *http.Request, id string) {
	secret := bearer(r)
	s.mu.Lock()
	defer s.mu.Unlock()
	req := s.requests[id]
	if req == nil {
		writeErr(w, http.StatusNotFound, "no registration request %q", id)
		return
	}
	if !hashMatches(req.SecretHash, secret) {
		writeErr(w, http.StatusUnauthorized, "the registration secret does not match this request")
		return
	}
	switch req.Status {
	case StatusPending:
		writeJSON(w, http.StatusOK, map[string]string{"status": StatusPending})
	case StatusRejected:
		writeJSON(w, http.StatusOK, map[string]string{"status": StatusRejected, "reason": req.Reason})
	case StatusApproved:
		wk := s.workers[req.WorkerID]
		if wk == nil { // deleted since: the worker must start over
			writeErr(w, http.StatusNotFound, "registration request %q belongs to a deleted worker", id)
			return
		}
		if wk.Revoked {
			writeJSON(w, http.StatusOK, map[string]string{"status": StatusRejected, "reason": "worker revoked by operator"})
			return
		}
		// Every poll after approval mints a fresh token and keeps only its
		// hash, as the hosted studio does (§2.3).
		token := newToken()
		wk.TokenHash = sha256Hex(token)
		s.log.Info("credentials handed out", "request", id, "worker", wk.ID)
		s.changedLocked()
		writeJSON(w, http.StatusOK, map[string]string{"status": StatusApproved, "workerId": wk.ID, "authToken": token})
	}
}

// Approve approves a pending request: a worker id is created and the next
// poll returns it with a fresh token.
func (s *Server) Approve(requestID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	req := s.requests[requestID]
	if req == nil {
		return fmt.Errorf("registration request %q: %w", requestID, ErrNotFound)
	}
	switch req.Status {
	case StatusApproved:
		return nil
	case StatusRejected:
		return fmt.Errorf("registration request %q was rejected already", requestID)
	}
	s.approveLocked(req)
	s.changedLocked()
	return nil
}

func (s *Server) approveLocked(req *regRequest) {
	wk := &worker{
		ID: "wk-" + uuid.NewString(), RequestID: req.ID, InstallID: req.InstallID,
		CreatedAt: s.clock.Now(),
	}
	if req.Capabilities != nil {
		wk.MachineName = req.Capabilities.MachineName
	}
	s.workers[wk.ID] = wk
	req.Status = StatusApproved
	req.WorkerID = wk.ID
	s.log.Info("registration approved", "request", req.ID, "worker", wk.ID)
}

// Reject rejects a pending request; its next poll says rejected with reason.
func (s *Server) Reject(requestID, reason string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	req := s.requests[requestID]
	if req == nil {
		return fmt.Errorf("registration request %q: %w", requestID, ErrNotFound)
	}
	if req.Status != StatusPending {
		return fmt.Errorf("registration request %q is %s already", requestID, req.Status)
	}
	req.Status = StatusRejected
	req.Reason = reason
	s.log.Info("registration rejected", "request", req.ID, "reason", reason)
	s.changedLocked()
	return nil
}

// RegisterRequests lists every registration request, oldest first.
func (s *Server) RegisterRequests() []RegisterRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requestsLocked()
}

func (s *Server) requestsLocked() []RegisterRequest {
	out := make([]RegisterRequest, 0, len(s.requests))
	for _, r := range s.requests {
		out = append(out, r.RegisterRequest)
	}
	sort.Slice(out, func(a, b int) bool {
		if !out[a].CreatedAt.Equal(out[b].CreatedAt) {
			return out[a].CreatedAt.Before(out[b].CreatedAt)
		}
		return out[a].ID < out[b].ID
	})
	return out
}

// WaitRegisterRequest blocks until some registration request satisfies
// pred (for example: the first pending one, to approve it).
func (s *Server) WaitRegisterRequest(ctx context.Context, pred func(RegisterRequest) bool) (RegisterRequest, error) {
	for {
		s.mu.Lock()
		rs := s.requestsLocked()
		ch := s.changed
		s.mu.Unlock()
		for _, r := range rs {
			if pred(r) {
				return r, nil
			}
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return RegisterRequest{}, fmt.Errorf("no registration request reached the awaited state (%d known): %w", len(rs), ctx.Err())
		}
	}
}

// RevokeWorker invalidates a worker's token. Its open session is closed
// with a plain 1000 (no error frame), so the worker reconnects and meets
// HTTP 401 on the upgrade, which is how a revoked worker learns of it. A
// job it held is released.
func (s *Server) RevokeWorker(workerID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	wk := s.workers[workerID]
	if wk == nil {
		return fmt.Errorf("worker %q: %w", workerID, ErrNotFound)
	}
	wk.Revoked = true
	wk.TokenHash = ""
	if wk.sess != nil {
		s.closeSessionLocked(wk.sess, closeSpec{code: studio.CloseNormal, reason: "token revoked", release: true})
	}
	s.log.Info("worker revoked", "worker", workerID)
	s.dispatchLocked()
	s.changedLocked()
	return nil
}

// DeleteWorker removes a worker: its session gets error worker_deleted and
// close 4004, a job it held is released, and its credentials stop working.
func (s *Server) DeleteWorker(workerID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	wk := s.workers[workerID]
	if wk == nil {
		return fmt.Errorf("worker %q: %w", workerID, ErrNotFound)
	}
	if wk.sess != nil {
		s.closeSessionLocked(wk.sess, closeSpec{errCode: studio.ErrCodeWorkerDeleted, message: "this worker was deleted by the operator", release: true})
	}
	if wk.currentJob != "" { // held without a session: release anyway
		if j := s.jobs[wk.currentJob]; j != nil && j.WorkerID == wk.ID {
			s.releaseJobLocked(j, s.clock.Now(), "worker deleted")
		}
	}
	delete(s.workers, workerID)
	s.log.Info("worker deleted", "worker", workerID)
	s.dispatchLocked()
	s.changedLocked()
	return nil
}
