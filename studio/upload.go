package studio

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"time"
)

// Upload timing of §4.5: one 60 s limit per attempt, two extra attempts on
// 5xx or transport errors, 1 s × attempt between them.
const (
	UploadTimeout      = 60 * time.Second
	UploadExtraRetries = 2
	UploadRetryPause   = time.Second
)

// ContentTypeForExt is the Content-Type of the result file part (§4.5).
func ContentTypeForExt(ext string) string {
	switch strings.ToLower(ext) {
	case "png":
		return "image/png"
	case "webp":
		return "image/webp"
	case "gif":
		return "image/gif"
	case "wav":
		return "audio/wav"
	case "mp3":
		return "audio/mpeg"
	case "mp4":
		return "video/mp4"
	}
	return "application/octet-stream"
}

// UploadError is an HTTP answer other than 2xx from /complete.
type UploadError struct {
	Status int
	Body   string // first bytes of the answer, for the log
}

func (e *UploadError) Error() string {
	msg := fmt.Sprintf("the studio refused the result upload (HTTP %d)", e.Status)
	if e.Body != "" {
		msg += ": " + e.Body
	}
	return msg
}

// retryable: 5xx only. A 4xx (409: the claim is gone, 401: token revoked)
// will not change on a second try.
func (e *UploadError) retryable() bool { return e.Status >= 500 }

// waitFunc pauses for d or until ctx ends; the worker backs it with its
// Clock so tests never sleep.
type waitFunc func(ctx context.Context, d time.Duration) error

// resultUpload is one binary result on its way to the studio.
type resultUpload struct {
	APIBase   string // …/graphics/api
	WorkerID  string
	AuthToken string
	JobID     string
	Prompt    string
	Ext       string
	Data      []byte
}

func (u resultUpload) endpoint() string {
	return strings.TrimRight(u.APIBase, "/") + "/workers/" + url.PathEscape(u.WorkerID) +
		"/jobs/" + url.PathEscape(u.JobID) + "/complete"
}

var quoteEscaper = strings.NewReplacer("\\", "\\\\", `"`, "\\\"")

// body builds the multipart form once so every attempt sends the same
// bytes: parts prompt, ext and the file part "image" (for every binary kind,
// audio and video included), named <jobId>.<ext>.
func (u resultUpload) body() (contentType string, data []byte, err error) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	if err := mw.WriteField("prompt", u.Prompt); err != nil {
		return "", nil, err
	}
	if err := mw.WriteField("ext", u.Ext); err != nil {
		return "", nil, err
	}
	h := make(textproto.MIMEHeader)
	h.Set("Content-Disposition", fmt.Sprintf(`form-data; name="image"; filename="%s"`,
		quoteEscaper.Replace(u.JobID+"."+u.Ext)))
	h.Set("Content-Type", ContentTypeForExt(u.Ext))
	part, err := mw.CreatePart(h)
	if err != nil {
		return "", nil, err
	}
	if _, err := part.Write(u.Data); err != nil {
		return "", nil, err
	}
	if err := mw.Close(); err != nil {
		return "", nil, err
	}
	return mw.FormDataContentType(), buf.Bytes(), nil
}

// uploadResult posts a binary result, retrying 5xx and transport errors. It
// returns nil only when the studio answered 2xx.
func uploadResult(ctx context.Context, client *http.Client, wait waitFunc, u resultUpload) error {
	if client == nil {
		client = http.DefaultClient
	}
	ctype, body, err := u.body()
	if err != nil {
		return fmt.Errorf("building the result upload: %w", err)
	}
	var last error
	for attempt := 1; attempt <= 1+UploadExtraRetries; attempt++ {
		if attempt > 1 {
			if err := wait(ctx, UploadRetryPause*time.Duration(attempt-1)); err != nil {
				return fmt.Errorf("%w (stopped retrying: %v)", last, err)
			}
		}
		last = uploadOnce(ctx, client, u, ctype, body)
		if last == nil {
			return nil
		}
		var ue *UploadError
		if errors.As(last, &ue) && !ue.retryable() {
			return last
		}
		if ctx.Err() != nil {
			return last
		}
	}
	return last
}

func uploadOnce(ctx context.Context, client *http.Client, u resultUpload, ctype string, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, UploadTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.endpoint(), bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("result upload: %w", err)
	}
	req.Header.Set("Content-Type", ctype)
	req.Header.Set("Authorization", "Bearer "+u.AuthToken)
	req.Header.Set("User-Agent", UserAgent())
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("result upload could not reach the studio: %w", redactURLError(err))
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	// Drain a little more so the connection can be reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 == 2 {
		return nil
	}
	return &UploadError{Status: resp.StatusCode, Body: strings.TrimSpace(string(snippet))}
}

// redactURLError keeps the transport cause but drops the URL wrapper's
// repetition of the endpoint: the job id is already on the log line.
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
