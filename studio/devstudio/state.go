package devstudio

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/studio"
)

// JobState is where a job is in its life.
type JobState string

const (
	JobQueued  JobState = "queued"  // waiting for a fitting worker
	JobClaimed JobState = "claimed" // offered to a worker, no answer yet
	JobRunning JobState = "running" // accepted by its worker
	JobDone    JobState = "done"
	JobFailed  JobState = "failed"
)

// Terminal reports whether the job will not change any more.
func (s JobState) Terminal() bool { return s == JobDone || s == JobFailed }

// JobSpec is what a job asks for; its JSON is the body of POST /dev/jobs.
type JobSpec struct {
	Task           engine.Task        `json:"task"`
	Model          string             `json:"model"`
	ModelSource    engine.ModelSource `json:"modelSource"`
	VRAMGBEstimate float64            `json:"vramGbEstimate"`
	GameID         string             `json:"gameId,omitempty"`
	AssetName      string             `json:"assetName,omitempty"`
}

// Validate says what is wrong with a spec, in words.
func (sp JobSpec) Validate() error {
	if !sp.Task.Kind.Valid() {
		if sp.Task.Kind == "" {
			return errors.New("task is required (an object with a kind)")
		}
		return fmt.Errorf("task kind %q is not one of image, llm, audio_stt, audio_tts, video", sp.Task.Kind)
	}
	if _, err := json.Marshal(sp.Task); err != nil {
		return fmt.Errorf("task: %v", err)
	}
	if strings.TrimSpace(sp.Model) == "" {
		return errors.New("model is required")
	}
	if sp.ModelSource.Engine == "" {
		return errors.New("modelSource.engine is required")
	}
	for i, f := range sp.ModelSource.Files {
		switch {
		case f.Role == "":
			return fmt.Errorf("modelSource.files[%d].role is required", i)
		case f.URL == "":
			return fmt.Errorf("modelSource.files[%d].url is required", i)
		case f.Filename == "" || f.Filename == "." || f.Filename == ".." || strings.ContainsAny(f.Filename, `/\`):
			return fmt.Errorf("modelSource.files[%d].filename must be one plain file name, got %q", i, f.Filename)
		}
	}
	if math.IsNaN(sp.VRAMGBEstimate) || math.IsInf(sp.VRAMGBEstimate, 0) || sp.VRAMGBEstimate < 0 {
		return fmt.Errorf("vramGbEstimate must be a number >= 0, got %v", sp.VRAMGBEstimate)
	}
	return nil
}

// JobStatus is a job as the dev API shows it.
type JobStatus struct {
	ID             string          `json:"jobId"`
	State          JobState        `json:"state"`
	Kind           engine.TaskKind `json:"kind"`
	Model          string          `json:"model"`
	VRAMGBEstimate float64         `json:"vramGbEstimate"`
	GameID         string          `json:"gameId"`
	AssetName      string          `json:"assetName"`
	Attempts       int             `json:"attempts"`
	WorkerID       string          `json:"workerId,omitempty"`
	Result         json.RawMessage `json:"result,omitempty"`
	ResultFile     string          `json:"resultFile,omitempty"` // path under DataDir
	Prompt         string          `json:"prompt,omitempty"`
	Error          string          `json:"error,omitempty"`
	// LateReports are what a worker reported about the job after the
	// studio had released it from that worker (a restart's journal).
	LateReports []string  `json:"lateReports,omitempty"`
	CreatedAt   time.Time `json:"createdAt"`
	UpdatedAt   time.Time `json:"updatedAt"`
}

// WorkerStatus is an approved worker as the dev API shows it.
type WorkerStatus struct {
	ID            string               `json:"workerId"`
	RequestID     string               `json:"requestId"`
	InstallID     string               `json:"installId"`
	MachineName   string               `json:"machineName,omitempty"`
	Connected     bool                 `json:"connected"` // a welcomed session is open
	State         string               `json:"state"`     // offline | idle | busy | paused
	Paused        bool                 `json:"paused"`
	CurrentJobID  string               `json:"currentJobId,omitempty"`
	Revoked       bool                 `json:"revoked,omitempty"`
	Capabilities  *studio.Capabilities `json:"capabilities,omitempty"`
	LastHeartbeat *time.Time           `json:"lastHeartbeat,omitempty"`
	ConnectedAt   *time.Time           `json:"connectedAt,omitempty"`
	Heartbeats    int                  `json:"heartbeats"`
}

// RegisterRequest is a registration request as the dev API shows it.
type RegisterRequest struct {
	ID           string               `json:"requestId"`
	InstallID    string               `json:"installId"`
	Status       string               `json:"status"` // pending | approved | rejected
	Reason       string               `json:"reason,omitempty"`
	WorkerID     string               `json:"workerId,omitempty"`
	UserAgent    string               `json:"userAgent,omitempty"`
	Capabilities *studio.Capabilities `json:"capabilities,omitempty"`
	CreatedAt    time.Time            `json:"createdAt"`
}

// WorkerLog is one line a worker shipped in a logBatch.
type WorkerLog struct {
	WorkerID string `json:"workerId"`
	studio.LogEntry
}

const maxLogs = 2000

// ---- internal records (persisted with JSON) ----

type regRequest struct {
	RegisterRequest
	SecretHash string `json:"secretHash"`
}

type worker struct {
	ID          string    `json:"workerId"`
	RequestID   string    `json:"requestId"`
	InstallID   string    `json:"installId"`
	MachineName string    `json:"machineName,omitempty"`
	TokenHash   string    `json:"tokenHash,omitempty"` // sha256 hex of the auth token; empty = no valid token
	Revoked     bool      `json:"revoked,omitempty"`
	CreatedAt   time.Time `json:"createdAt"`

	// runtime only
	sess       *session
	caps       *studio.Capabilities
	lastHB     time.Time
	heartbeats int
	hbBusy     bool   // last heartbeat named a job the studio does not see it holding
	holdOffers bool   // rejected busy/paused: no offers until its next heartbeat
	currentJob string // the job the studio has it holding
}

type job struct {
	ID         string            `json:"id"`
	Seq        uint64            `json:"seq"`
	Spec       JobSpec           `json:"spec"`
	State      JobState          `json:"state"`
	Attempts   int               `json:"attempts"`
	WorkerID   string            `json:"workerId,omitempty"`
	Result     json.RawMessage   `json:"result,omitempty"`
	ResultFile string            `json:"resultFile,omitempty"`
	Prompt     string            `json:"prompt,omitempty"`
	Error      string            `json:"error,omitempty"`
	Excluded   map[string]string `json:"excluded,omitempty"` // workerId -> reason of a non-transient reject
	// LastWorkerID is the last worker offered the job; LateReports what it
	// said about the job after the studio had released it.
	LastWorkerID string    `json:"lastWorkerId,omitempty"`
	LateReports  []string  `json:"lateReports,omitempty"`
	CreatedAt    time.Time `json:"createdAt"`
	UpdatedAt    time.Time `json:"updatedAt"`
}

func (j *job) status() JobStatus {
	return JobStatus{
		ID: j.ID, State: j.State, Kind: j.Spec.Task.Kind, Model: j.Spec.Model,
		VRAMGBEstimate: j.Spec.VRAMGBEstimate, GameID: j.Spec.GameID, AssetName: j.Spec.AssetName,
		Attempts: j.Attempts, WorkerID: j.WorkerID, Result: j.Result, ResultFile: j.ResultFile,
		Prompt: j.Prompt, Error: j.Error, CreatedAt: j.CreatedAt, UpdatedAt: j.UpdatedAt,
		LateReports: slices.Clone(j.LateReports),
	}
}

func (w *worker) status() WorkerStatus {
	st := WorkerStatus{
		ID: w.ID, RequestID: w.RequestID, InstallID: w.InstallID, MachineName: w.MachineName,
		Connected: w.sess != nil, CurrentJobID: w.currentJob, Revoked: w.Revoked,
		Heartbeats: w.heartbeats,
	}
	if w.caps != nil {
		c := *w.caps
		st.Capabilities = &c
		st.Paused = !c.AutoEnabled
	}
	if !w.lastHB.IsZero() {
		t := w.lastHB
		st.LastHeartbeat = &t
	}
	if w.sess != nil {
		t := w.sess.welcomedAt
		st.ConnectedAt = &t
	}
	switch {
	case w.sess == nil:
		st.State = "offline"
	case w.currentJob != "" || w.hbBusy:
		st.State = "busy"
	case st.Paused:
		st.State = "paused"
	default:
		st.State = "idle"
	}
	return st
}

// ---- persistence ----

type persisted struct {
	Version  int           `json:"version"`
	Seq      uint64        `json:"seq"`
	Requests []*regRequest `json:"requests"`
	Workers  []*worker     `json:"workers"`
	Jobs     []*job        `json:"jobs"`
}

func (s *Server) load() error {
	data, err := os.ReadFile(s.statePath)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("devstudio: cannot read %s: %w", s.statePath, err)
	}
	var p persisted
	if err := json.Unmarshal(data, &p); err != nil {
		return fmt.Errorf("devstudio: %s is not a dev studio state file (%v); move it aside to start fresh", s.statePath, err)
	}
	if p.Version != 1 {
		return fmt.Errorf("devstudio: %s has state version %d, this build reads version 1", s.statePath, p.Version)
	}
	s.seq = p.Seq
	for _, r := range p.Requests {
		s.requests[r.ID] = r
	}
	for _, w := range p.Workers {
		s.workers[w.ID] = w
	}
	now := s.clock.Now()
	released := 0
	for _, j := range p.Jobs {
		s.jobs[j.ID] = j
		if j.Seq > s.seq {
			s.seq = j.Seq
		}
		if j.State == JobClaimed || j.State == JobRunning {
			// The session that held it is gone with the old process:
			// release it the way a dropped socket would.
			s.releaseJobLocked(j, now, fmt.Sprintf("the dev studio restarted while worker %s held the job", j.WorkerID))
			released++
		}
	}
	if released > 0 {
		s.log.Info("released jobs held when the studio stopped", "count", released)
		s.dirty = true
	}
	return nil
}

// marshalLocked renders the state file.
func (s *Server) marshalLocked() ([]byte, error) {
	p := persisted{Version: 1, Seq: s.seq}
	for _, r := range s.requests {
		p.Requests = append(p.Requests, r)
	}
	for _, w := range s.workers {
		p.Workers = append(p.Workers, w)
	}
	for _, j := range s.jobs {
		p.Jobs = append(p.Jobs, j)
	}
	sort.Slice(p.Requests, func(a, b int) bool { return p.Requests[a].CreatedAt.Before(p.Requests[b].CreatedAt) })
	sort.Slice(p.Workers, func(a, b int) bool { return p.Workers[a].ID < p.Workers[b].ID })
	sort.Slice(p.Jobs, func(a, b int) bool { return p.Jobs[a].Seq < p.Jobs[b].Seq })
	return json.MarshalIndent(p, "", "  ")
}

// saveNow writes the state file atomically (temp file + rename) if anything
// changed since the last write. Writes are serialised by fileMu, so a newer
// state never gets overwritten by an older one. A failure is kept in
// saveErr and logged; the studio keeps serving from memory.
func (s *Server) saveNow() {
	s.fileMu.Lock()
	defer s.fileMu.Unlock()
	s.mu.Lock()
	if !s.dirty {
		s.mu.Unlock()
		return
	}
	data, err := s.marshalLocked()
	s.dirty = false
	s.mu.Unlock()
	if err == nil {
		tmp := s.statePath + ".tmp"
		if err = os.WriteFile(tmp, data, 0o600); err == nil {
			err = os.Rename(tmp, s.statePath)
		}
	}
	s.mu.Lock()
	if err != nil && s.saveErr == nil {
		s.log.Error("cannot save the dev studio state", "err", err)
	}
	s.saveErr = err
	s.mu.Unlock()
}

// flush writes the current state now, whatever the saver is doing.
func (s *Server) flush() error {
	s.mu.Lock()
	s.dirty = true
	s.mu.Unlock()
	s.saveNow()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.saveErr
}

// saveGap is the least time between two background writes of the state
// file: the whole state is rewritten each time, so bursts are coalesced.
const saveGap = 100 * time.Millisecond

// saveLoop writes the state file in the background so that no frame
// handler waits on the disk. Close writes the final state.
func (s *Server) saveLoop() {
	defer close(s.saveDone)
	for {
		select {
		case <-s.saveKick:
			s.saveNow()
		case <-s.stopSave:
			return
		}
		select {
		case <-time.After(saveGap):
		case <-s.stopSave:
			return
		}
	}
}

// changedLocked marks the state for saving and wakes waiters: call after
// every change that matters across a restart.
func (s *Server) changedLocked() {
	s.dirty = true
	select {
	case s.saveKick <- struct{}{}:
	default:
	}
	s.notifyLocked()
}

// ---- secrets ----

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// hashMatches compares sha256(secret) with a stored hex hash in constant
// time.
func hashMatches(storedHex, secret string) bool {
	if storedHex == "" || secret == "" {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(sha256Hex(secret)), []byte(storedHex)) == 1
}

func newToken() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return hex.EncodeToString(b[:])
}

// ---- jobs ----

// EnqueueJob adds a job to the queue and offers it at once when a fitting
// worker is free.
func (s *Server) EnqueueJob(spec JobSpec) (string, error) {
	if err := spec.Validate(); err != nil {
		return "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return "", errors.New("the dev studio is closed")
	}
	now := s.clock.Now()
	s.seq++
	j := &job{ID: "job-" + uuid.NewString(), Seq: s.seq, Spec: spec, State: JobQueued, CreatedAt: now, UpdatedAt: now}
	if j.Spec.GameID == "" {
		j.Spec.GameID = "devstudio"
	}
	if j.Spec.AssetName == "" {
		j.Spec.AssetName = "devstudio/" + j.ID
	}
	s.jobs[j.ID] = j
	s.log.Info("job queued", "job", j.ID, "kind", spec.Task.Kind, "model", spec.Model, "vramGb", spec.VRAMGBEstimate)
	s.dispatchLocked()
	s.changedLocked()
	return j.ID, nil
}

// Job returns one job's status.
func (s *Server) Job(id string) (JobStatus, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j, ok := s.jobs[id]
	if !ok {
		return JobStatus{}, false
	}
	return j.status(), true
}

// Jobs returns every job, oldest first.
func (s *Server) Jobs() []JobStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.jobsLocked()
}

func (s *Server) jobsLocked() []JobStatus {
	js := make([]*job, 0, len(s.jobs))
	for _, j := range s.jobs {
		js = append(js, j)
	}
	sort.Slice(js, func(a, b int) bool { return js[a].Seq < js[b].Seq })
	out := make([]JobStatus, len(js))
	for i, j := range js {
		out[i] = j.status()
	}
	return out
}

// Workers returns every approved worker, ordered by id.
func (s *Server) Workers() []WorkerStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.workersLocked()
}

func (s *Server) workersLocked() []WorkerStatus {
	out := make([]WorkerStatus, 0, len(s.workers))
	for _, w := range s.workers {
		out = append(out, w.status())
	}
	sort.Slice(out, func(a, b int) bool { return out[a].ID < out[b].ID })
	return out
}

// Logs returns the log lines workers shipped, oldest first; workerID ""
// means every worker.
func (s *Server) Logs(workerID string) []WorkerLog {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []WorkerLog
	for _, l := range s.logs {
		if workerID == "" || l.WorkerID == workerID {
			out = append(out, l)
		}
	}
	return out
}

// WaitLogs blocks until the log lines stored for workerID (all workers when
// "") satisfy pred, and returns them then. It takes the change notification
// before reading the lines, so a logBatch that lands between the two still
// wakes it (reading Logs, then Changed, could sleep through that batch).
// The error wraps ctx.Err().
func (s *Server) WaitLogs(ctx context.Context, workerID string, pred func([]WorkerLog) bool) ([]WorkerLog, error) {
	for {
		s.mu.Lock()
		ch := s.changed
		s.mu.Unlock()
		logs := s.Logs(workerID)
		if pred(logs) {
			return logs, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return logs, fmt.Errorf("the worker's log lines never reached the awaited state (%d stored): %w", len(logs), ctx.Err())
		}
	}
}

// WaitJob blocks until job id is in one of states (done or failed when none
// are given) and returns its status then. It wakes on the studio's change
// notifications, not by polling.
func (s *Server) WaitJob(ctx context.Context, id string, states ...JobState) (JobStatus, error) {
	if len(states) == 0 {
		states = []JobState{JobDone, JobFailed}
	}
	for {
		s.mu.Lock()
		j, ok := s.jobs[id]
		var st JobStatus
		if ok {
			st = j.status()
		}
		ch := s.changed
		s.mu.Unlock()
		if !ok {
			return JobStatus{}, fmt.Errorf("no job %q", id)
		}
		if slices.Contains(states, st.State) {
			return st, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return st, fmt.Errorf("job %s is still %s (attempts %d, error %q), waited for %v: %w", id, st.State, st.Attempts, st.Error, states, ctx.Err())
		}
	}
}

// WaitWorker blocks until some worker satisfies pred and returns it.
func (s *Server) WaitWorker(ctx context.Context, pred func(WorkerStatus) bool) (WorkerStatus, error) {
	for {
		s.mu.Lock()
		ws := s.workersLocked()
		ch := s.changed
		s.mu.Unlock()
		for _, w := range ws {
			if pred(w) {
				return w, nil
			}
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return WorkerStatus{}, fmt.Errorf("no worker reached the awaited state (%d known): %w", len(ws), ctx.Err())
		}
	}
}

// FailNextUploads makes the next n multipart uploads that pass the auth
// check answer 500, so tests can prove the worker's upload retries.
func (s *Server) FailNextUploads(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failUploads = n
}

// heldLocked returns the job when worker w holds it, nil otherwise.
func (s *Server) heldLocked(w *worker, jobID string) *job {
	if w == nil || jobID == "" || w.currentJob != jobID {
		return nil
	}
	j := s.jobs[jobID]
	if j == nil || j.WorkerID != w.ID || (j.State != JobClaimed && j.State != JobRunning) {
		return nil
	}
	return j
}

// lateLocked is a job w held last and no longer holds: the studio released
// it (w's session dropped) before w's final frame for it came. A worker
// that kept the job in its journal across a restart or an outage reports
// it then; like the hosted studio, this one answers that frame as a
// protocol violation (close 4002) and only notes it in LateReports.
func (s *Server) lateLocked(w *worker, jobID string) *job {
	j := s.jobs[jobID]
	if w == nil || j == nil || j.LastWorkerID != w.ID || j.WorkerID == w.ID {
		return nil
	}
	return j
}

// releaseJobLocked gives a held job back after its worker went away or
// failed it retryably: one more attempt is counted, then it is queued again
// or failed once attempts run out.
func (s *Server) releaseJobLocked(j *job, now time.Time, why string) {
	if w := s.workers[j.WorkerID]; w != nil && w.currentJob == j.ID {
		w.currentJob = ""
	}
	j.Attempts++
	j.WorkerID = ""
	j.UpdatedAt = now
	j.Error = why
	if j.Attempts >= s.maxAttempts {
		j.State = JobFailed
		j.Error = fmt.Sprintf("%s (gave up after %d attempts)", why, j.Attempts)
		s.log.Warn("job failed for good", "job", j.ID, "attempts", j.Attempts, "err", why)
		return
	}
	j.State = JobQueued
	s.log.Info("job requeued", "job", j.ID, "attempts", j.Attempts, "err", why)
}

// requeueLocked gives a claimed job back without counting an attempt (a
// reject: the worker never ran it).
func (s *Server) requeueLocked(j *job, w *worker, now time.Time, why string) {
	if w != nil && w.currentJob == j.ID {
		w.currentJob = ""
	}
	j.State = JobQueued
	j.WorkerID = ""
	j.Error = why
	j.UpdatedAt = now
}

func (s *Server) finishLocked(j *job, w *worker, now time.Time) {
	if w != nil && w.currentJob == j.ID {
		w.currentJob = ""
	}
	j.State = JobDone
	j.Error = ""
	j.UpdatedAt = now
}

// eligibleLocked reports whether w may be offered anything now (§4.7),
// leaving out the per-job checks.
func (s *Server) eligibleLocked(w *worker, now time.Time) bool {
	switch {
	case w.sess == nil || w.Revoked, w.currentJob != "", w.hbBusy, w.holdOffers:
		return false
	case w.caps == nil || w.lastHB.IsZero() || !w.caps.AutoEnabled:
		return false
	case now.Sub(w.lastHB) >= HeartbeatStaleAfter:
		return false
	case w.caps.OnlyWhenIdle && w.caps.UserPresence != "idle":
		return false
	}
	return true
}

func fits(w *worker, j *job) bool {
	if _, excluded := j.Excluded[w.ID]; excluded {
		return false
	}
	return slices.Contains(w.caps.TaskKinds, j.Spec.Task.Kind) && w.caps.VRAMThresholdGB >= j.Spec.VRAMGBEstimate
}

// dispatchLocked offers queued jobs, oldest first, each to the
// earliest-connected fitting worker, and returns how many it offered.
func (s *Server) dispatchLocked() (offered int) {
	if s.closed {
		return 0
	}
	now := s.clock.Now()
	var free []*worker
	for _, w := range s.workers {
		if s.eligibleLocked(w, now) {
			free = append(free, w)
		}
	}
	if len(free) == 0 {
		return 0
	}
	sort.Slice(free, func(a, b int) bool {
		ta, tb := free[a].sess.welcomedAt, free[b].sess.welcomedAt
		if !ta.Equal(tb) {
			return ta.Before(tb)
		}
		return free[a].sess.id < free[b].sess.id
	})
	var queued []*job
	for _, j := range s.jobs {
		if j.State == JobQueued {
			queued = append(queued, j)
		}
	}
	sort.Slice(queued, func(a, b int) bool { return queued[a].Seq < queued[b].Seq })
	for _, j := range queued {
		if len(free) == 0 {
			break
		}
		for i, w := range free {
			if fits(w, j) {
				free = slices.Delete(free, i, i+1)
				s.offerLocked(w, j, now)
				offered++
				break
			}
		}
	}
	return offered
}

func (s *Server) offerLocked(w *worker, j *job, now time.Time) {
	j.State = JobClaimed
	j.WorkerID, j.LastWorkerID = w.ID, w.ID
	j.UpdatedAt = now
	w.currentJob = j.ID
	task := j.Spec.Task
	src := j.Spec.ModelSource
	s.log.Info("offer", "job", j.ID, "worker", w.ID, "kind", task.Kind, "model", j.Spec.Model)
	s.sendLocked(w.sess, studio.Offer{Claim: studio.JobOfferClaim{
		JobID: j.ID, GameID: j.Spec.GameID, AssetName: j.Spec.AssetName, Model: j.Spec.Model,
		VRAMGBEstimate: j.Spec.VRAMGBEstimate, Task: &task, ModelSource: &src,
	}})
}

// resultPath is where a job's result is stored, relative to DataDir.
func resultPath(jobID, ext string) string { return path.Join("results", jobID+"."+ext) }
