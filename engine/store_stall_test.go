package engine

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// noteLog records the notes of a job's progress.
type noteLog struct {
	mu    sync.Mutex
	notes []string
	last  Progress
}

func (n *noteLog) progress(p Progress) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.last = p
	if p.Note != "" && (len(n.notes) == 0 || n.notes[len(n.notes)-1] != p.Note) {
		n.notes = append(n.notes, p.Note)
	}
}

func (n *noteLog) get() ([]string, Progress) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.notes...), n.last
}

// TestEnsureStalledDownloadResumes is issue 10 item 4: a server that sends
// the headers and part of the body, then nothing. The bytes that arrived are
// in the .part file while it stalls, the attempt ends at the idle limit, the
// progress says so, and the download resumes from where it stopped.
func TestEnsureStalledDownloadResumes(t *testing.T) {
	b := newBlob(1536<<10, 50)
	half := len(b.data) / 2 // under the copy buffer: nothing may wait in memory
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if b.record(r) == 1 {
			w.Header().Set("Content-Length", fmt.Sprint(len(b.data)))
			w.Write(b.data[:half])
			w.(http.Flusher).Flush()
			<-r.Context().Done() // stalls until the worker ends the attempt
			return
		}
		b.serve(w, r)
	})
	st := newTestStore(t, StoreOptions{IdleTimeout: 600 * time.Millisecond})
	dir, _ := st.ModelDir("m")
	part := filepath.Join(dir, "model.gguf") + partSuffix
	onDisk := make(chan int64, 1)
	var notes noteLog
	progress := func(p Progress) {
		notes.progress(p)
		if strings.HasPrefix(p.Note, "no data from the model server") {
			// The attempt is stalled right now: what arrived is on disk.
			if fi, err := os.Stat(part); err == nil {
				select {
				case onDisk <- fi.Size():
				default:
				}
			}
		}
	}
	paths, err := st.Ensure(context.Background(), "m", []ModelFile{modelFile(srv, b)}, progress)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readFile(t, paths[RoleModel]), b.data) {
		t.Fatal("file differs")
	}
	select {
	case n := <-onDisk:
		if n != int64(half) {
			t.Fatalf("during the stall the .part held %d bytes, want the %d that arrived", n, half)
		}
	default:
		t.Fatal("the progress never showed the stall")
	}
	if got := b.requests(); len(got) != 2 || got[1] != fmt.Sprintf("bytes=%d-", half) {
		t.Fatalf("requests %q, want a resume from %d", got, half)
	}
	got, last := notes.get()
	want := []string{"no data from the model server for 200 ms", "no data from the model server for 600 ms; resuming in 1 ms (resume 1 of 5)"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("notes %q, want %q", got, want)
	}
	if last.Note != "" || last.Done != int64(len(b.data)) {
		t.Fatalf("last progress %+v: the note must clear once bytes flow", last)
	}
}

// TestEnsureStallGivesUpAfterMaxResumes: a server that stalls every time is
// tried a bounded number of times, with the .part kept for the next job.
func TestEnsureStallGivesUpAfterMaxResumes(t *testing.T) {
	b := newBlob(100_000, 51)
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		b.record(r)
		// Ignores ranges, sends a little, then nothing.
		w.Header().Set("Content-Length", fmt.Sprint(len(b.data)))
		w.Write(b.data[:1000])
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	st := newTestStore(t, StoreOptions{IdleTimeout: 60 * time.Millisecond, MaxResumes: 2})
	var notes noteLog
	_, err := st.Ensure(context.Background(), "m", []ModelFile{modelFile(srv, b)}, notes.progress)
	if err == nil || !strings.Contains(err.Error(), "stalled after 1000 bytes") || !strings.Contains(err.Error(), "gave up with 2 of 2 resumes used") || !IsRetryable(err) {
		t.Fatalf("got %v (retryable %t)", err, IsRetryable(err))
	}
	if n := len(b.requests()); n != 3 {
		t.Fatalf("%d requests, want 1 + 2 resumes", n)
	}
	dir, _ := st.ModelDir("m")
	if n := partSize(t, filepath.Join(dir, "model.gguf")); n != 1000 {
		t.Fatalf(".part has %d bytes", n)
	}
	got, last := notes.get()
	if !strings.Contains(strings.Join(got, "|"), "resuming in 2 ms (resume 2 of 2)") || last.Note != "" {
		t.Fatalf("notes %q, last %+v", got, last)
	}
}

// TestEnsureStallBeforeHeaders: a server that never answers is a stall
// too, and one that brings nothing twice in a row is not waited for again,
// resumes left or not.
func TestEnsureStallBeforeHeaders(t *testing.T) {
	b := newBlob(10_000, 52)
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		b.record(r)
		<-r.Context().Done()
	})
	st := newTestStore(t, StoreOptions{IdleTimeout: 50 * time.Millisecond})
	_, err := st.Ensure(context.Background(), "m", []ModelFile{modelFile(srv, b)}, nil)
	if err == nil || !strings.Contains(err.Error(), "stalled after 0 bytes: no data from the model server for 50 ms") ||
		!strings.Contains(err.Error(), "1 of 5 resumes used") {
		t.Fatalf("got %v", err)
	}
	if n := len(b.requests()); n != 2 {
		t.Fatalf("%d requests, want 2", n)
	}
}

func TestSpoken(t *testing.T) {
	for d, want := range map[time.Duration]string{
		200 * time.Millisecond: "200 ms", 20 * time.Second: "20 s", time.Minute: "1 min", 150 * time.Second: "2 min 30 s",
	} {
		if got := spoken(d); got != want {
			t.Errorf("spoken(%s) = %q, want %q", d, got, want)
		}
	}
}
