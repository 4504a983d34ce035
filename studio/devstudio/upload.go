package devstudio

import (
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

var extRe = regexp.MustCompile(`^[a-z0-9]{1,10}$`)

const (
	maxTextPart = 4 << 20  // prompt and ext parts
	maxDrain    = 32 << 20 // body read off before an early error answer
)

// drain reads what is left of an upload before an early answer, so the
// worker sees the status rather than a reset connection.
func drain(r *http.Request) { _, _ = io.Copy(io.Discard, io.LimitReader(r.Body, maxDrain)) }

// handleComplete is POST /graphics/api/workers/{workerId}/jobs/{jobId}/complete:
// the binary result of a job as multipart (prompt, ext, file part image).
func (s *Server) handleComplete(w http.ResponseWriter, r *http.Request) {
	if !allow(w, r, http.MethodPost) {
		return
	}
	workerID, jobID := r.PathValue("workerId"), r.PathValue("jobId")
	token := bearer(r)

	s.mu.Lock()
	wk := s.workers[workerID]
	if wk == nil || wk.Revoked || !hashMatches(wk.TokenHash, token) {
		s.mu.Unlock()
		drain(r)
		writeErr(w, http.StatusUnauthorized, "unknown worker or auth token")
		return
	}
	if s.failUploads > 0 {
		s.failUploads--
		s.mu.Unlock()
		drain(r)
		s.log.Info("upload answered 500 on purpose (FailNextUploads)", "job", jobID)
		writeErr(w, http.StatusInternalServerError, "upload failed on purpose (test hook)")
		return
	}
	if s.heldLocked(wk, jobID) == nil {
		s.mu.Unlock()
		drain(r)
		writeErr(w, http.StatusConflict, "worker %s does not hold job %s", workerID, jobID)
		return
	}
	s.mu.Unlock()

	r.Body = http.MaxBytesReader(w, r.Body, s.maxUpload)
	mr, err := r.MultipartReader()
	if err != nil {
		writeErr(w, http.StatusBadRequest, "the result must be multipart/form-data: %v", err)
		return
	}
	var prompt, ext, tmp string
	var size int64
	defer func() {
		if tmp != "" {
			_ = os.Remove(tmp)
		}
	}()
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			uploadErr(w, "cannot read the multipart body", err)
			return
		}
		switch part.FormName() {
		case "prompt":
			prompt, err = readText(part)
		case "ext":
			ext, err = readText(part)
			ext = strings.ToLower(strings.TrimSpace(ext))
		case "image":
			if tmp != "" {
				writeErr(w, http.StatusBadRequest, "more than one image part")
				return
			}
			tmp, size, err = s.saveTemp(jobID, part)
		default:
			_, err = io.Copy(io.Discard, part) // generationMeta and friends
		}
		part.Close()
		if err != nil {
			uploadErr(w, fmt.Sprintf("cannot read part %q", part.FormName()), err)
			return
		}
	}
	switch {
	case tmp == "":
		writeErr(w, http.StatusBadRequest, "the result file part %q is missing", "image")
		return
	case size == 0:
		writeErr(w, http.StatusBadRequest, "the result file is empty")
		return
	case !extRe.MatchString(ext):
		writeErr(w, http.StatusBadRequest, "ext must be 1-10 letters or digits (like webp), got %q", ext)
		return
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.heldLocked(wk, jobID)
	if j == nil || wk.Revoked { // released while uploading
		writeErr(w, http.StatusConflict, "worker %s no longer holds job %s", workerID, jobID)
		return
	}
	rel := resultPath(jobID, ext)
	if err := os.Rename(tmp, filepath.Join(s.opts.DataDir, filepath.FromSlash(rel))); err != nil {
		s.log.Error("cannot store a result", "job", jobID, "err", err)
		writeErr(w, http.StatusInternalServerError, "the studio cannot store the result")
		return
	}
	tmp = ""
	j.ResultFile = rel
	j.Result = nil
	j.Prompt = prompt
	s.finishLocked(j, wk, s.clock.Now())
	s.log.Info("job done (upload)", "job", jobID, "worker", workerID, "bytes", size, "ext", ext)
	s.dispatchLocked()
	s.changedLocked()
	writeJSON(w, http.StatusOK, map[string]any{"jobId": jobID, "status": JobDone, "bytes": size})
}

func uploadErr(w http.ResponseWriter, what string, err error) {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		writeErr(w, http.StatusRequestEntityTooLarge, "the upload is larger than %d bytes", mbe.Limit)
		return
	}
	writeErr(w, http.StatusBadRequest, "%s: %v", what, err)
}

func readText(p *multipart.Part) (string, error) {
	b, err := io.ReadAll(io.LimitReader(p, maxTextPart+1))
	if err != nil {
		return "", err
	}
	if len(b) > maxTextPart {
		return "", fmt.Errorf("longer than %d bytes", maxTextPart)
	}
	return string(b), nil
}

func (s *Server) saveTemp(jobID string, src io.Reader) (string, int64, error) {
	f, err := os.CreateTemp(s.resultsDir, jobID+".upload-*")
	if err != nil {
		return "", 0, err
	}
	n, err := io.Copy(f, src)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return "", 0, err
	}
	return f.Name(), n, nil
}
