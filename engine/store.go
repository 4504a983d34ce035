package engine

import (
	"bufio"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/minisgg/studio-worker/logging"
)

// Names the store keeps beside the model files. Model filenames that could
// collide with them are refused (see CheckFilename).
const (
	partSuffix     = ".part"
	verifiedSuffix = ".verified"
	modelMetaFile  = ".studio-model.json"
)

// DefaultDownloadTimeout bounds one download attempt (protocol §4.6). A
// slower link still gets there: the next try resumes from the .part file.
const DefaultDownloadTimeout = 30 * time.Minute

// DefaultIdleTimeout ends a download attempt that has received no byte
// (headers or body) for this long; the download then resumes from its
// .part file.
const DefaultIdleTimeout = 60 * time.Second

// DefaultMaxResumes is how many times one download resumes after a stall
// or a broken connection before the job fails (retryable: the next try
// resumes again).
const DefaultMaxResumes = 5

// DefaultResumeBackoff is the wait before the first resume; it doubles for
// each further one, up to maxResumeBackoff.
const DefaultResumeBackoff = 2 * time.Second

const maxResumeBackoff = time.Minute

// maxEmptyAttempts ends a download after this many attempts in a row that
// brought no byte, resumes left or not.
const maxEmptyAttempts = 2

// StoreOptions configure a Store. Zero values are usable.
type StoreOptions struct {
	HTTP      *http.Client
	UserAgent string
	// FreeSpace reports the free bytes of the file system holding path;
	// tests inject it. Nil uses the operating system.
	FreeSpace func(path string) (uint64, error)
	Log       *slog.Logger
	// DownloadTimeout bounds one download attempt; 0 means the default.
	DownloadTimeout time.Duration
	// IdleTimeout ends an attempt that receives no byte for this long
	// (0: DefaultIdleTimeout). Tests use a few milliseconds.
	IdleTimeout time.Duration
	// MaxResumes bounds the resumes of one download (0: DefaultMaxResumes;
	// negative: none).
	MaxResumes int
	// ResumeBackoff is the wait before the first resume, doubled for each
	// further one (0: DefaultResumeBackoff).
	ResumeBackoff time.Duration
	// Reserve is the free space, in bytes, that downloads always leave on
	// the disk of the models folder (the donor's disk_reserve_gb setting);
	// read at each check, so a changed setting applies at once. Nil keeps
	// nothing in reserve.
	Reserve func() uint64
	// Budget is the most bytes the models the worker downloaded may take in
	// the models folder (the donor's models_disk_budget_gb); before a
	// download the least recently used of them are deleted to make room
	// (see diskbudget.go). Read at each check; nil or 0: no budget.
	Budget func() uint64
	// Now is the clock of the last-use records; nil means time.Now.
	Now func() time.Time
}

// Store keeps model files on disk: one folder per model under root,
// downloaded over https with resume, verified by size and sha256, and
// remembered as verified so that a job does not re-hash gigabytes.
type Store struct {
	root       string
	client     *http.Client
	userAgent  string
	freeSpace  func(string) (uint64, error)
	log        *slog.Logger
	timeout    time.Duration
	idle       time.Duration
	backoff    time.Duration
	maxResumes int
	reserve    func() uint64
	budget     func() uint64
	now        func() time.Time

	budgetMu sync.Mutex // one disk budget plan-and-evict at a time

	mu         sync.Mutex
	flights    map[string]*flight        // by final file path
	inUse      map[string]int            // by model folder name
	verified   map[string]verifiedRecord // files this process verified, by path
	reserved   map[string]uint64         // disk budget held for downloads under way, by model folder name
	residentFn func() []string           // model files the engines hold in memory (set by the Runner)

	pendMu   sync.Mutex
	pendCond *sync.Cond
	pending  int // downloads still being made durable

	// Test hooks: onHash is called each time a whole file on disk is hashed
	// for verification; wrapPart wraps the writer of a .part file.
	onHash   func(path string)
	wrapPart func(io.Writer) io.Writer
}

// NewStore returns a store rooted at root (created on first download).
func NewStore(root string, opts StoreOptions) *Store {
	client := opts.HTTP
	if client == nil {
		client = &http.Client{}
	}
	// A redirect must pass the same transport gate as the first URL: an
	// https link must not bounce the download to plain http off this machine.
	c := *client
	prev := c.CheckRedirect
	c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if err := CheckModelURL(req.URL.String()); err != nil {
			return fmt.Errorf("redirect refused: %w", err)
		}
		if prev != nil {
			return prev(req, via)
		}
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		return nil
	}
	ua := opts.UserAgent
	if ua == "" {
		ua = "studio-worker"
	}
	free := opts.FreeSpace
	if free == nil {
		free = diskFree
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	timeout := opts.DownloadTimeout
	if timeout <= 0 {
		timeout = DefaultDownloadTimeout
	}
	idle := cmp.Or(opts.IdleTimeout, DefaultIdleTimeout)
	backoff := cmp.Or(opts.ResumeBackoff, DefaultResumeBackoff)
	resumes := cmp.Or(opts.MaxResumes, DefaultMaxResumes)
	if resumes < 0 {
		resumes = 0
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	s := &Store{
		root: root, client: &c, userAgent: ua, freeSpace: free, log: log, timeout: timeout,
		idle: idle, backoff: backoff, maxResumes: resumes, reserve: opts.Reserve, budget: opts.Budget, now: now,
		flights: map[string]*flight{}, inUse: map[string]int{}, verified: map[string]verifiedRecord{},
		reserved: map[string]uint64{},
	}
	s.pendCond = sync.NewCond(&s.pendMu)
	return s
}

// Root is the models folder.
func (s *Store) Root() string { return s.root }

// SanitizeModelID turns a model id into its folder name: characters outside
// [A-Za-z0-9._-] become "_", and a leading "." becomes "_" (protocol §4.6).
func SanitizeModelID(id string) string {
	var b strings.Builder
	for _, r := range id {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	out := b.String()
	if strings.HasPrefix(out, ".") {
		out = "_" + out[1:]
	}
	return out
}

// CheckModelURL applies the transport gate: https, or plain http only to
// this computer (localhost, 127.0.0.0/8, ::1). It runs before any request.
func CheckModelURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("model URL %q is not a valid URL", redactURL(raw))
	}
	if u.Host == "" || u.Hostname() == "" {
		return fmt.Errorf("model URL %q has no host", redactURL(raw))
	}
	switch strings.ToLower(u.Scheme) {
	case "https":
		return nil
	case "http":
		if isLoopbackHost(u.Hostname()) {
			return nil
		}
		return fmt.Errorf("model URL %q uses plain http; only https is allowed (plain http only to this computer)", redactURL(raw))
	default:
		return fmt.Errorf("model URL %q uses %q; only https is allowed", redactURL(raw), u.Scheme)
	}
}

func isLoopbackHost(h string) bool {
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// redactURL is logging.RedactURL: no query string, fragment or user info
// of a model URL reaches an error, a log line or the window.
func redactURL(raw string) string { return logging.RedactURL(raw) }

var windowsReserved = map[string]bool{
	"CON": true, "PRN": true, "AUX": true, "NUL": true,
	"COM1": true, "COM2": true, "COM3": true, "COM4": true, "COM5": true, "COM6": true, "COM7": true, "COM8": true, "COM9": true,
	"LPT1": true, "LPT2": true, "LPT3": true, "LPT4": true, "LPT5": true, "LPT6": true, "LPT7": true, "LPT8": true, "LPT9": true,
}

// CheckFilename requires one plain path part: no separators, no "." or
// "..", nothing absolute or hidden, nothing the store uses for itself, and
// no name that Windows reserves.
func CheckFilename(name string) error {
	bad := func(why string) error { return fmt.Errorf("model file name %q is not allowed: %s", name, why) }
	switch {
	case name == "":
		return errors.New("model file name is empty")
	case len(name) > 255:
		return bad("longer than 255 characters")
	case name == "." || name == "..":
		return bad("it is not a file name")
	case strings.ContainsAny(name, `/\`):
		return bad("it contains a folder separator")
	case strings.ContainsAny(name, ":*?\"<>|") || strings.ContainsRune(name, 0):
		return bad("it contains a character that is not allowed in file names")
	case strings.HasPrefix(name, "."):
		return bad("it starts with a dot")
	case strings.HasSuffix(name, partSuffix) || strings.HasSuffix(name, verifiedSuffix):
		return bad("the store uses that ending for its own files")
	case strings.HasSuffix(name, " ") || strings.HasSuffix(name, "."):
		return bad("it ends with a space or a dot")
	}
	for _, r := range name {
		if r < 0x20 {
			return bad("it contains a control character")
		}
	}
	stem := strings.ToUpper(name)
	if i := strings.IndexByte(stem, '.'); i >= 0 {
		stem = stem[:i]
	}
	if windowsReserved[stem] {
		return bad("Windows reserves that name")
	}
	return nil
}

func checkSHA256(sum string) error {
	if sum == "" {
		return nil
	}
	if len(sum) != 64 {
		return fmt.Errorf("the studio's sha256 %q is not 64 hex digits", sum)
	}
	if _, err := hex.DecodeString(sum); err != nil {
		return fmt.Errorf("the studio's sha256 %q is not hex", sum)
	}
	return nil
}

// ModelDir is the folder a model's files live in.
func (s *Store) ModelDir(modelID string) (string, error) {
	name := SanitizeModelID(modelID)
	if name == "" {
		return "", errors.New("the model has no name")
	}
	return filepath.Join(s.root, name), nil
}

// Use marks a model as in use (a job is running with it) until the returned
// function is called; Delete and the disk budget's eviction refuse it
// meanwhile. The first use and the last release record the time in the
// model's folder (lastUsedFile), for least-recently-used eviction.
func (s *Store) Use(modelID string) (release func()) {
	key := SanitizeModelID(modelID)
	s.mu.Lock()
	s.inUse[key]++
	first := s.inUse[key] == 1
	s.mu.Unlock()
	if first {
		s.touchLastUsed(modelID)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			s.inUse[key]--
			last := s.inUse[key] <= 0
			if last {
				delete(s.inUse, key)
			}
			s.mu.Unlock()
			if last {
				s.touchLastUsed(modelID)
			}
		})
	}
}

// EnsureSource is Ensure for a whole modelSource; it also records which
// engine the model belongs to, for the Models page and the advertised list.
func (s *Store) EnsureSource(ctx context.Context, modelID string, src ModelSource, progress ProgressFunc) (map[FileRole]string, error) {
	paths, err := s.ensure(ctx, modelID, src.Engine, src.Files, progress)
	if err == nil && len(src.Files) > 0 {
		if merr := s.writeMeta(modelID, src.Engine); merr != nil {
			s.log.Warn("could not record the model's engine", "op", "store", "model", modelID, "err", merr)
		}
	}
	return paths, err
}

// Ensure makes every file present and verified in the model's folder,
// downloading what is missing, and returns the local path of each role.
// Progress is reported as PhaseDownload with bytes done and total over all
// files that had to be fetched.
//
// Every file's bytes must be what its role says (CheckModelContent, judged
// here by the file name; EnsureSource judges by the engine too): a file that
// is not is deleted, downloaded again when it was already on disk, and
// otherwise fails the job with a *JobError naming the file and the field.
func (s *Store) Ensure(ctx context.Context, modelID string, files []ModelFile, progress ProgressFunc) (map[FileRole]string, error) {
	return s.ensure(ctx, modelID, "", files, progress)
}

func (s *Store) ensure(ctx context.Context, modelID string, eng EngineName, files []ModelFile, progress ProgressFunc) (map[FileRole]string, error) {
	dir, err := s.ModelDir(modelID)
	if err != nil {
		return nil, err
	}
	// Every gate runs before any request or any file is touched.
	seen := map[string]bool{}
	for _, f := range files {
		if err := CheckFilename(f.Filename); err != nil {
			return nil, err
		}
		if err := CheckModelURL(f.URL); err != nil {
			return nil, fmt.Errorf("%s: %w", f.Filename, err)
		}
		if err := checkSHA256(f.SHA256); err != nil {
			return nil, fmt.Errorf("%s: %w", f.Filename, err)
		}
		if seen[f.Filename] {
			return nil, fmt.Errorf("the offer lists the file %q twice", f.Filename)
		}
		seen[f.Filename] = true
	}
	release := s.Use(modelID)
	defer release()
	// The disk budget before any byte is fetched: room is made by deleting
	// the least recently used downloaded models, or the job fails saying
	// why it cannot fit.
	unreserve, err := s.makeRoom(modelID, files)
	if err != nil {
		return nil, err
	}
	defer unreserve()
	if len(files) > 0 {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("could not create the model folder %s: %w", dir, err)
		}
		if _, err := os.Stat(filepath.Join(dir, modelMetaFile)); errors.Is(err, fs.ErrNotExist) {
			if err := s.writeMeta(modelID, ""); err != nil {
				s.log.Warn("could not record the model id", "op", "store", "model", modelID, "err", err)
			}
		}
	}

	agg := newAggregate(len(files), progress)
	out := make(map[FileRole]string, len(files))
	for i, f := range files {
		if f.ApproxBytes > 0 {
			agg.set(i, fileState{Total: int64(f.ApproxBytes)})
		}
	}
	for i, f := range files {
		final := filepath.Join(dir, f.Filename)
		err := s.ensureFile(ctx, modelID, eng, final, f, func(st fileState) { agg.set(i, st) })
		var je *JobError
		if errors.As(err, &je) && je.Field == f.Filename {
			// Name the file by its place in the offer, as the wire does.
			err = &JobError{Field: fmt.Sprintf("modelSource.files[%d]", i), Reason: f.Filename + ": " + je.Reason, Err: je.Err}
		}
		if err != nil {
			return nil, err
		}
		out[f.Role] = final
	}
	return out, nil
}

// fileState is one file's download progress: bytes done and expected
// (total 0 or less: unknown), and a note for the donor while something is
// wrong (a stall, a wait before resuming).
type fileState struct {
	Done, Total int64
	Note        string
}

// aggregate sums per-file progress into one figure for the job.
type aggregate struct {
	mu          sync.Mutex
	done, total []int64
	notes       []string
	fn          ProgressFunc
}

func newAggregate(n int, fn ProgressFunc) *aggregate {
	return &aggregate{done: make([]int64, n), total: make([]int64, n), notes: make([]string, n), fn: fn}
}

func (a *aggregate) set(i int, st fileState) {
	if a.fn == nil {
		return
	}
	a.mu.Lock()
	a.done[i] = st.Done
	if st.Total > 0 {
		a.total[i] = st.Total
	}
	a.notes[i] = st.Note
	var d, t int64
	var note string
	for j := range a.done {
		d += a.done[j]
		t += max(a.total[j], a.done[j])
		if note == "" {
			note = a.notes[j]
		}
	}
	a.mu.Unlock()
	a.fn(Progress{Phase: PhaseDownload, Done: d, Total: t, Note: note})
}

// flight is one check-or-download of one file, shared by every job that
// needs the file at the same time. It runs on its own context and stops
// only when every job waiting for it has gone.
type flight struct {
	done    chan struct{}
	err     error
	cancel  context.CancelFunc
	waiters int
	stopped bool // cancelled because nobody waits any more
	subs    map[int]func(fileState)
	nextSub int
	last    fileState
}

func (s *Store) ensureFile(ctx context.Context, modelID string, eng EngineName, final string, f ModelFile, report func(fileState)) error {
	s.mu.Lock()
	fl := s.flights[final]
	if fl == nil || fl.stopped {
		prev := fl
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.timeout)
		fl = &flight{done: make(chan struct{}), cancel: cancel, subs: map[int]func(fileState){}}
		s.flights[final] = fl
		go s.runFlight(fctx, prev, fl, modelID, eng, final, f)
	}
	fl.waiters++
	id := fl.nextSub
	fl.nextSub++
	fl.subs[id] = report
	last := fl.last
	s.mu.Unlock()
	if last != (fileState{}) {
		report(last)
	}

	select {
	case <-fl.done:
		return fl.err
	case <-ctx.Done():
	}
	select {
	case <-fl.done: // finished at the same moment: the file is there
		return fl.err
	default:
	}
	s.mu.Lock()
	delete(fl.subs, id)
	fl.waiters--
	lastOne := fl.waiters == 0
	if lastOne {
		fl.stopped = true
		fl.cancel()
	}
	s.mu.Unlock()
	if lastOne {
		// Nobody else wants the file: wait until the download has really
		// stopped writing, so that the caller sees a settled .part file.
		<-fl.done
	}
	return fmt.Errorf("download of %s stopped: %w", f.Filename, ctx.Err())
}

func (s *Store) runFlight(ctx context.Context, prev, fl *flight, modelID string, eng EngineName, final string, f ModelFile) {
	defer fl.cancel()
	if prev != nil {
		<-prev.done // a cancelled download of the same file may still be closing its .part
	}
	broadcast := func(update func(*fileState)) {
		s.mu.Lock()
		update(&fl.last)
		st := fl.last
		subs := make([]func(fileState), 0, len(fl.subs))
		for _, fn := range fl.subs {
			subs = append(subs, fn)
		}
		s.mu.Unlock()
		for _, fn := range subs {
			fn(st)
		}
	}
	// Bytes moving clear any note; a note keeps the figures.
	report := func(done, total int64) {
		broadcast(func(st *fileState) { *st = fileState{Done: done, Total: total} })
	}
	note := func(n string) { broadcast(func(st *fileState) { st.Note = n }) }
	err := s.checkOrFetch(ctx, modelID, eng, final, f, report, note)
	s.mu.Lock()
	fl.err = err
	if s.flights[final] == fl {
		delete(s.flights, final)
	}
	s.mu.Unlock()
	close(fl.done)
}

// verifiedRecord is the sidecar that says a file was verified, so that it is
// not hashed again while its size and modification time stay the same.
type verifiedRecord struct {
	Size     int64  `json:"size"`
	ModTime  int64  `json:"mtimeUnixNano"`
	SHA256   string `json:"sha256"`
	Verified string `json:"verifiedAt"`
	// Checked is the contentCheckVersion whose content check the file
	// passed; a record from before the check (0) or an older one has the
	// file checked again.
	Checked int `json:"contentChecked,omitempty"`
}

// contentCheckVersion is bumped whenever CheckModelContent gets stricter,
// so that files checked by an older rule are checked again once.
const contentCheckVersion = 1

func readRecord(final string) (verifiedRecord, bool) {
	var rec verifiedRecord
	b, err := os.ReadFile(final + verifiedSuffix)
	if err != nil || json.Unmarshal(b, &rec) != nil || rec.SHA256 == "" {
		return verifiedRecord{}, false
	}
	return rec, true
}

func recordFor(final, sum string) (verifiedRecord, error) {
	st, err := os.Stat(final)
	if err != nil {
		return verifiedRecord{}, err
	}
	return verifiedRecord{Size: st.Size(), ModTime: st.ModTime().UnixNano(), SHA256: strings.ToLower(sum),
		Verified: time.Now().UTC().Format(time.RFC3339), Checked: contentCheckVersion}, nil
}

func writeRecord(final string, rec verifiedRecord) error {
	b, _ := json.Marshal(rec)
	return writeFileAtomic(final+verifiedSuffix, b)
}

// lookupRecord prefers what this process verified itself (its sidecar may
// still be on its way to disk) over the sidecar.
func (s *Store) lookupRecord(final string) (verifiedRecord, bool) {
	s.mu.Lock()
	rec, ok := s.verified[final]
	s.mu.Unlock()
	if ok {
		return rec, true
	}
	return readRecord(final)
}

func (s *Store) remember(final string, rec verifiedRecord) {
	s.mu.Lock()
	s.verified[final] = rec
	s.mu.Unlock()
}

func (s *Store) forget(final string) {
	s.mu.Lock()
	delete(s.verified, final)
	s.mu.Unlock()
}

// asyncDurable says whether a finished download may be made durable (fsync,
// then the sidecar) after the job already has the file. It is safe because
// the sidecar is written only after the fsync: a crash before it leaves a
// file without a record, which the next job hashes again. Windows cannot
// rename a file that is still open, so there it is synced first.
const asyncDurable = runtime.GOOS != "windows"

// persist makes a verified file durable and writes its sidecar, in the
// background where asyncDurable allows.
func (s *Store) persist(log *slog.Logger, final string, rec verifiedRecord) {
	work := func() {
		err := syncFile(final)
		syncDir(filepath.Dir(final))
		if err == nil {
			err = writeRecord(final, rec)
		}
		if err != nil {
			// Not durable: let the next job check the file again.
			s.forget(final)
			log.Warn("could not make the downloaded file durable; it will be checked again before use", "err", err)
		}
	}
	if !asyncDurable {
		work()
		return
	}
	s.pendMu.Lock()
	s.pending++
	s.pendMu.Unlock()
	go func() {
		defer func() {
			s.pendMu.Lock()
			s.pending--
			s.pendCond.Broadcast()
			s.pendMu.Unlock()
		}()
		work()
	}()
}

// syncFile flushes a finished file to the disk through a handle of its own.
func syncFile(path string) error {
	fh, err := openForSync(path)
	if err != nil {
		return err
	}
	err = fh.Sync()
	if cerr := fh.Close(); err == nil {
		err = cerr
	}
	return err
}

// openForSync opens path for reading and writing: Windows flushes a file
// (FlushFileBuffers, which (*os.File).Sync calls) only through a handle
// with write access and refuses a read-only one with "Access denied", while
// fsync on Linux and macOS takes either.
func openForSync(path string) (*os.File, error) { return os.OpenFile(path, os.O_RDWR, 0) }

// Sync waits until every finished download is on disk with its record.
// Call it before exiting.
func (s *Store) Sync() {
	s.pendMu.Lock()
	for s.pending > 0 {
		s.pendCond.Wait()
	}
	s.pendMu.Unlock()
}

func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	_, werr := tmp.Write(data)
	cerr := tmp.Close()
	if werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp.Name(), path)
	}
	if werr != nil {
		os.Remove(tmp.Name())
	}
	return werr
}

// checkOrFetch uses the file on disk when it is verified (or verifies it
// once), and downloads it otherwise.
func (s *Store) checkOrFetch(ctx context.Context, modelID string, eng EngineName, final string, f ModelFile, report func(done, total int64), note func(string)) error {
	log := s.log.With("op", "download", "model", modelID, "file", f.Filename)
	st, err := os.Stat(final)
	if err == nil && st.Mode().IsRegular() {
		rec, hasRec := s.lookupRecord(final)
		want := strings.ToLower(f.SHA256)
		if hasRec && rec.Size == st.Size() && rec.ModTime == st.ModTime().UnixNano() && (want == "" || rec.SHA256 == want) {
			if rec.Checked >= contentCheckVersion {
				report(st.Size(), st.Size())
				return nil
			}
			// Verified by an older worker that did not look at the bytes:
			// look now, once.
			if cerr := s.checkContent(final, f, eng); cerr != nil {
				return s.redownloadBad(ctx, log, eng, final, f, cerr, report, note)
			}
			rec.Checked = contentCheckVersion
			s.remember(final, rec)
			if err := writeRecord(final, rec); err != nil {
				log.Warn("could not record the checked file", "err", err)
			}
			report(st.Size(), st.Size())
			return nil
		}
		// Changed on disk since it was verified (or never verified): hash it
		// against the studio's sum, or failing that against our own record.
		if want == "" && hasRec {
			want = rec.SHA256
		}
		log.Info("checking a model file on disk", "bytes", st.Size())
		sum, herr := s.hashFile(ctx, final)
		if herr != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("check of %s stopped: %w", f.Filename, ctx.Err())
			}
			return fmt.Errorf("could not read the model file %s: %w", final, herr)
		}
		if want == "" || sum == want {
			if cerr := s.checkContent(final, f, eng); cerr != nil {
				return s.redownloadBad(ctx, log, eng, final, f, cerr, report, note)
			}
			if rec, err := recordFor(final, sum); err == nil {
				s.remember(final, rec)
				if err := writeRecord(final, rec); err != nil {
					log.Warn("could not record the verified file", "err", err)
				}
			}
			report(st.Size(), st.Size())
			return nil
		}
		log.Warn("model file on disk does not match its sha256; downloading it again", "have", sum, "want", want)
		s.forget(final)
		os.Remove(final + verifiedSuffix)
		if err := os.Remove(final); err != nil {
			return fmt.Errorf("the model file %s is corrupt and could not be removed: %w", final, err)
		}
	} else if err == nil {
		return fmt.Errorf("%s exists but is not a regular file", final)
	}
	return s.download(ctx, log, eng, final, f, report, note)
}

// checkContent runs CheckModelContent on path as the file f of engine eng.
// Only a *JobError (the bytes are not a model) is returned; a file that
// cannot be read is left to the steps that read it.
func (s *Store) checkContent(path string, f ModelFile, eng EngineName) error {
	err := checkContentNamed(path, f.Filename, eng, f.Role)
	var je *JobError
	if errors.As(err, &je) {
		return err
	}
	if err != nil {
		s.log.Warn("could not check the model file's content", "op", "download", "file", f.Filename, "err", err)
	}
	return nil
}

// redownloadBad deletes a stored file whose bytes are not a model and
// downloads it again: it may have been stored by a worker that did not
// check, or changed on disk.
func (s *Store) redownloadBad(ctx context.Context, log *slog.Logger, eng EngineName, final string, f ModelFile, bad error, report func(done, total int64), note func(string)) error {
	log.Warn("the stored model file is not a usable model; deleting it and downloading it again", "why", bad.Error())
	if err := s.removeFile(final); err != nil {
		return fmt.Errorf("the stored model file %s is not a usable model (%v) and could not be removed: %w", final, bad, err)
	}
	return s.download(ctx, log, eng, final, f, report, note)
}

// Discard deletes a downloaded model file that an engine failed to load
// (see ModelFileError), with its verification record, so that the next job
// downloads it again. Only files inside a model folder of the store are
// deleted: a file the donor placed in the models folder itself, or anything
// elsewhere, is refused.
func (s *Store) Discard(path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	root, err := filepath.Abs(s.root)
	if err != nil {
		return err
	}
	if filepath.Dir(filepath.Dir(abs)) != root || strings.HasPrefix(filepath.Base(filepath.Dir(abs)), ".") {
		return fmt.Errorf("%s is not a downloaded model file of the store %s", path, s.root)
	}
	s.Sync() // a record still being written in the background must not outlive the file
	return s.removeFile(filepath.Join(s.root, filepath.Base(filepath.Dir(abs)), filepath.Base(abs)))
}

// removeFile deletes a stored file and what the store knows of it.
func (s *Store) removeFile(final string) error {
	s.forget(final)
	os.Remove(final + verifiedSuffix)
	if err := os.Remove(final); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

func (s *Store) hashFile(ctx context.Context, path string) (string, error) {
	if s.onHash != nil {
		s.onHash(path)
	}
	fh, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer fh.Close()
	h := sha256.New()
	if _, err := io.CopyBuffer(h, ctxReader{ctx, fh}, make([]byte, 1<<20)); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// errRestart asks download to start the file over from byte zero.
var errRestart = errors.New("restart download")

func (s *Store) download(ctx context.Context, log *slog.Logger, eng EngineName, final string, f ModelFile, report func(done, total int64), note func(string)) error {
	part := final + partSuffix
	if err := s.preflight(final, part, f); err != nil {
		return err
	}
	restarts, resumes, empty := 0, 0, 0
	for {
		err := s.fetchOnce(ctx, log, eng, final, part, f, report, note)
		var re *resumableError
		switch {
		case errors.Is(err, errRestart):
			if restarts++; restarts > 2 {
				return fmt.Errorf("the model server for %s keeps refusing to resume; try again later", f.Filename)
			}
			if rerr := os.Remove(part); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
				return fmt.Errorf("could not remove the partial download %s: %w", part, rerr)
			}
		case errors.As(err, &re):
			if re.fresh > 0 {
				empty = 0
			} else {
				empty++
			}
			// A server that brought nothing twice in a row is not waited
			// for again: the job goes back to the studio sooner.
			if resumes >= s.maxResumes || empty >= maxEmptyAttempts {
				note("")
				return fmt.Errorf("%w; gave up with %d of %d resumes used (the partial file is kept and the next try resumes it)", err, resumes, s.maxResumes)
			}
			resumes++
			wait := min(s.backoff<<(resumes-1), maxResumeBackoff)
			msg := fmt.Sprintf("%s; resuming in %s (resume %d of %d)", re.note, spoken(wait), resumes, s.maxResumes)
			log.Warn("download interrupted: "+msg, "err", err.Error())
			note(msg)
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				note("")
				return fmt.Errorf("download of %s stopped (the partial file is kept): %w", f.Filename, ctx.Err())
			case <-t.C:
			}
		default:
			return err
		}
	}
}

// spoken writes a wait for people: "60 s", "2 min 30 s", "200 ms".
func spoken(d time.Duration) string {
	switch {
	case d < time.Second:
		return fmt.Sprintf("%d ms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%d s", int(d.Round(time.Second).Seconds()))
	}
	d = d.Round(time.Second)
	m, sec := int(d/time.Minute), int(d%time.Minute/time.Second)
	if sec == 0 {
		return fmt.Sprintf("%d min", m)
	}
	return fmt.Sprintf("%d min %d s", m, sec)
}

// resumableError is an attempt that ended with bytes still to come (the
// server stalled or the connection broke); download resumes it from the
// .part file after a wait. note says what happened, in a donor's words.
type resumableError struct {
	err   error
	note  string
	fresh int64 // bytes the attempt brought
}

func (e *resumableError) Error() string { return e.err.Error() }
func (e *resumableError) Unwrap() error { return e.err }

// stallWatch ends a download attempt when no byte has arrived for idle,
// and reports a note after a third of that. Reads only record the time;
// the timers look at it when they fire and re-arm themselves, so a busy
// download costs no timer work per read.
type stallWatch struct {
	idle, notice time.Duration
	cancel       func()
	note         func(string)

	mu      sync.Mutex
	last    time.Time
	paused  bool
	noticed bool
	stalled bool
	closed  bool
	tNotice *time.Timer
	tEnd    *time.Timer
}

func newStallWatch(idle time.Duration, cancel func(), note func(string)) *stallWatch {
	w := &stallWatch{idle: idle, notice: idle / 3, cancel: cancel, note: note, last: time.Now()}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.tNotice = time.AfterFunc(w.notice, w.onNotice)
	w.tEnd = time.AfterFunc(w.idle, w.onEnd)
	return w
}

// dueLocked reports whether limit has passed with no byte since the last
// one; if not, it re-arms t for the time still to go (for the whole limit
// while the watch is paused). w.mu must be held.
func (w *stallWatch) dueLocked(t *time.Timer, limit time.Duration) bool {
	if w.paused {
		t.Reset(limit)
		return false
	}
	if since := time.Since(w.last); since < limit {
		t.Reset(limit - since + time.Millisecond)
		return false
	}
	return true
}

func (w *stallWatch) onNotice() {
	w.mu.Lock()
	if w.closed || w.stalled || w.noticed || !w.dueLocked(w.tNotice, w.notice) {
		w.mu.Unlock()
		return
	}
	w.noticed = true
	w.mu.Unlock()
	w.note(fmt.Sprintf("no data from the model server for %s", spoken(w.notice)))
}

func (w *stallWatch) onEnd() {
	w.mu.Lock()
	if w.closed || !w.dueLocked(w.tEnd, w.idle) {
		w.mu.Unlock()
		return
	}
	w.stalled = true
	w.mu.Unlock()
	w.cancel()
}

// touch records that bytes arrived (or that a pause is over).
func (w *stallWatch) touch() {
	w.mu.Lock()
	w.last = time.Now()
	w.paused = false
	cleared := w.noticed && !w.stalled
	if cleared {
		w.noticed = false
		w.tNotice.Reset(w.notice)
	}
	w.mu.Unlock()
	if cleared {
		w.note("")
	}
}

// pause stops the clock while the worker itself is busy (hashing the
// partial file), not the server.
func (w *stallWatch) pause() {
	w.mu.Lock()
	w.paused = true
	w.mu.Unlock()
}

func (w *stallWatch) isStalled() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stalled
}

func (w *stallWatch) stop() {
	w.mu.Lock()
	w.closed = true
	w.tNotice.Stop()
	w.tEnd.Stop()
	w.mu.Unlock()
}

// touchReader tells a stallWatch about every read that brought bytes.
type touchReader struct {
	r io.Reader
	w *stallWatch
}

func (t touchReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if n > 0 {
		t.w.touch()
	}
	return n, err
}

// preflight requires approxBytes + 10 % of free space above the reserve,
// less what the .part file already holds (those bytes are on the disk
// already).
func (s *Store) preflight(final, part string, f ModelFile) error {
	if f.ApproxBytes == 0 {
		return nil
	}
	need := f.ApproxBytes + f.ApproxBytes/10
	if st, err := os.Stat(part); err == nil && st.Size() > 0 {
		have := uint64(st.Size())
		if have >= need {
			need = 0
		} else {
			need -= have
		}
	}
	return s.checkSpace(final, f, need, "it needs "+FormatGB(need)+" (the file plus 10%)")
}

// reserveBytes is the donor's reserve now.
func (s *Store) reserveBytes() uint64 {
	if s.reserve == nil {
		return 0
	}
	return s.reserve()
}

// checkSpace fails when fewer than need bytes are free above the reserve on
// the disk of final's folder; what says what need is, for the message. A
// disk whose free space cannot be read passes (logged).
func (s *Store) checkSpace(final string, f ModelFile, need uint64, what string) error {
	free, err := s.freeSpace(filepath.Dir(final))
	if err != nil {
		s.log.Debug("could not read free disk space; downloading without the check", "op", "download", "err", err)
		return nil
	}
	reserve := s.reserveBytes()
	if free >= reserve && free-reserve >= need {
		return nil
	}
	msg := fmt.Sprintf("not enough disk space for %s: %s, but only %s is free in %s", f.Filename, what, FormatGB(free), filepath.Dir(final))
	if reserve > 0 {
		msg += fmt.Sprintf(" and %s is kept free for the rest of this computer", FormatGB(reserve))
	}
	return &spaceError{msg: msg}
}

// spaceError is a download stopped for disk space: this machine's failure
// (retryable elsewhere), and its .part file is deleted, not kept.
type spaceError struct{ msg string }

func (e *spaceError) Error() string { return e.msg }

// spaceStep is how many written bytes pass between checks of free space
// while a download writes.
const spaceStep = 16 << 20

// FormatGB writes a byte count in GB (2^30 bytes) for people to read.
func FormatGB(b uint64) string {
	return strconv.FormatFloat(float64(b)/float64(1<<30), 'f', 2, 64) + " GB"
}

// FormatSize writes a byte count for people in one unit that fits it:
// "38.3 MB" (2^20 bytes, one decimal) under 1 GB, "12.30 GB" (FormatGB)
// from 1 GB up; under 1 MB "512 B" or "4.0 KB".
func FormatSize(b uint64) string {
	// A size that would round up to "1024.0" of a unit is said in the next.
	const almost = 1023.95
	switch {
	case float64(b)/float64(1<<20) >= almost:
		return FormatGB(b)
	case float64(b)/float64(1<<10) >= almost:
		return strconv.FormatFloat(float64(b)/float64(1<<20), 'f', 1, 64) + " MB"
	case b >= 1<<10:
		return strconv.FormatFloat(float64(b)/float64(1<<10), 'f', 1, 64) + " KB"
	}
	return strconv.FormatUint(b, 10) + " B"
}

// parseContentRange reads "bytes <start>-<end>/<total|*>"; total is -1 when
// unknown.
func parseContentRange(v string) (start, end, total int64, ok bool) {
	v = strings.TrimSpace(v)
	unit, rest, found := strings.Cut(v, " ")
	if !found || !strings.EqualFold(unit, "bytes") {
		return 0, 0, 0, false
	}
	rng, tot, found := strings.Cut(strings.TrimSpace(rest), "/")
	if !found {
		return 0, 0, 0, false
	}
	a, b, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, 0, false
	}
	var err error
	if start, err = strconv.ParseInt(a, 10, 64); err != nil || start < 0 {
		return 0, 0, 0, false
	}
	if end, err = strconv.ParseInt(b, 10, 64); err != nil || end < start {
		return 0, 0, 0, false
	}
	total = -1
	if tot != "*" {
		if total, err = strconv.ParseInt(tot, 10, 64); err != nil || total <= end {
			return 0, 0, 0, false
		}
	}
	return start, end, total, true
}

func (s *Store) fetchOnce(ctx context.Context, log *slog.Logger, eng EngineName, final, part string, f ModelFile, report func(done, total int64), note func(string)) error {
	var offset int64
	if st, err := os.Stat(part); err == nil {
		offset = st.Size()
	}
	// The attempt's own context: the stall watch ends it when the server
	// sends nothing (no headers, or no body bytes) for the idle limit.
	actx, acancel := context.WithCancel(ctx)
	defer acancel()
	watch := newStallWatch(s.idle, acancel, note)
	defer watch.stop()
	stalled := func(got, fresh int64) error {
		why := fmt.Sprintf("no data from the model server for %s", spoken(s.idle))
		return &resumableError{note: why, fresh: fresh, err: fmt.Errorf("download of %s stalled after %d bytes: %s", f.Filename, got, why)}
	}
	req, err := http.NewRequestWithContext(actx, http.MethodGet, f.URL, nil)
	if err != nil {
		return fmt.Errorf("%s: bad model URL %q: %w", f.Filename, redactURL(f.URL), err)
	}
	req.Header.Set("User-Agent", s.userAgent)
	// Byte ranges and the size check only make sense on the raw bytes.
	req.Header.Set("Accept-Encoding", "identity")
	if offset > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", offset))
	}
	resp, err := s.client.Do(req)
	if err != nil {
		if watch.isStalled() && ctx.Err() == nil {
			return stalled(offset, 0)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("download of %s stopped: %w", f.Filename, ctx.Err())
		}
		// net/http's error repeats the whole URL, signature and all.
		return fmt.Errorf("could not reach the model server for %s (%s): %w", f.Filename, redactURL(f.URL), logging.RedactError(err))
	}
	defer resp.Body.Close()

	var total int64 = -1 // whole file size, when known
	flags := os.O_WRONLY | os.O_CREATE
	switch resp.StatusCode {
	case http.StatusPartialContent:
		start, _, tot, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != offset {
			log.Warn("model server resumed at the wrong place; starting the file over",
				"have", offset, "content_range", resp.Header.Get("Content-Range"))
			return errRestart
		}
		total = tot
		if total < 0 && resp.ContentLength >= 0 {
			total = offset + resp.ContentLength
		}
		flags |= os.O_APPEND
		log.Info("resuming download", "from", offset)
	case http.StatusRequestedRangeNotSatisfiable:
		if offset == 0 {
			return fmt.Errorf("the model server refused to send %s (416 Range Not Satisfiable)", f.Filename)
		}
		log.Warn("model server cannot resume (416); starting the file over", "have", offset)
		return errRestart
	case http.StatusOK:
		if offset > 0 {
			log.Info("model server does not resume downloads; starting the file over", "had", offset)
		}
		offset = 0
		flags |= os.O_TRUNC
		total = resp.ContentLength
	default:
		return fmt.Errorf("the model server answered %q for %s (%s)", resp.Status, f.Filename, redactURL(f.URL))
	}

	// The announced size against the free space, before a byte is written:
	// a server may announce far more than the offer said (or the offer said
	// nothing). 5 % headroom for the file system.
	if total >= 0 && total > offset {
		rest := uint64(total - offset)
		if err := s.checkSpace(final, f, rest+rest/20, "the model server announces "+FormatGB(rest)+" more"); err != nil {
			os.Remove(part)
			return fmt.Errorf("%w; the partial download was deleted", err)
		}
		// More than the offer said, against the models folder's budget.
		if err := s.budgetAnnounced(final, f, uint64(total)); err != nil {
			os.Remove(part)
			return fmt.Errorf("%w; the partial download was deleted", err)
		}
	}
	// A fresh download whose first bytes are not a model (a sign-in page
	// answered with 200) is refused at once, not after all of it arrived.
	var body io.Reader = touchReader{resp.Body, watch}
	if offset == 0 {
		br := bufio.NewReaderSize(body, 64<<10)
		if head, _ := br.Peek(sniffPeek); len(head) == sniffPeek {
			if err := sniffAs(head, f, eng); err != nil {
				os.Remove(part)
				log.Warn("the model server sent something that is not a model file; download refused", "why", err.Error())
				return err
			}
		}
		body = br
	}
	h := sha256.New()
	if offset > 0 {
		// The hash covers the whole file, so the prefix already on disk goes
		// in first. The stall clock stops meanwhile: this is the worker's
		// time, not the server's.
		watch.pause()
		err := hashPrefix(ctx, h, part, offset)
		watch.touch()
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("download of %s stopped: %w", f.Filename, ctx.Err())
			}
			return fmt.Errorf("could not read the partial download %s: %w", part, err)
		}
	}
	fh, err := os.OpenFile(part, flags, 0o644)
	if err != nil {
		return fmt.Errorf("could not write %s: %w", part, err)
	}
	var w io.Writer = fh
	if s.wrapPart != nil {
		w = s.wrapPart(fh)
	}
	progressTotal := total
	if progressTotal < 0 && f.ApproxBytes > 0 {
		progressTotal = int64(f.ApproxBytes)
	}
	report(offset, progressTotal)
	// While writing, the free space is checked every spaceStep: a server
	// that sends more than it announced, or than nobody announced, stops at
	// the donor's reserve.
	guard := func(done int64) error {
		var need uint64
		if total > done {
			need = uint64(total - done)
		}
		return s.checkSpace(final, f, need, fmt.Sprintf("%s more are still to come", FormatGB(need)))
	}
	written, copyErr := copyHashed(w, body, h, offset, progressTotal, report, func(off, n int64) { startWriteback(fh, off, n) }, guard)
	watch.stop()
	var syncErr error
	if !asyncDurable {
		syncErr = fh.Sync()
	}
	closeErr := fh.Close()
	size := offset + written
	report(size, max(progressTotal, size))

	if copyErr != nil {
		var we *writeError
		switch {
		case errors.As(copyErr, &we) && isDiskFull(we.err):
			// A job that failed for space leaves no .part behind to keep
			// the disk full.
			os.Remove(part)
			return fmt.Errorf("the disk holding %s is full after %s of %s; the partial download was deleted: %w",
				filepath.Dir(final), FormatGB(uint64(size)), f.Filename, we.err)
		case errors.As(copyErr, new(*spaceError)):
			os.Remove(part)
			return fmt.Errorf("%w; the download stopped after %s and the partial file was deleted", copyErr, FormatGB(uint64(size)))
		case errors.As(copyErr, &we):
			return fmt.Errorf("could not write %s: %w", part, we.err)
		case ctx.Err() != nil:
			return fmt.Errorf("download of %s stopped after %d bytes (the partial file is kept): %w", f.Filename, size, ctx.Err())
		case watch.isStalled():
			return stalled(size, written)
		default:
			return &resumableError{note: "the connection to the model server broke", fresh: written, err: fmt.Errorf("download of %s broke off after %d bytes: %w",
				f.Filename, size, logging.RedactError(copyErr))}
		}
	}
	if syncErr != nil || closeErr != nil {
		err := errors.Join(syncErr, closeErr)
		if isDiskFull(err) {
			os.Remove(part)
			return fmt.Errorf("the disk holding %s is full; the partial download of %s was deleted: %w", filepath.Dir(final), f.Filename, err)
		}
		return fmt.Errorf("could not save %s: %w", part, err)
	}
	if resp.ContentLength >= 0 && written != resp.ContentLength {
		return &resumableError{note: "the model server sent less than it announced", fresh: written, err: fmt.Errorf("the model server announced %d bytes of %s but sent %d",
			resp.ContentLength, f.Filename, written)}
	}
	if total >= 0 && size != total {
		os.Remove(part)
		return fmt.Errorf("%s came out at %d bytes instead of %d; the partial file was deleted and the next try downloads it again",
			f.Filename, size, total)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if f.SHA256 != "" && !strings.EqualFold(sum, f.SHA256) {
		os.Remove(part)
		return fmt.Errorf("%s was downloaded but its sha256 is %s, not %s as the studio said; the file was deleted and the next try downloads it again",
			f.Filename, sum, strings.ToLower(f.SHA256))
	}
	if cerr := s.checkContent(part, f, eng); cerr != nil {
		os.Remove(part)
		log.Warn("the downloaded file is not a usable model; it was deleted", "why", cerr.Error())
		var je *JobError
		errors.As(cerr, &je)
		return &JobError{Field: je.Field, Reason: je.Reason + " (the download was deleted)", Err: je.Err}
	}
	s.forget(final)
	os.Remove(final + verifiedSuffix)
	if err := os.Rename(part, final); err != nil {
		return fmt.Errorf("could not move %s into place: %w", final, err)
	}
	if rec, err := recordFor(final, sum); err == nil {
		s.remember(final, rec)
		s.persist(log, final, rec)
	}
	log.Info("model file downloaded and verified", "bytes", size, "sha256", sum)
	return nil
}

func hashPrefix(ctx context.Context, h hash.Hash, path string, n int64) error {
	fh, err := os.Open(path)
	if err != nil {
		return err
	}
	defer fh.Close()
	got, err := io.CopyBuffer(h, ctxReader{ctx, io.LimitReader(fh, n)}, make([]byte, 1<<20))
	if err != nil {
		return err
	}
	if got != n {
		return fmt.Errorf("read %d of %d bytes", got, n)
	}
	return nil
}

// writeError marks an error that came from writing the .part file, so that
// a full disk is told apart from a broken connection.
type writeError struct{ err error }

func (e *writeError) Error() string { return e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

// progressStep is how often download progress is reported.
const progressStep = 1 << 20

// writebackStep is how many written bytes are handed to the disk at a time.
const writebackStep = 8 << 20

// copyHashed streams r into w and into h; every read is written as it
// comes. Hashing runs on its own goroutine
// over a few rotating buffers, so that on a multi-core machine it overlaps
// the network and the disk instead of adding to them.
//
// Every writebackStep bytes, writeback(from, n) is called so that the
// operating system starts putting the bytes on disk while the download
// goes on; the fsync before the rename then has little left to wait for.
//
// Every spaceStep bytes, guard(done) may stop the copy with its error.
func copyHashed(w io.Writer, r io.Reader, h hash.Hash, offset, total int64, report func(done, total int64), writeback func(off, n int64), guard func(done int64) error) (int64, error) {
	const nbuf, bufSize = 4, 1 << 20
	free := make(chan []byte, nbuf)
	for range nbuf {
		free <- make([]byte, bufSize)
	}
	toHash := make(chan []byte, nbuf)
	hashed := make(chan struct{})
	go func() {
		defer close(hashed)
		for b := range toHash {
			h.Write(b)
			free <- b[:cap(b)]
		}
	}()
	defer func() {
		close(toHash)
		<-hashed // h is complete (and no longer touched) once copyHashed returns
	}()

	var written, lastReport, lastWriteback, lastGuard int64
	for {
		buf := <-free
		// Every read goes to the file at once, so that the .part holds all
		// that arrived even while the server stalls; the hasher gets whole
		// buffers, fewer and larger.
		n := 0
		var rerr error
		for n < len(buf) && rerr == nil {
			var m int
			m, rerr = r.Read(buf[n:])
			if m == 0 {
				continue
			}
			nw, werr := w.Write(buf[n : n+m])
			n += nw
			written += int64(nw)
			if werr == nil && nw < m {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				if n > 0 {
					toHash <- buf[:n]
				} else {
					free <- buf
				}
				return written, &writeError{werr}
			}
			if written-lastReport >= progressStep {
				lastReport = written
				report(offset+written, total)
			}
			if writeback != nil && written-lastWriteback >= writebackStep {
				writeback(offset+lastWriteback, written-lastWriteback)
				lastWriteback = written
			}
			if guard != nil && written-lastGuard >= spaceStep {
				lastGuard = written
				if gerr := guard(offset + written); gerr != nil {
					toHash <- buf[:n]
					return written, gerr
				}
			}
		}
		if n > 0 {
			toHash <- buf[:n]
		} else {
			free <- buf
		}
		if rerr == io.EOF {
			return written, nil
		}
		if rerr != nil {
			return written, rerr
		}
	}
}

// modelMeta records the model id (its folder name is only a sanitised form
// of it) and the engine that runs it.
type modelMeta struct {
	ID     string     `json:"id"`
	Engine EngineName `json:"engine,omitempty"`
}

func (s *Store) writeMeta(modelID string, eng EngineName) error {
	dir, err := s.ModelDir(modelID)
	if err != nil {
		return err
	}
	path := filepath.Join(dir, modelMetaFile)
	var old modelMeta
	if b, err := os.ReadFile(path); err == nil {
		_ = json.Unmarshal(b, &old)
	}
	if old.ID == modelID && (eng == "" || old.Engine == eng) {
		return nil
	}
	m := modelMeta{ID: modelID, Engine: eng}
	if eng == "" {
		m.Engine = old.Engine
	}
	b, _ := json.Marshal(m)
	return writeFileAtomic(path, b)
}

// StoredModel is one model folder, for the Models page.
type StoredModel struct {
	ID     string     // the model id as the studio named it (folder name if unknown)
	Dir    string     // its folder
	Engine EngineName // empty when unknown
	Bytes  uint64     // all files, partial downloads included
	Files  []StoredFile
	InUse  bool
	// Downloaded says the store made this folder (it has the store's
	// record of the model id): only such models count against the disk
	// budget and may be evicted by it.
	Downloaded bool
	// LastUsed is when a job last used the model (Store.Use), else when
	// its newest file was written; zero for a folder with no files.
	LastUsed time.Time
}

// StoredFile is one file in a model folder.
type StoredFile struct {
	Name     string
	Bytes    uint64
	Partial  bool // an unfinished download (.part)
	Verified bool // size and sha256 checked and unchanged since
	ModTime  time.Time
}

// List describes every model folder under the root, sorted by id.
func (s *Store) List() ([]StoredModel, error) {
	entries, err := os.ReadDir(s.root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("could not read the models folder %s: %w", s.root, err)
	}
	var out []StoredModel
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		m, err := s.describe(filepath.Join(s.root, e.Name()))
		if err != nil {
			s.log.Warn("could not read a model folder", "op", "store", "dir", e.Name(), "err", err)
			continue
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func (s *Store) describe(dir string) (StoredModel, error) {
	m := StoredModel{ID: filepath.Base(dir), Dir: dir}
	if b, err := os.ReadFile(filepath.Join(dir, modelMetaFile)); err == nil {
		var meta modelMeta
		if json.Unmarshal(b, &meta) == nil && meta.ID != "" && SanitizeModelID(meta.ID) == filepath.Base(dir) {
			m.ID, m.Engine = meta.ID, meta.Engine
			m.Downloaded = true
		}
	}
	lastUsed, haveLastUsed, corrupt := readLastUsed(dir)
	if corrupt {
		s.log.Debug("the model's last-use record is not readable; using its files' times", "op", "store", "dir", filepath.Base(dir))
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return m, err
	}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") || strings.HasSuffix(name, verifiedSuffix) || !e.Type().IsRegular() {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		sf := StoredFile{Name: name, Bytes: uint64(info.Size()), ModTime: info.ModTime()}
		if strings.HasSuffix(name, partSuffix) {
			sf.Partial = true
		} else if rec, ok := s.lookupRecord(filepath.Join(dir, name)); ok {
			sf.Verified = rec.Size == info.Size() && rec.ModTime == info.ModTime().UnixNano()
		}
		m.Bytes += sf.Bytes
		m.Files = append(m.Files, sf)
		if !haveLastUsed && sf.ModTime.After(m.LastUsed) {
			m.LastUsed = sf.ModTime
		}
	}
	if haveLastUsed {
		m.LastUsed = lastUsed
	}
	s.mu.Lock()
	m.InUse = s.inUse[filepath.Base(dir)] > 0
	s.mu.Unlock()
	return m, nil
}

// ErrModelInUse is returned by Delete while a job or a download uses the model.
var ErrModelInUse = errors.New("the model is in use")

// Delete removes a model's folder. It refuses while a job or a download
// uses the model.
func (s *Store) Delete(modelID string) error {
	dir, err := s.ModelDir(modelID)
	if err != nil {
		return err
	}
	key := filepath.Base(dir)
	s.Sync() // no background write may land in the folder once it is gone
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inUse[key] > 0 {
		return fmt.Errorf("cannot delete %s while a job uses it; try again when the job has finished: %w", modelID, ErrModelInUse)
	}
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("there is no stored model %s", modelID)
	}
	// Holding s.mu keeps a new Ensure of this model from starting meanwhile.
	for p := range s.verified {
		if filepath.Dir(p) == dir {
			delete(s.verified, p)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("could not delete %s: %w", dir, err)
	}
	s.log.Info("model deleted", "op", "store", "model", modelID)
	return nil
}

// DiskUsage is the number of bytes under the models folder.
func (s *Store) DiskUsage() (uint64, error) {
	var total uint64
	err := filepath.WalkDir(s.root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && path == s.root {
				return filepath.SkipAll
			}
			return err
		}
		if d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				total += uint64(info.Size())
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("could not measure the models folder %s: %w", s.root, err)
	}
	return total, nil
}

// FreeSpace is the free space of the disk that holds (or will hold) the
// models folder.
func (s *Store) FreeSpace() (uint64, error) {
	p := s.root
	for {
		if _, err := os.Stat(p); err == nil {
			break
		}
		parent := filepath.Dir(p)
		if parent == p {
			break
		}
		p = parent
	}
	return s.freeSpace(p)
}

// LocalGGUF lists the GGUF models a llama engine could load without a
// download: the ids of stored llama-cpp models, and .gguf files placed
// directly in the models folder (by file name) that pass the GGUF
// structure check (LooseLeftOut lists those that do not). Sorted.
func (s *Store) LocalGGUF() []string {
	var out []string
	models, _ := s.List()
	for _, m := range models {
		if m.Engine != EngineLlamaCpp {
			continue
		}
		for _, f := range m.Files {
			if !f.Partial && strings.EqualFold(filepath.Ext(f.Name), ".gguf") {
				out = append(out, m.ID)
				break
			}
		}
	}
	for _, l := range s.looseGGUFs() {
		if l.err == nil {
			out = append(out, l.name)
		}
	}
	sort.Strings(out)
	return compactStrings(out)
}

// LooseGGUF returns the path of a .gguf file placed directly in the models
// folder under that name, if there is one.
func (s *Store) LooseGGUF(name string) (string, bool) {
	if CheckFilename(name) != nil || !strings.EqualFold(filepath.Ext(name), ".gguf") {
		return "", false
	}
	p := filepath.Join(s.root, name)
	if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
		return p, true
	}
	return "", false
}

func compactStrings(in []string) []string {
	out := in[:0]
	for i, v := range in {
		if i == 0 || v != in[i-1] {
			out = append(out, v)
		}
	}
	return out
}
