package studio

import (
	"context"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// recordedWait stands in for the clock: it records each pause and returns
// at once, so retry tests neither sleep nor depend on timing.
type recordedWait struct {
	mu     sync.Mutex
	pauses []time.Duration
}

func (r *recordedWait) wait(ctx context.Context, d time.Duration) error {
	r.mu.Lock()
	r.pauses = append(r.pauses, d)
	r.mu.Unlock()
	return ctx.Err()
}

type uploadSeen struct {
	Method, Path, Auth, UserAgent string
	Fields                        map[string]string
	FileName, FileType            string
	FileData                      []byte
	PartOrder                     []string
}

// uploadServer answers /complete with the statuses given, one per request
// (the last repeats), and records what each request carried.
func uploadServer(t *testing.T, statuses ...int) (*httptest.Server, func() []uploadSeen) {
	t.Helper()
	var mu sync.Mutex
	var seen []uploadSeen
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := uploadSeen{Method: r.Method, Path: r.URL.EscapedPath(), Auth: r.Header.Get("Authorization"),
			UserAgent: r.Header.Get("User-Agent"), Fields: map[string]string{}}
		mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if err != nil || mt != "multipart/form-data" {
			t.Errorf("content type %q: %v", r.Header.Get("Content-Type"), err)
		} else {
			mr := multipart.NewReader(r.Body, params["boundary"])
			for {
				p, err := mr.NextPart()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Errorf("multipart: %v", err)
					break
				}
				data, _ := io.ReadAll(p)
				s.PartOrder = append(s.PartOrder, p.FormName())
				if p.FileName() != "" {
					s.FileName, s.FileType, s.FileData = p.FileName(), p.Header.Get("Content-Type"), data
				} else {
					s.Fields[p.FormName()] = string(data)
				}
			}
		}
		mu.Lock()
		seen = append(seen, s)
		n := len(seen)
		mu.Unlock()
		st := statuses[min(n, len(statuses))-1]
		w.WriteHeader(st)
		if st != http.StatusOK {
			_, _ = io.WriteString(w, "status "+http.StatusText(st))
		}
	}))
	t.Cleanup(srv.Close)
	return srv, func() []uploadSeen {
		mu.Lock()
		defer mu.Unlock()
		return append([]uploadSeen(nil), seen...)
	}
}

func testUpload(base string) resultUpload {
	return resultUpload{
		APIBase: base + "/graphics/api", WorkerID: "w-1", AuthToken: "tok-secret",
		JobID: "job-42", Prompt: strings.Repeat("a castle on a hill, ", 30), Ext: "webp",
		Data: []byte("RIFF....WEBPVP8 fake bytes"),
	}
}

func TestUploadMultipartFieldsExact(t *testing.T) {
	srv, seen := uploadServer(t, http.StatusOK)
	var rw recordedWait
	u := testUpload(srv.URL)
	if err := uploadResult(context.Background(), srv.Client(), rw.wait, u); err != nil {
		t.Fatalf("upload: %v", err)
	}
	got := seen()
	if len(got) != 1 {
		t.Fatalf("requests = %d, want 1", len(got))
	}
	s := got[0]
	if s.Method != http.MethodPost || s.Path != "/graphics/api/workers/w-1/jobs/job-42/complete" {
		t.Errorf("request %s %s", s.Method, s.Path)
	}
	if s.Auth != "Bearer tok-secret" {
		t.Errorf("Authorization = %q", s.Auth)
	}
	if s.UserAgent != "studio-worker/"+Version {
		t.Errorf("User-Agent = %q", s.UserAgent)
	}
	if strings.Join(s.PartOrder, ",") != "prompt,ext,image" {
		t.Errorf("parts = %v, want prompt,ext,image", s.PartOrder)
	}
	if s.Fields["prompt"] != u.Prompt {
		t.Errorf("prompt part was changed or truncated: %d chars, want %d", len(s.Fields["prompt"]), len(u.Prompt))
	}
	if s.Fields["ext"] != "webp" {
		t.Errorf("ext = %q", s.Fields["ext"])
	}
	if s.FileName != "job-42.webp" || s.FileType != "image/webp" || string(s.FileData) != string(u.Data) {
		t.Errorf("file part %q %q %q", s.FileName, s.FileType, s.FileData)
	}
	if len(rw.pauses) != 0 {
		t.Errorf("paused %v on a first-try success", rw.pauses)
	}
}

func TestUpload500TwiceThenSuccess(t *testing.T) {
	srv, seen := uploadServer(t, 500, 503, 200)
	var rw recordedWait
	if err := uploadResult(context.Background(), srv.Client(), rw.wait, testUpload(srv.URL)); err != nil {
		t.Fatalf("upload: %v", err)
	}
	got := seen()
	if len(got) != 3 {
		t.Fatalf("requests = %d, want 3", len(got))
	}
	for i, s := range got {
		if string(s.FileData) != string(testUpload("").Data) || s.Fields["prompt"] == "" {
			t.Errorf("attempt %d did not carry the same body", i+1)
		}
	}
	if want := []time.Duration{time.Second, 2 * time.Second}; !equalDurations(rw.pauses, want) {
		t.Errorf("pauses = %v, want %v (1 s × attempt)", rw.pauses, want)
	}
}

func TestUploadGivesUpAfterTwoRetries(t *testing.T) {
	srv, seen := uploadServer(t, 500)
	var rw recordedWait
	err := uploadResult(context.Background(), srv.Client(), rw.wait, testUpload(srv.URL))
	var ue *UploadError
	if !errors.As(err, &ue) || ue.Status != 500 {
		t.Fatalf("err = %v, want an UploadError 500", err)
	}
	if n := len(seen()); n != 3 {
		t.Errorf("requests = %d, want 3 (1 + 2 retries)", n)
	}
	if !strings.Contains(err.Error(), "HTTP 500") {
		t.Errorf("error %q should name the status", err)
	}
}

func TestUpload4xxNotRetried(t *testing.T) {
	for _, st := range []int{400, 401, 409} {
		srv, seen := uploadServer(t, st, 200)
		var rw recordedWait
		err := uploadResult(context.Background(), srv.Client(), rw.wait, testUpload(srv.URL))
		var ue *UploadError
		if !errors.As(err, &ue) || ue.Status != st {
			t.Fatalf("%d: err = %v", st, err)
		}
		if n := len(seen()); n != 1 {
			t.Errorf("%d: requests = %d, want 1", st, n)
		}
		if len(rw.pauses) != 0 {
			t.Errorf("%d: paused %v", st, rw.pauses)
		}
	}
}

func TestUploadTransportErrorRetried(t *testing.T) {
	var mu sync.Mutex
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		_, _ = io.Copy(io.Discard, r.Body)
		if n == 1 {
			// Drop the connection without an answer: a transport error.
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	var rw recordedWait
	if err := uploadResult(context.Background(), srv.Client(), rw.wait, testUpload(srv.URL)); err != nil {
		t.Fatalf("upload: %v", err)
	}
	if calls != 2 || !equalDurations(rw.pauses, []time.Duration{time.Second}) {
		t.Errorf("calls = %d, pauses = %v", calls, rw.pauses)
	}
}

func TestUploadStopsRetryingWhenContextEnds(t *testing.T) {
	srv, seen := uploadServer(t, 500)
	ctx, cancel := context.WithCancel(context.Background())
	wait := func(ctx context.Context, d time.Duration) error { cancel(); return ctx.Err() }
	err := uploadResult(ctx, srv.Client(), wait, testUpload(srv.URL))
	if err == nil || !strings.Contains(err.Error(), "HTTP 500") {
		t.Fatalf("err = %v", err)
	}
	if n := len(seen()); n != 1 {
		t.Errorf("requests = %d, want 1", n)
	}
}

func TestUploadEscapesIDsInPath(t *testing.T) {
	u := resultUpload{APIBase: "https://s.example/graphics/api/", WorkerID: "w/1", JobID: "j 2"}
	if got, want := u.endpoint(), "https://s.example/graphics/api/workers/w%2F1/jobs/j%202/complete"; got != want {
		t.Errorf("endpoint = %q, want %q", got, want)
	}
}

func TestContentTypeForExt(t *testing.T) {
	for ext, want := range map[string]string{
		"png": "image/png", "webp": "image/webp", "gif": "image/gif", "wav": "audio/wav",
		"mp3": "audio/mpeg", "mp4": "video/mp4", "PNG": "image/png", "bin": "application/octet-stream", "": "application/octet-stream",
	} {
		if got := ContentTypeForExt(ext); got != want {
			t.Errorf("%q -> %q, want %q", ext, got, want)
		}
	}
}

func equalDurations(a, b []time.Duration) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
