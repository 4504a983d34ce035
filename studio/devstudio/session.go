package devstudio

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/minisgg/studio-worker/studio"
)

const (
	outQueue     = 256
	writeTimeout = 10 * time.Second
	maxFrame     = 32 << 20 // completeJson carries whole LLM answers
)

// session is one WebSocket connection of a worker.
type session struct {
	id       uint64
	workerID string
	conn     *websocket.Conn
	out      chan []byte

	connectedAt time.Time
	// guarded by Server.mu
	welcomed   bool
	welcomedAt time.Time
	ended      bool

	closeOnce   sync.Once
	closing     chan struct{}
	closeFrame  []byte
	closeCode   websocket.StatusCode
	closeReason string
}

// closeSpec says how the studio ends a session: an optional error frame
// first, then the close code.
type closeSpec struct {
	errCode string // error frame code; empty = no error frame
	message string
	code    int    // close code; 0 = the code paired with errCode
	reason  string // close reason; empty = message
	release bool   // release the job the worker held
	why     string // the job's error text when released
}

func wantsSubprotocol(r *http.Request) bool {
	return headerHas(r.Header, "Sec-WebSocket-Protocol", studio.Subprotocol)
}

// headerHas reports whether a comma-separated header lists token
// (case-insensitively).
func headerHas(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, p := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(p), token) {
				return true
			}
		}
	}
	return false
}

// handleConnect is GET /graphics/api/workers/{workerId}/connect.
func (s *Server) handleConnect(w http.ResponseWriter, r *http.Request, workerID string) {
	token := bearer(r)
	s.mu.Lock()
	wk := s.workers[workerID]
	authed := wk != nil && !wk.Revoked && hashMatches(wk.TokenHash, token)
	s.mu.Unlock()
	if !authed {
		s.log.Warn("upgrade refused: bad credentials", "worker", workerID)
		writeErr(w, http.StatusUnauthorized, "unknown worker or auth token")
		return
	}
	if !headerHas(r.Header, "Connection", "upgrade") || !headerHas(r.Header, "Upgrade", "websocket") {
		writeErr(w, http.StatusUpgradeRequired, "this route takes a WebSocket upgrade")
		return
	}
	if !wantsSubprotocol(r) {
		writeErr(w, http.StatusBadRequest, "the WebSocket subprotocol %s is required", studio.Subprotocol)
		return
	}
	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{studio.Subprotocol}})
	if err != nil {
		s.log.Warn("upgrade failed", "worker", workerID, "err", err)
		return
	}
	conn.SetReadLimit(maxFrame)

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = conn.Close(websocket.StatusGoingAway, "studio shutting down")
		return
	}
	s.sessSeq++
	sess := &session{
		id: s.sessSeq, workerID: workerID, conn: conn, out: make(chan []byte, outQueue),
		connectedAt: s.clock.Now(), closing: make(chan struct{}),
	}
	s.sessions[sess] = struct{}{}
	s.sessWG.Add(1)
	s.notifyLocked()
	s.mu.Unlock()
	defer s.sessWG.Done()

	ctx, cancel := context.WithCancel(context.Background())
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		s.writeLoop(ctx, sess)
	}()
	s.log.Info("socket open", "worker", workerID, "session", sess.id)
	s.readLoop(ctx, sess)
	cancel()
	<-writerDone
	_ = conn.CloseNow()

	s.mu.Lock()
	delete(s.sessions, sess)
	if !sess.ended {
		s.detachLocked(sess, true, "the worker disconnected while holding the job")
		s.dispatchLocked()
	}
	s.changedLocked()
	s.mu.Unlock()
	s.log.Info("socket closed", "worker", workerID, "session", sess.id)
}

func (s *Server) readLoop(ctx context.Context, sess *session) {
	for {
		typ, data, err := sess.conn.Read(ctx)
		if err != nil {
			return
		}
		if typ != websocket.MessageText {
			s.violation(sess, "binary frames are not part of the protocol")
			continue
		}
		s.handleFrame(sess, data)
	}
}

func (s *Server) writeLoop(ctx context.Context, sess *session) {
	write := func(data []byte) error {
		wctx, cancel := context.WithTimeout(ctx, writeTimeout)
		defer cancel()
		return sess.conn.Write(wctx, websocket.MessageText, data)
	}
	for {
		select {
		case data := <-sess.out:
			if err := write(data); err != nil {
				_ = sess.conn.CloseNow()
				return
			}
		case <-sess.closing:
			// Frames queued before the close go out first, then the
			// error frame, then the close with its paired code.
			for {
				select {
				case data := <-sess.out:
					if write(data) != nil {
						_ = sess.conn.CloseNow()
						return
					}
					continue
				default:
				}
				break
			}
			if sess.closeFrame != nil {
				_ = write(sess.closeFrame)
			}
			_ = sess.conn.Close(sess.closeCode, sess.closeReason)
			return
		case <-ctx.Done():
			return
		}
	}
}

// sendLocked queues a frame on sess. A session that cannot keep up is
// closed rather than letting the studio block on it.
func (s *Server) sendLocked(sess *session, frame any) {
	if sess == nil || sess.ended {
		return
	}
	data, err := studio.Encode(frame)
	if err != nil {
		s.log.Error("cannot encode frame", "err", err)
		return
	}
	select {
	case sess.out <- data:
	default:
		s.closeSessionLocked(sess, closeSpec{errCode: studio.ErrCodeInternalError, message: "send queue full", release: true, why: "the worker's socket fell behind"})
	}
}

// detachLocked ends sess as the worker's live session and, with release,
// gives back the job the worker held.
func (s *Server) detachLocked(sess *session, release bool, why string) {
	sess.ended = true
	wk := s.workers[sess.workerID]
	if wk == nil || wk.sess != sess {
		return
	}
	wk.sess = nil
	wk.holdOffers = false
	wk.hbBusy = false
	if release && wk.currentJob != "" {
		if j := s.jobs[wk.currentJob]; j != nil && j.WorkerID == wk.ID && !j.State.Terminal() {
			s.releaseJobLocked(j, s.clock.Now(), why)
		}
		wk.currentJob = ""
	}
}

// closeSessionLocked ends sess from the studio's side.
func (s *Server) closeSessionLocked(sess *session, c closeSpec) {
	if sess.ended {
		return
	}
	why := c.why
	if why == "" {
		why = "the worker's session was closed: " + firstNonEmpty(c.message, c.reason)
	}
	s.detachLocked(sess, c.release, why)
	code := c.code
	if code == 0 {
		code = studio.CloseCodeFor(c.errCode)
	}
	reason := firstNonEmpty(c.reason, c.message)
	if len(reason) > 120 { // a close reason must fit in a control frame
		reason = reason[:120]
	}
	var frame []byte
	if c.errCode != "" {
		frame, _ = studio.Encode(studio.ErrorFrame{Code: c.errCode, Message: c.message})
	}
	sess.closeOnce.Do(func() {
		sess.closeFrame = frame
		sess.closeCode = websocket.StatusCode(code)
		sess.closeReason = reason
		close(sess.closing)
	})
	s.log.Info("closing session", "worker", sess.workerID, "session", sess.id, "code", code, "error", c.errCode, "reason", reason)
	s.notifyLocked()
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func (s *Server) violation(sess *session, msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.violationLocked(sess, msg)
}

func (s *Server) violationLocked(sess *session, msg string) {
	s.log.Warn("protocol violation", "worker", sess.workerID, "session", sess.id, "msg", msg)
	s.closeSessionLocked(sess, closeSpec{errCode: studio.ErrCodeProtocolViolation, message: msg, release: true,
		why: "protocol violation by the worker: " + msg})
	s.dispatchLocked()
	s.changedLocked()
}

func (s *Server) handleFrame(sess *session, data []byte) {
	frame, decErr := studio.DecodeWorkerFrame(data)
	// A JSON result goes to a temp file before the lock is taken (file
	// creation is the slow part), and is renamed into place under it.
	var tmpResult string
	if c, ok := frame.(*studio.CompleteJSON); ok && len(c.Result) > 0 && string(c.Result) != "null" {
		var err error
		if tmpResult, _, err = s.saveTemp(c.JobID, bytes.NewReader(c.Result)); err != nil {
			s.log.Error("cannot store a result", "job", c.JobID, "err", err)
			tmpResult = ""
		}
		defer func() {
			if tmpResult != "" {
				_ = os.Remove(tmpResult)
			}
		}()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if sess.ended {
		return
	}
	now := s.clock.Now()
	wk := s.workers[sess.workerID]
	if !sess.welcomed {
		hello, ok := frame.(*studio.Hello)
		if decErr != nil || !ok {
			s.violationLocked(sess, "session not authenticated")
			return
		}
		if wk == nil || wk.Revoked || !hashMatches(wk.TokenHash, hello.AuthToken) {
			s.log.Warn("hello with a wrong auth token", "worker", sess.workerID)
			s.closeSessionLocked(sess, closeSpec{errCode: studio.ErrCodeAuthFailed, message: "auth token does not match"})
			s.notifyLocked()
			return
		}
		if old := wk.sess; old != nil && old != sess {
			s.closeSessionLocked(old, closeSpec{errCode: studio.ErrCodeDuplicateWorker,
				message: "a newer connection for this worker took over", release: true,
				why: "a newer connection of the worker replaced the one holding the job"})
		}
		sess.welcomed = true
		sess.welcomedAt = now
		wk.sess = sess
		caps := hello.Capabilities
		wk.caps = &caps
		wk.lastHB = time.Time{} // offers wait for this session's first heartbeat
		wk.holdOffers, wk.hbBusy = false, false
		if caps.MachineName != "" {
			wk.MachineName = caps.MachineName
		}
		s.sendLocked(sess, studio.Welcome{WorkerID: wk.ID, ServerTime: now.UTC().Format("2006-01-02T15:04:05.000Z07:00")})
		s.log.Info("worker welcomed", "worker", wk.ID, "session", sess.id, "kinds", caps.TaskKinds, "vramThresholdGb", caps.VRAMThresholdGB, "autoEnabled", caps.AutoEnabled)
		s.changedLocked()
		return
	}
	if decErr != nil {
		s.violationLocked(sess, decErr.Error())
		return
	}
	if wk == nil || wk.sess != sess {
		return // replaced or deleted; its close is on the way
	}
	switch f := frame.(type) {
	case *studio.Hello:
		s.violationLocked(sess, "hello sent twice")
	case *studio.Heartbeat:
		caps := f.Capabilities
		wk.caps = &caps
		wk.lastHB = now
		wk.heartbeats++
		wk.holdOffers = false
		wk.hbBusy = s.busyElsewhereLocked(wk, f.CurrentJobID)
		s.sendLocked(sess, studio.HeartbeatAck{})
		if s.dispatchLocked() > 0 { // self-heal: an idle worker and queued work
			s.changedLocked()
		} else {
			s.notifyLocked() // heartbeats are not worth a disk write
		}
	case *studio.Accept:
		j := s.heldLocked(wk, f.JobID)
		if j == nil {
			s.violationLocked(sess, fmt.Sprintf("accept for unknown jobId %s", f.JobID))
			return
		}
		if j.State == JobClaimed {
			j.State = JobRunning
			j.UpdatedAt = now
			s.log.Info("job accepted", "job", j.ID, "worker", wk.ID)
			s.changedLocked()
		}
	case *studio.Reject:
		j := s.heldLocked(wk, f.JobID)
		if j == nil {
			s.violationLocked(sess, fmt.Sprintf("reject for unknown jobId %s", f.JobID))
			return
		}
		s.log.Info("job rejected", "job", j.ID, "worker", wk.ID, "code", f.Code, "reason", f.Reason)
		if f.Code == studio.RejectBusy || f.Code == studio.RejectPaused {
			// Transient: no attempt counted, and no offer to this worker
			// again before its next heartbeat.
			wk.holdOffers = true
		} else {
			if j.Excluded == nil {
				j.Excluded = map[string]string{}
			}
			j.Excluded[wk.ID] = f.Reason
		}
		s.requeueLocked(j, wk, now, fmt.Sprintf("rejected by worker %s: %s", wk.ID, f.Reason))
		s.dispatchLocked()
		s.changedLocked()
	case *studio.CompleteJSON:
		j := s.heldLocked(wk, f.JobID)
		if j == nil {
			// As the hosted studio (studio-protocol.md §3.1 rule 8): a
			// final frame for a job this worker does not hold now, a late
			// one included, is a protocol violation and closes with 4002.
			if lj := s.lateLocked(wk, f.JobID); lj != nil {
				lj.LateReports = append(lj.LateReports, "a result, too late")
			}
			s.violationLocked(sess, fmt.Sprintf("completeJson for unknown jobId %s", f.JobID))
			return
		}
		if len(f.Result) == 0 || string(f.Result) == "null" {
			s.violationLocked(sess, fmt.Sprintf("completeJson for %s without a result", f.JobID))
			return
		}
		rel := resultPath(j.ID, "json")
		err := errors.New("temp file missing")
		if tmpResult != "" {
			err = os.Rename(tmpResult, filepath.Join(s.opts.DataDir, filepath.FromSlash(rel)))
		}
		if err == nil {
			tmpResult = ""
		} else {
			s.log.Error("cannot store a result", "job", j.ID, "err", err)
			s.closeSessionLocked(sess, closeSpec{errCode: studio.ErrCodeInternalError, message: "the studio cannot store the result", release: true})
			s.dispatchLocked()
			s.changedLocked()
			return
		}
		j.Result = append(json.RawMessage(nil), f.Result...)
		j.ResultFile = rel
		j.Prompt = f.Prompt
		s.finishLocked(j, wk, now)
		s.log.Info("job done (json)", "job", j.ID, "worker", wk.ID)
		s.sendLocked(sess, studio.CompleteAck{JobID: j.ID})
		s.dispatchLocked()
		s.changedLocked()
	case *studio.Fail:
		j := s.heldLocked(wk, f.JobID)
		if j == nil {
			// A late report is kept for the dev API; the answer is the
			// hosted studio's (see completeJson above).
			if lj := s.lateLocked(wk, f.JobID); lj != nil {
				lj.LateReports = append(lj.LateReports, f.Error)
			}
			s.violationLocked(sess, fmt.Sprintf("fail for unknown jobId %s", f.JobID))
			return
		}
		s.log.Info("job failed by worker", "job", j.ID, "worker", wk.ID, "retryable", f.Retryable, "err", f.Error)
		if f.Retryable {
			s.releaseJobLocked(j, now, f.Error)
		} else {
			wk.currentJob = ""
			j.Attempts++
			j.State = JobFailed
			j.WorkerID = ""
			j.Error = f.Error
			j.UpdatedAt = now
		}
		s.sendLocked(sess, studio.FailAck{JobID: j.ID})
		s.dispatchLocked()
		s.changedLocked()
	case *studio.LogBatch:
		for _, e := range f.Entries {
			s.logs = append(s.logs, WorkerLog{WorkerID: wk.ID, LogEntry: e})
		}
		if over := len(s.logs) - maxLogs; over > 0 {
			s.logs = append(s.logs[:0:0], s.logs[over:]...)
		}
		s.notifyLocked()
	default:
		if studio.IsReadyForMore(frame) {
			s.violationLocked(sess, "readyForMore is not part of the protocol any more")
			return
		}
		s.violationLocked(sess, fmt.Sprintf("unexpected frame %T", frame))
	}
}

// SweepNow runs one stale sweep: a session whose last heartbeat (or
// connection, before the first heartbeat) is older than 30 s is closed and
// its job released. The background sweep calls this every SweepEvery.
func (s *Server) SweepNow() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	now := s.clock.Now()
	swept := 0
	for sess := range s.sessions {
		if sess.ended {
			continue
		}
		last := sess.connectedAt
		if sess.welcomed {
			last = sess.welcomedAt
			if wk := s.workers[sess.workerID]; wk != nil && wk.sess == sess && wk.lastHB.After(last) {
				last = wk.lastHB
			}
		}
		if now.Sub(last) > HeartbeatStaleAfter {
			s.closeSessionLocked(sess, closeSpec{code: studio.CloseNormal, reason: "no heartbeat for 30 s",
				release: true, why: "the worker stopped sending heartbeats while holding the job"})
			swept++
		}
	}
	if swept > 0 {
		s.log.Info("stale sessions closed", "count", swept)
		s.dispatchLocked()
		s.changedLocked()
	}
}

// busyElsewhereLocked reads a heartbeat's currentJobId: a job the studio
// does not see this worker holding means the worker is still running
// something (typically a job released when the studio restarted), so no
// offer goes to it until a heartbeat says otherwise. A job that is already
// finished does not count: that heartbeat was only built before the result
// arrived.
func (s *Server) busyElsewhereLocked(wk *worker, current string) bool {
	if current == "" || current == wk.currentJob {
		return false
	}
	if j := s.jobs[current]; j != nil && j.State.Terminal() {
		return false
	}
	return true
}
