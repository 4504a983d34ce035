package engine

// The models folder's disk budget (issue #12 item 4): the models the worker
// downloaded may take at most the donor's models_disk_budget_gb; before a
// download, the least recently used of them are deleted to make room.
//
// What counts: every model folder the store made (one with its
// modelMetaFile), all its files, partial downloads included. What never
// counts and is never deleted: files the donor placed in the models folder
// themselves (a loose .gguf, see LocalModels) and folders the store did not
// make. What is never evicted: a model a job uses (Store.Use), one an
// engine holds in memory (Runner.residentModelPaths), one being downloaded.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

const (
	// lastUsedFile records, beside a model's files, when a job last used
	// the model (written by Store.Use), for least-recently-used eviction.
	lastUsedFile = ".studio-last-used.json"
	// evictingPrefix names a model folder on its way out: the folder is
	// renamed to it first (one atomic step, after which the model is gone
	// from the store), then deleted. A crash in between leaves only a
	// hidden folder, which List skips and the next eviction removes.
	evictingPrefix = ".evicting-"
)

// lastUsedRecord is the content of lastUsedFile.
type lastUsedRecord struct {
	ID       string    `json:"id"`
	LastUsed time.Time `json:"lastUsed"`
}

// DiskBudgetError says a job's model cannot fit the models folder budget
// (models_disk_budget_gb): either it is bigger than the whole budget, or
// the models that would have to be deleted to make room are in use, held in
// memory or being downloaded. It is this machine's limit, not the job's:
// IsRetryable is true (studio-protocol.md §5.1: everything but "cannot
// serve" is retryable), so the studio may run the job on another worker.
type DiskBudgetError struct {
	Model string
	// NeedBytes is the model's whole size in the models folder once
	// downloaded (what is on disk already plus what is still to come).
	NeedBytes uint64
	// BudgetBytes is the budget.
	BudgetBytes uint64
	// Kept names the models that would have to go but cannot, each with
	// why ("a (in use)"); empty when the model alone is over the budget.
	Kept []string
	// KeptBytes is what the Kept models and the other downloaded models
	// that stay take of the budget.
	KeptBytes uint64
}

func (e *DiskBudgetError) Error() string {
	msg := fmt.Sprintf("this job's model needs %s; the models folder budget you set in Settings is %s",
		FormatGB(e.NeedBytes), FormatGB(e.BudgetBytes))
	if len(e.Kept) == 0 {
		return msg
	}
	return msg + fmt.Sprintf(" and %s of it is taken by models that cannot be deleted now: %s",
		FormatGB(e.KeptBytes), strings.Join(e.Kept, ", "))
}

// Eviction is one model deleted to make room, as logged.
type Eviction struct {
	ID       string
	Bytes    uint64
	LastUsed time.Time // zero when unknown
}

// BudgetUse is what the disk budget counts now, for the Models page.
type BudgetUse struct {
	// BudgetBytes is the budget; 0 when there is none.
	BudgetBytes uint64
	// UsedBytes is what the models the worker downloaded take (all their
	// files, partial downloads included); Models is how many there are.
	UsedBytes uint64
	Models    int
}

// String says it in a donor's words, each size in its own unit
// (FormatSize): "38.3 MB of 20.00 GB used by 2 downloaded models".
func (u BudgetUse) String() string {
	if u.BudgetBytes == 0 {
		return fmt.Sprintf("%s used by %s (no budget set)", FormatSize(u.UsedBytes), downloadedModels(u.Models))
	}
	return fmt.Sprintf("%s of %s used by %s", FormatSize(u.UsedBytes), FormatSize(u.BudgetBytes), downloadedModels(u.Models))
}

// Over is how far the downloaded models go past the budget; 0 when they
// fit or there is no budget (a budget lowered below what is stored: the
// next download that needs room deletes the oldest).
func (u BudgetUse) Over() uint64 {
	if u.BudgetBytes == 0 || u.UsedBytes <= u.BudgetBytes {
		return 0
	}
	return u.UsedBytes - u.BudgetBytes
}

func downloadedModels(n int) string {
	if n == 1 {
		return "1 downloaded model"
	}
	return strconv.Itoa(n) + " downloaded models"
}

// BudgetUse measures the models the budget counts.
func (s *Store) BudgetUse() (BudgetUse, error) {
	models, err := s.List()
	if err != nil {
		return BudgetUse{}, err
	}
	u := BudgetUse{BudgetBytes: s.budgetBytes()}
	for _, m := range models {
		if m.Downloaded {
			u.UsedBytes += m.Bytes
			u.Models++
		}
	}
	return u, nil
}

func (s *Store) budgetBytes() uint64 {
	if s.budget == nil {
		return 0
	}
	return s.budget()
}

// setResident tells the store how to learn which model files the engines
// hold in memory (the Runner sets it).
func (s *Store) setResident(fn func() []string) {
	s.mu.Lock()
	s.residentFn = fn
	s.mu.Unlock()
}

// residentDirs is the set of model folder names whose files an engine
// holds in memory now.
func (s *Store) residentDirs() map[string]bool {
	s.mu.Lock()
	fn := s.residentFn
	s.mu.Unlock()
	out := map[string]bool{}
	if fn == nil {
		return out
	}
	root := filepath.Clean(s.root)
	for _, p := range fn() {
		dir := filepath.Dir(filepath.Clean(p))
		if filepath.Dir(dir) == root {
			out[filepath.Base(dir)] = true
		}
	}
	return out
}

// touchLastUsed records that a job uses the model now. A model without a
// folder yet (a first download) gets its record when the job ends.
func (s *Store) touchLastUsed(modelID string) {
	dir, err := s.ModelDir(modelID)
	if err != nil {
		return
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return
	}
	b, _ := json.Marshal(lastUsedRecord{ID: modelID, LastUsed: s.now().UTC()})
	if err := writeFileAtomic(filepath.Join(dir, lastUsedFile), b); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.log.Warn("could not record when the model was last used", "op", "store", "model", modelID, "err", err)
	}
}

// readLastUsed reads a model folder's last-use record. A missing or
// unreadable one gives ok=false; corrupt says the file was there but not a
// record (the caller falls back on the files' own times).
func readLastUsed(dir string) (t time.Time, ok, corrupt bool) {
	b, err := os.ReadFile(filepath.Join(dir, lastUsedFile))
	if err != nil {
		return time.Time{}, false, false
	}
	var rec lastUsedRecord
	if json.Unmarshal(b, &rec) != nil || rec.LastUsed.IsZero() {
		return time.Time{}, false, true
	}
	return rec.LastUsed, true, false
}

// candidate is a downloaded model the budget weighs.
type candidate struct {
	m    StoredModel
	key  string // folder name
	size uint64 // bytes counted: on disk, or what a download under way will take
	why  string // why it cannot be evicted; "" when it can
}

// budgetPlan is what makeRoom works out: the model's size once downloaded,
// the models to evict (oldest use first), or why it cannot fit.
type budgetPlan struct {
	total uint64
	evict []candidate
}

// pendingBytes is what the files still have to bring into dir: a file on
// disk counts nothing more (it is counted with the folder), a partial one
// its announced size less what it holds. A file whose size the offer does
// not give is counted once the model server announces it (budgetAnnounced).

func pendingBytes(dir string, files []ModelFile) uint64 {
	var need uint64
	for _, f := range files {
		final := filepath.Join(dir, f.Filename)
		if st, err := os.Stat(final); err == nil && st.Mode().IsRegular() {
			continue
		}
		n := f.ApproxBytes
		if st, err := os.Stat(final + partSuffix); err == nil {
			n -= min(n, uint64(st.Size()))
		}
		need += n
	}
	return need
}

// planRoom works out whether modelID's files fit the budget, and which
// models to evict for that: the model will take what its folder holds plus
// what the files still bring, or atLeast if that is more. It changes
// nothing. No budget, or nothing left to download, is an empty plan.
func (s *Store) planRoom(modelID string, files []ModelFile, atLeast uint64) (budgetPlan, error) {
	budget := s.budgetBytes()
	dir, err := s.ModelDir(modelID)
	if err != nil || budget == 0 {
		return budgetPlan{}, err
	}
	need := pendingBytes(dir, files)
	if need == 0 && atLeast == 0 {
		return budgetPlan{}, nil
	}
	key := filepath.Base(dir)
	resident := s.residentDirs()
	models, err := s.List()
	if err != nil {
		return budgetPlan{}, err
	}
	var own uint64
	var others []candidate
	s.mu.Lock()
	downloading := map[string]bool{}
	for p := range s.flights {
		downloading[filepath.Base(filepath.Dir(p))] = true
	}
	for _, m := range models {
		k := filepath.Base(m.Dir)
		if k == key {
			own = m.Bytes
			continue
		}
		if !m.Downloaded {
			continue
		}
		c := candidate{m: m, key: k, size: max(m.Bytes, s.reserved[k])}
		switch {
		case downloading[k] || s.reserved[k] > 0:
			c.why = "being downloaded"
		case s.inUse[k] > 0:
			c.why = "in use"
		case resident[k]:
			c.why = "loaded in memory"
		}
		others = append(others, c)
	}
	s.mu.Unlock()

	plan := budgetPlan{total: max(own+need, atLeast)}
	if plan.total <= own {
		return budgetPlan{}, nil // nothing more comes
	}
	if plan.total > budget {
		return plan, &DiskBudgetError{Model: modelID, NeedBytes: plan.total, BudgetBytes: budget}
	}
	var used uint64
	for _, c := range others {
		used += c.size
	}
	// Least recently used first; a model never used since its download
	// counts from its files' times; ties go by name, so the order is stable.
	slices.SortFunc(others, func(a, b candidate) int {
		if c := a.m.LastUsed.Compare(b.m.LastUsed); c != 0 {
			return c
		}
		return strings.Compare(a.key, b.key)
	})
	for _, c := range others {
		if used+plan.total <= budget {
			break
		}
		if c.why == "" {
			plan.evict = append(plan.evict, c)
			used -= c.size
		}
	}
	if used+plan.total > budget {
		e := &DiskBudgetError{Model: modelID, NeedBytes: plan.total, BudgetBytes: budget, KeptBytes: used}
		for _, c := range others {
			if c.why != "" {
				e.Kept = append(e.Kept, fmt.Sprintf("%s (%s, %s)", c.m.ID, FormatGB(c.size), c.why))
			}
		}
		return plan, e
	}
	return plan, nil
}

// CheckRoom is the disk budget's preflight at offer time: nil when
// modelID's files fit the models folder budget (evicting models that may
// be evicted), else a *DiskBudgetError saying why not. It deletes nothing.
func (s *Store) CheckRoom(modelID string, files []ModelFile) error {
	_, err := s.planRoom(modelID, files, 0)
	return err
}

// makeRoom applies the budget before modelID's files are downloaded: it
// evicts the least recently used models the plan names and reserves the
// model's size until the returned release is called (so that two downloads
// at once do not count the same room twice).
func (s *Store) makeRoom(modelID string, files []ModelFile) (release func(), err error) {
	return s.makeRoomFor(modelID, files, 0)
}

// budgetAnnounced applies the budget again when the model server announces
// more of a file than the offer said (or the offer said nothing): the
// model's room grows by the difference, evicting more if need be.
func (s *Store) budgetAnnounced(final string, f ModelFile, total uint64) error {
	if s.budgetBytes() == 0 || total <= f.ApproxBytes {
		return nil
	}
	key := filepath.Base(filepath.Dir(final))
	s.mu.Lock()
	planned := s.reserved[key]
	s.mu.Unlock()
	var atLeast uint64
	if planned > 0 {
		atLeast = planned + total - f.ApproxBytes
	}
	release, err := s.makeRoomFor(key, []ModelFile{{Filename: f.Filename, ApproxBytes: total}}, atLeast)
	if planned == 0 {
		// No room was held for the job (the budget came after its start):
		// hold none now either, as nothing would let it go.
		release()
	}
	// Otherwise the larger room stays held until the job's own makeRoom
	// lets it go.
	return err
}

func (s *Store) makeRoomFor(modelID string, files []ModelFile, atLeast uint64) (release func(), err error) {
	s.budgetMu.Lock()
	defer s.budgetMu.Unlock()
	plan, err := s.planRoom(modelID, files, atLeast)
	if err != nil {
		var de *DiskBudgetError
		if errors.As(err, &de) {
			s.log.Warn("the model does not fit the models folder budget: "+err.Error(), "op", "budget", "model", modelID)
		}
		return func() {}, err
	}
	if plan.total == 0 {
		return func() {}, nil
	}
	if len(plan.evict) > 0 {
		s.Sync() // no background record may land in a folder being removed
		s.sweepEvicting()
	}
	for _, c := range plan.evict {
		if err := s.evict(c); err != nil {
			return func() {}, err
		}
	}
	key := SanitizeModelID(modelID)
	s.mu.Lock()
	s.reserved[key] = max(s.reserved[key], plan.total)
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		delete(s.reserved, key)
		s.mu.Unlock()
	}, nil
}

// evict deletes one downloaded model: the folder is renamed out of the
// store's sight in one step (its files and their verified records go
// together), then removed.
func (s *Store) evict(c candidate) error {
	s.mu.Lock()
	if s.inUse[c.key] > 0 || s.reserved[c.key] > 0 {
		s.mu.Unlock()
		return fmt.Errorf("could not make room in the models folder: %s came into use meanwhile; try again", c.m.ID)
	}
	gone := filepath.Join(s.root, fmt.Sprintf("%s%s-%d", evictingPrefix, c.key, s.now().UnixNano()))
	if err := os.Rename(c.m.Dir, gone); err != nil {
		s.mu.Unlock()
		return fmt.Errorf("could not make room in the models folder: could not remove %s: %w", c.m.Dir, err)
	}
	for p := range s.verified {
		if filepath.Dir(p) == c.m.Dir {
			delete(s.verified, p)
		}
	}
	s.mu.Unlock()
	syncDir(s.root)
	lastUsed := "never since it was downloaded"
	if !c.m.LastUsed.IsZero() {
		lastUsed = c.m.LastUsed.UTC().Format(time.RFC3339)
	}
	s.log.Info(fmt.Sprintf("deleted the model %s (%s, last used %s) to stay within the models folder budget", c.m.ID, FormatGB(c.size), lastUsed),
		"op", "budget", "model", c.m.ID, "bytes", c.size, "last_used", lastUsed)
	if err := os.RemoveAll(gone); err != nil {
		s.log.Warn("could not finish deleting an evicted model; the next eviction tries again", "op", "budget", "dir", gone, "err", err)
	}
	return nil
}

// sweepEvicting removes what a crash left of earlier evictions.
func (s *Store) sweepEvicting() {
	entries, _ := os.ReadDir(s.root)
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), evictingPrefix) {
			if err := os.RemoveAll(filepath.Join(s.root, e.Name())); err != nil {
				s.log.Warn("could not remove what is left of an evicted model", "op", "budget", "dir", e.Name(), "err", err)
			}
		}
	}
}
