package studio

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/minisgg/studio-worker/engine"
)

// JournalFile is the journal's name in its folder.
const JournalFile = "jobs-journal.json"

// JournalEntry is one accepted job the studio has not yet acknowledged.
type JournalEntry struct {
	JobID    string          `json:"jobId"`
	Model    string          `json:"model"`
	Kind     engine.TaskKind `json:"kind"`
	Accepted time.Time       `json:"accepted"`
	// Kept is set when the job finished but its result could not be
	// delivered (the studio was unreachable): JSON holds completeJson's
	// result, or Ext names a binary result kept in <jobId>.<ext> beside
	// the journal.
	Kept   bool            `json:"kept,omitempty"`
	JSON   json.RawMessage `json:"json,omitempty"`
	Ext    string          `json:"ext,omitempty"`
	Prompt string          `json:"prompt,omitempty"`
	Stats  engine.Stats    `json:"stats"`
	// Reported is set once a final frame for it went out after a restart;
	// an entry still here at the start after that is dropped (the studio
	// never acknowledged it, and must not be asked forever).
	Reported bool `json:"reported,omitempty"`
}

// Journal is the small file in the worker's state folder that lists the
// jobs it accepted and the studio has not yet acknowledged as finished, so
// that a crash, a kill or a power cut forgets none of them: the next start
// reports each as failed (retryable) or delivers its kept result. Writes
// go to a temporary file that replaces the journal, so a crash mid-write
// leaves the old one. It is safe for concurrent use.
type Journal struct {
	dir string

	mu      sync.Mutex
	entries map[string]*JournalEntry
}

// OpenJournal reads the journal in dir (creating the folder when needed).
// A journal that cannot be parsed is set aside as "<name>.corrupt" and an
// empty one is used; the error says so.
func OpenJournal(dir string) (*Journal, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("cannot create the state folder %s: %w", dir, err)
	}
	j := &Journal{dir: dir, entries: map[string]*JournalEntry{}}
	b, err := os.ReadFile(j.path())
	if errors.Is(err, os.ErrNotExist) {
		return j, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read the job journal: %w", err)
	}
	var list []*JournalEntry
	if err := json.Unmarshal(b, &list); err != nil {
		_ = os.Rename(j.path(), j.path()+".corrupt")
		return j, fmt.Errorf("the job journal %s was damaged and was set aside: %v", j.path(), err)
	}
	for _, e := range list {
		if e != nil && e.JobID != "" {
			j.entries[e.JobID] = e
		}
	}
	return j, nil
}

func (j *Journal) path() string { return filepath.Join(j.dir, JournalFile) }

// resultPath is where a kept binary result lives. The job id is made safe
// for a file name.
func (j *Journal) resultPath(e *JournalEntry) string {
	safe := strings.Map(func(r rune) rune {
		if r == '/' || r == '\\' || r == ':' || r < ' ' {
			return '_'
		}
		return r
	}, e.JobID)
	return filepath.Join(j.dir, "result-"+safe+"."+e.Ext)
}

// Entries lists the journal, oldest first.
func (j *Journal) Entries() []JournalEntry {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := make([]JournalEntry, 0, len(j.entries))
	for _, e := range j.entries {
		out = append(out, *e)
	}
	slices.SortFunc(out, func(a, b JournalEntry) int { return a.Accepted.Compare(b.Accepted) })
	return out
}

// Begin records an accepted job before it runs.
func (j *Journal) Begin(e JournalEntry) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.entries[e.JobID] = &e
	return j.saveLocked()
}

// Keep stores a finished job's result with its entry, for delivery when
// the studio can be reached again.
func (j *Journal) Keep(jobID string, res engine.Result, prompt string) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	e := j.entries[jobID]
	if e == nil {
		return fmt.Errorf("job %s is not in the journal", jobID)
	}
	e.Kept, e.Prompt, e.Stats = true, prompt, res.Stats
	if len(res.JSON) > 0 {
		e.JSON = res.JSON
	} else {
		e.Ext = res.Ext
		if err := os.WriteFile(j.resultPath(e), res.Bytes, 0o600); err != nil {
			e.Kept = false
			return fmt.Errorf("cannot keep the result of job %s: %w", jobID, err)
		}
	}
	return j.saveLocked()
}

// ResultBytes reads a kept binary result.
func (j *Journal) ResultBytes(e JournalEntry) ([]byte, error) { return os.ReadFile(j.resultPath(&e)) }

// MarkReported notes that a final frame for the job went out after a
// restart.
func (j *Journal) MarkReported(jobID string) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if e := j.entries[jobID]; e != nil {
		e.Reported = true
		return j.saveLocked()
	}
	return nil
}

// Remove forgets a job (the studio acknowledged its final frame, or said
// it is no longer this worker's) and its kept result.
func (j *Journal) Remove(jobID string) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	e := j.entries[jobID]
	if e == nil {
		return nil
	}
	if e.Ext != "" {
		_ = os.Remove(j.resultPath(e))
	}
	delete(j.entries, jobID)
	return j.saveLocked()
}

// Has reports whether the job is in the journal.
func (j *Journal) Has(jobID string) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.entries[jobID] != nil
}

func (j *Journal) saveLocked() error {
	list := make([]*JournalEntry, 0, len(j.entries))
	for _, e := range j.entries {
		list = append(list, e)
	}
	slices.SortFunc(list, func(a, b *JournalEntry) int { return a.Accepted.Compare(b.Accepted) })
	b, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(j.dir, ".journal-*")
	if err != nil {
		return fmt.Errorf("cannot write the job journal: %w", err)
	}
	_, werr := tmp.Write(b)
	serr := tmp.Sync()
	cerr := tmp.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("cannot write the job journal: %w", err)
	}
	if err := os.Rename(tmp.Name(), j.path()); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("cannot write the job journal: %w", err)
	}
	return nil
}
