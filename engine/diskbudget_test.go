package engine

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// manualClock is a clock the test moves by hand.
type manualClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *manualClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// syncBuffer collects log lines from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// budgetStore is a store in a temp folder with a budget in bytes the test
// can change, a manual clock and a captured log.
type budgetStore struct {
	*Store
	clock  *manualClock
	logs   *syncBuffer
	mu     sync.Mutex
	budget uint64
}

func newBudgetStore(t *testing.T, budget uint64) *budgetStore {
	t.Helper()
	bs := &budgetStore{clock: &manualClock{t: time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)}, logs: &syncBuffer{}, budget: budget}
	bs.Store = newTestStore(t, StoreOptions{
		Budget: func() uint64 { bs.mu.Lock(); defer bs.mu.Unlock(); return bs.budget },
		Now:    bs.clock.Now,
		Log:    slog.New(slog.NewTextHandler(bs.logs, nil)),
	})
	return bs
}

func (bs *budgetStore) setBudget(b uint64) {
	bs.mu.Lock()
	bs.budget = b
	bs.mu.Unlock()
}

// putModel stores a downloaded model of size bytes as the store would have
// made it (its id record, one file) and has a job use it now.
func (bs *budgetStore) putModel(t *testing.T, id string, size int) string {
	t.Helper()
	dir, _ := bs.ModelDir(id)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := bs.writeMeta(id, EngineLlamaCpp); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "model.gguf"), bytes.Repeat([]byte{'x'}, size), 0o644); err != nil {
		t.Fatal(err)
	}
	bs.Use(id)()
	return dir
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func offerFile(size int) []ModelFile {
	return []ModelFile{{Role: RoleModel, URL: "http://127.0.0.1:9/model.gguf", Filename: "model.gguf", ApproxBytes: uint64(size)}}
}

// A real download on loopback into a full budget deletes the least
// recently used model first, and only as many as it needs; the log names
// each with its size and last use.
func TestDiskBudgetDownloadEvictsLeastRecentlyUsed(t *testing.T) {
	b := newBlob(40_000, 31)
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) { b.record(r); b.serve(w, r) })
	size := len(b.data)
	bs := newBudgetStore(t, uint64(3*size+size/2))
	old := bs.putModel(t, "old", size)
	bs.clock.Advance(time.Hour)
	mid := bs.putModel(t, "mid", size)
	bs.clock.Advance(time.Hour)
	// "old" used again, after "mid": now "mid" is the least recently used.
	bs.Use("old")()
	bs.clock.Advance(time.Hour)
	recent := bs.putModel(t, "recent", size)

	if err := bs.CheckRoom("new", []ModelFile{modelFile(srv, b)}); err != nil {
		t.Fatalf("CheckRoom: %v", err)
	}
	if !exists(mid) {
		t.Fatal("CheckRoom must not delete anything")
	}
	paths, err := bs.Ensure(context.Background(), "new", []ModelFile{modelFile(srv, b)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, paths[RoleModel]); !bytes.Equal(got, b.data) {
		t.Fatal("downloaded bytes differ")
	}
	if exists(mid) || !exists(old) || !exists(recent) {
		t.Fatalf("after the download: mid %v (want gone), old %v, recent %v", exists(mid), exists(old), exists(recent))
	}
	logs := bs.logs.String()
	if !strings.Contains(logs, "deleted the model mid (0.00 GB, last used 2026-11-01T13:00:00Z) to stay within the models folder budget") {
		t.Fatalf("the eviction is not logged with name, size and last use:\n%s", logs)
	}
	u, err := bs.BudgetUse()
	if err != nil || u.Models != 3 || u.UsedBytes != uint64(3*size) || u.BudgetBytes != uint64(3*size+size/2) {
		t.Fatalf("BudgetUse = %+v, %v", u, err)
	}
	// Nothing left behind of the evicted folder, hidden or not.
	entries, _ := os.ReadDir(bs.Root())
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), evictingPrefix) {
			t.Fatalf("left behind: %s", e.Name())
		}
	}
}

// The order is by last use, across a restart of the store (the record is
// on disk), and two models evicted when one is not enough.
func TestDiskBudgetLRUOrderSurvivesRestart(t *testing.T) {
	bs := newBudgetStore(t, 1000)
	a := bs.putModel(t, "a", 300)
	bs.clock.Advance(time.Minute)
	bb := bs.putModel(t, "b", 300)
	bs.clock.Advance(time.Minute)
	c := bs.putModel(t, "c", 300)
	bs.clock.Advance(time.Minute)
	bs.Use("a")() // a is now the newest

	// A new store on the same folder: what this process knew is gone.
	st2 := NewStore(bs.Root(), StoreOptions{Budget: func() uint64 { return 1000 }, Now: bs.clock.Now})
	release, err := st2.makeRoom("new", offerFile(500))
	if err != nil {
		t.Fatal(err)
	}
	release()
	// 900 used + 500 > 1000: b (oldest) and c go, a stays.
	if exists(bb) || exists(c) || !exists(a) {
		t.Fatalf("a %v, b %v, c %v; want only a", exists(a), exists(bb), exists(c))
	}
}

// A model in use, one held in memory and one being downloaded are never
// evicted, even when they are the oldest; when only they could make room,
// the job cannot fit and the error names them.
func TestDiskBudgetNeverEvictsInUseResidentOrDownloading(t *testing.T) {
	bs := newBudgetStore(t, 1000)
	inUse := bs.putModel(t, "in-use", 200)
	bs.clock.Advance(time.Minute)
	resident := bs.putModel(t, "resident", 200)
	bs.clock.Advance(time.Minute)
	downloading := bs.putModel(t, "downloading", 200)
	bs.clock.Advance(time.Minute)
	free := bs.putModel(t, "free", 200)

	release := bs.Use("in-use")
	defer release()
	bs.setResident(func() []string { return []string{filepath.Join(resident, "model.gguf"), "/elsewhere/x.gguf"} })
	// A download under way holds its room (as makeRoom does for Ensure).
	bs.Store.mu.Lock()
	bs.reserved["downloading"] = 250
	bs.Store.mu.Unlock()

	// 850 counted (200+200+250+200); 300 more needs "free" to go.
	rel, err := bs.makeRoom("new", offerFile(300))
	if err != nil {
		t.Fatal(err)
	}
	rel()
	if exists(free) || !exists(inUse) || !exists(resident) || !exists(downloading) {
		t.Fatalf("free %v (want gone), in use %v, resident %v, downloading %v", exists(free), exists(inUse), exists(resident), exists(downloading))
	}

	// Now 650 are taken by models that cannot go: 400 more cannot fit.
	_, err = bs.makeRoom("new2", offerFile(400))
	var de *DiskBudgetError
	if !errors.As(err, &de) || de.NeedBytes != 400 || de.BudgetBytes != 1000 || de.KeptBytes != 650 || len(de.Kept) != 3 {
		t.Fatalf("err = %#v", err)
	}
	for _, want := range []string{"in-use (0.00 GB, in use)", "resident (0.00 GB, loaded in memory)", "downloading (0.00 GB, being downloaded)"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not name %q", err, want)
		}
	}
	if !IsRetryable(err) {
		t.Fatal("a model that does not fit this machine's budget is this machine's limit: retryable elsewhere")
	}
	if !exists(inUse) || !exists(resident) || !exists(downloading) {
		t.Fatal("a failed plan deleted something")
	}
}

// A model bigger than the whole budget fails before any request, deletes
// nothing, and says both figures.
func TestDiskBudgetModelBiggerThanBudget(t *testing.T) {
	b := newBlob(20_000, 32)
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) { b.record(r); b.serve(w, r) })
	bs := newBudgetStore(t, uint64(len(b.data)-1))
	other := bs.putModel(t, "other", 100)
	_, err := bs.Ensure(context.Background(), "big", []ModelFile{modelFile(srv, b)}, nil)
	var de *DiskBudgetError
	if !errors.As(err, &de) || de.NeedBytes != uint64(len(b.data)) || de.BudgetBytes != uint64(len(b.data)-1) || len(de.Kept) != 0 {
		t.Fatalf("err = %#v", err)
	}
	if n := len(b.requests()); n != 0 {
		t.Fatalf("%d requests for a model that cannot fit", n)
	}
	if !exists(other) {
		t.Fatal("a model was deleted for a job that cannot fit anyway")
	}
	if err := bs.CheckRoom("big", []ModelFile{modelFile(srv, b)}); !errors.As(err, &de) {
		t.Fatalf("CheckRoom = %v", err)
	}
}

func TestDiskBudgetErrorText(t *testing.T) {
	gb := func(v float64) uint64 { return uint64(v * (1 << 30)) }
	e := &DiskBudgetError{Model: "m", NeedBytes: gb(7.9), BudgetBytes: gb(6)}
	if got, want := e.Error(), "this job's model needs 7.90 GB; the models folder budget you set in Settings is 6.00 GB"; got != want {
		t.Fatalf("%q\nwant %q", got, want)
	}
	e = &DiskBudgetError{Model: "m", NeedBytes: gb(3), BudgetBytes: gb(6), KeptBytes: gb(4), Kept: []string{"a (4.00 GB, in use)"}}
	if got, want := e.Error(), "this job's model needs 3.00 GB; the models folder budget you set in Settings is 6.00 GB and 4.00 GB of it is taken by models that cannot be deleted now: a (4.00 GB, in use)"; got != want {
		t.Fatalf("%q\nwant %q", got, want)
	}
	u := BudgetUse{BudgetBytes: gb(20), UsedBytes: gb(12.3), Models: 4}
	if got, want := u.String(), "12.30 GB of 20.00 GB used by 4 downloaded models"; got != want {
		t.Fatalf("%q, want %q", got, want)
	}
	if got, want := (BudgetUse{UsedBytes: gb(1), Models: 1}).String(), "1.00 GB used by 1 downloaded model (no budget set)"; got != want {
		t.Fatalf("%q, want %q", got, want)
	}
}

// A corrupt last-use record is tolerated: the model is ordered by its
// files' times instead, and the next use writes a good record.
func TestDiskBudgetCorruptLastUseRecord(t *testing.T) {
	bs := newBudgetStore(t, 1000)
	a := bs.putModel(t, "a", 400)
	bs.clock.Advance(time.Hour)
	bb := bs.putModel(t, "b", 400)
	if err := os.WriteFile(filepath.Join(bb, lastUsedFile), []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	// b's file was written long ago: by its files' time it is the oldest.
	long := bs.clock.Now().Add(-48 * time.Hour)
	if err := os.Chtimes(filepath.Join(bb, "model.gguf"), long, long); err != nil {
		t.Fatal(err)
	}
	rel, err := bs.makeRoom("new", offerFile(300))
	if err != nil {
		t.Fatal(err)
	}
	rel()
	if exists(bb) || !exists(a) {
		t.Fatalf("a %v, b %v; want b (older by its file) gone", exists(a), exists(bb))
	}

	// A corrupt record that a new use overwrites.
	if err := os.WriteFile(filepath.Join(a, lastUsedFile), []byte{0, 1, 2}, 0o644); err != nil {
		t.Fatal(err)
	}
	bs.clock.Advance(time.Hour)
	bs.Use("a")()
	if got, ok, _ := readLastUsed(a); !ok || !got.Equal(bs.clock.Now()) {
		t.Fatalf("last use after a new use = %v, %v", got, ok)
	}
}

// The donor's own files in the models folder (a loose .gguf, a folder the
// store did not make) are not counted and never deleted.
func TestDiskBudgetLeavesDonorFilesAlone(t *testing.T) {
	bs := newBudgetStore(t, 1000)
	if err := os.MkdirAll(bs.Root(), 0o755); err != nil {
		t.Fatal(err)
	}
	loose := filepath.Join(bs.Root(), "mine.gguf")
	if err := os.WriteFile(loose, bytes.Repeat([]byte{'l'}, 5000), 0o644); err != nil {
		t.Fatal(err)
	}
	own := filepath.Join(bs.Root(), "my-models")
	if err := os.MkdirAll(own, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(own, "x.gguf"), bytes.Repeat([]byte{'o'}, 5000), 0o644); err != nil {
		t.Fatal(err)
	}
	old := bs.putModel(t, "old", 600)

	u, err := bs.BudgetUse()
	if err != nil || u.UsedBytes != 600 || u.Models != 1 {
		t.Fatalf("BudgetUse = %+v, %v: only the downloaded model counts", u, err)
	}
	rel, err := bs.makeRoom("new", offerFile(900))
	if err != nil {
		t.Fatal(err)
	}
	rel()
	if exists(old) || !exists(loose) || !exists(filepath.Join(own, "x.gguf")) {
		t.Fatalf("old %v (want gone), loose %v, own folder %v", exists(old), exists(loose), exists(own))
	}
}

// An eviction cut short by a crash leaves only a hidden folder: the store
// does not list it, and the next eviction removes it.
func TestDiskBudgetCrashMidEvictionLeavesNoModel(t *testing.T) {
	bs := newBudgetStore(t, 1000)
	half := bs.putModel(t, "half", 400)
	if err := writeRecord(filepath.Join(half, "model.gguf"), verifiedRecord{Size: 400, SHA256: strings.Repeat("a", 64)}); err != nil {
		t.Fatal(err)
	}
	// What evict leaves if the process dies after its rename.
	gone := filepath.Join(bs.Root(), evictingPrefix+"half-1")
	if err := os.Rename(half, gone); err != nil {
		t.Fatal(err)
	}
	models, err := bs.List()
	if err != nil || len(models) != 0 {
		t.Fatalf("List after the crash = %+v, %v", models, err)
	}
	if got := bs.LocalGGUF(); len(got) != 0 {
		t.Fatalf("LocalGGUF after the crash = %q", got)
	}
	bs.putModel(t, "a", 400)
	bs.clock.Advance(time.Minute)
	bs.putModel(t, "b", 400)
	rel, err := bs.makeRoom("new", offerFile(400))
	if err != nil {
		t.Fatal(err)
	}
	rel()
	if exists(gone) {
		t.Fatal("the next eviction did not remove what the crash left")
	}
}

// No budget (0) evicts nothing, whatever the sizes.
func TestDiskBudgetZeroIsNoBudget(t *testing.T) {
	bs := newBudgetStore(t, 0)
	a := bs.putModel(t, "a", 5000)
	rel, err := bs.makeRoom("new", offerFile(1<<40))
	if err != nil || !exists(a) {
		t.Fatalf("err %v, a %v", err, exists(a))
	}
	rel()
	// A budget set later applies at once, without a new store.
	bs.setBudget(4000)
	if err := bs.CheckRoom("new", offerFile(4001)); err == nil {
		t.Fatal("a changed budget did not apply")
	}
}

// The runner turns an offer whose model cannot fit down at admission, and
// protects what its engines hold: a resident engine that does not say
// which model it holds keeps the files of the last job it ran.
func TestRunnerDiskBudget(t *testing.T) {
	b := newBlob(30_000, 33)
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) { b.record(r); b.serve(w, r) })
	size := len(b.data)
	bs := newBudgetStore(t, uint64(size+size/2))
	llama := &fakeEngine{name: EngineLlamaCpp, kinds: []TaskKind{KindLLM}, result: Result{JSON: []byte(`{}`)}}
	r := NewRunner(RunnerConfig{Store: bs.Store, Engines: []Engine{llama}, BudgetGB: func() float64 { return 12 }, Probe: fixedVRAM(VRAMInfo{})})

	job := llmJob(srv.URL, b, 1)
	if _, err := r.Run(context.Background(), job, nil); err != nil {
		t.Fatal(err)
	}
	llama.mu.Lock()
	llama.resident = 1 << 30 // it keeps tiny-llama loaded
	llama.mu.Unlock()

	// Another model of the same size: tiny-llama would have to go, but it
	// is loaded.
	other := Admission{Kind: KindLLM, Engine: EngineLlamaCpp, Model: "other", VRAMGB: 1, Files: job.Source.Files}
	var de *DiskBudgetError
	if err := r.Admit(other); !errors.As(err, &de) || !strings.Contains(err.Error(), "tiny-llama") || !strings.Contains(err.Error(), "loaded in memory") {
		t.Fatalf("Admit = %v", err)
	}
	// Once released, it may go.
	if err := llama.Release(); err != nil {
		t.Fatal(err)
	}
	if err := r.Admit(other); err != nil {
		t.Fatalf("Admit after release = %v", err)
	}
	// An offer without files is not weighed.
	if err := r.Admit(Admission{Kind: KindLLM, Engine: EngineLlamaCpp, Model: "x", VRAMGB: 1}); err != nil {
		t.Fatal(err)
	}
}

// A file whose size the offer does not give is weighed when the model
// server announces it: an older model is evicted then, and a file too big
// for the budget stops before its body is written, its .part deleted.
func TestDiskBudgetAnnouncedSize(t *testing.T) {
	b := newBlob(30_000, 34)
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) { b.record(r); b.serve(w, r) })
	size := len(b.data)
	bs := newBudgetStore(t, uint64(size+size/2))
	old := bs.putModel(t, "old", size)
	f := modelFile(srv, b)
	f.ApproxBytes = 0
	if _, err := bs.Ensure(context.Background(), "new", []ModelFile{f}, nil); err != nil {
		t.Fatal(err)
	}
	if exists(old) {
		t.Fatal("the announced size did not make room")
	}
	// The room held for the download is let go with the job: "new" may go
	// for the next model.
	bs.Store.mu.Lock()
	held := len(bs.reserved)
	bs.Store.mu.Unlock()
	if held != 0 {
		t.Fatalf("%d rooms still held after the job", held)
	}

	bs.setBudget(uint64(size - 1))
	_, err := bs.Ensure(context.Background(), "other", []ModelFile{f}, nil)
	var de *DiskBudgetError
	if !errors.As(err, &de) || de.NeedBytes != uint64(size) || !IsRetryable(err) || !strings.Contains(err.Error(), "the partial download was deleted") {
		t.Fatalf("err = %v", err)
	}
	dir, _ := bs.ModelDir("other")
	mustNotExist(t, filepath.Join(dir, f.Filename+partSuffix))
	mustNotExist(t, filepath.Join(dir, f.Filename))
	if newDir, _ := bs.ModelDir("new"); !exists(newDir) {
		t.Fatal("a model was deleted for a job that cannot fit anyway")
	}
}
