package logging

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type captureSink struct {
	mu      sync.Mutex
	entries []Entry
}

func (c *captureSink) Write(e Entry) {
	c.mu.Lock()
	c.entries = append(c.entries, e)
	c.mu.Unlock()
}

func (c *captureSink) all() []Entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Entry(nil), c.entries...)
}

func newTest(t *testing.T, opts Options) (*Logger, *bytes.Buffer) {
	t.Helper()
	var buf bytes.Buffer
	if opts.Stderr == nil {
		opts.Stderr = &buf
	}
	l, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, &buf
}

func TestFanOutAndFields(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "studio-worker.log")
	l, stderr := newTest(t, Options{FilePath: path})
	sink := &captureSink{}
	remove := l.AddSink(sink)

	log := l.Slog().With(KeyOp, "ws")
	log.Info("offer received", KeyJob, "job-1", KeyModel, "m.gguf", "vram", 4.0)
	log.Debug("hidden at info level")
	log.With(KeyJob, "job-2").Warn("slow", "n", 3)

	got := sink.all()
	if len(got) != 2 {
		t.Fatalf("sink got %d entries, want 2: %+v", len(got), got)
	}
	e := got[0]
	if e.Op != "ws" || e.Job != "job-1" || e.Model != "m.gguf" || e.Message != "offer received" || e.Level != slog.LevelInfo {
		t.Fatalf("entry fields: %+v", e)
	}
	if len(e.Attrs) != 1 || e.Attrs[0].Key != "vram" || e.Attrs[0].Value.Float64() != 4 {
		t.Fatalf("entry attrs: %v", e.Attrs)
	}
	if e.Time.IsZero() {
		t.Fatal("entry without time")
	}
	if got[1].Job != "job-2" || got[1].Op != "ws" || got[1].Level != slog.LevelWarn {
		t.Fatalf("second entry: %+v", got[1])
	}
	if s := got[1].Text(); s != "slow n=3" {
		t.Fatalf("Text = %q", s)
	}

	if r := l.Ring().Entries(); len(r) != 2 || r[0].Message != "offer received" {
		t.Fatalf("ring: %+v", r)
	}
	if !strings.Contains(stderr.String(), "offer received") || strings.Contains(stderr.String(), "hidden") {
		t.Fatalf("stderr:\n%s", stderr)
	}
	remove()
	log.Info("after remove")
	if len(sink.all()) != 2 {
		t.Fatal("removed sink still written")
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`msg="offer received"`, "op=ws", "job=job-1", "model=m.gguf", "after remove"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("log file lacks %q:\n%s", want, data)
		}
	}
	// After Close, logging still works and the file is not reopened.
	log.Info("after close")
	data2, _ := os.ReadFile(path)
	if strings.Contains(string(data2), "after close") {
		t.Fatal("file written after Close")
	}
}

func TestGroups(t *testing.T) {
	l, _ := newTest(t, Options{})
	sink := &captureSink{}
	l.AddSink(sink)
	log := l.Slog().With(KeyOp, "engine", "a", 1).WithGroup("g").With("b", 2, KeyJob, "in-group")
	log.Info("m", "c", 3)
	log.WithGroup("empty").Info("m2")

	e := sink.all()[0]
	if e.Op != "engine" || e.Job != "" {
		t.Fatalf("op/job: %+v (a job key inside a group is not the job field)", e)
	}
	if s := e.Text(); s != "m a=1 g.b=2 g.job=in-group g.c=3" {
		t.Fatalf("Text = %q", s)
	}
	if s := sink.all()[1].Text(); s != "m2 a=1 g.b=2 g.job=in-group" {
		t.Fatalf("empty group kept: %q", s)
	}
	// The parent logger is unchanged by its children.
	l.Slog().With(KeyOp, "engine", "a", 1).Info("p")
	if s := sink.all()[2].Text(); s != "p a=1" {
		t.Fatalf("parent Text = %q", s)
	}
}

type tokenValuer struct{ tok string }

func (v tokenValuer) LogValue() slog.Value { return slog.GroupValue(slog.String("authToken", v.tok)) }

func TestSecretsRedacted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "w.log")
	l, stderr := newTest(t, Options{FilePath: path})
	sink := &captureSink{}
	l.AddSink(sink)
	log := l.Slog().With("authToken", "SECRET-1")
	log.Info("hello", "registration_secret", "SECRET-2", "creds", tokenValuer{"SECRET-3"},
		slog.Group("g", "Authorization", "Bearer SECRET-4"))
	l.Close()
	file, _ := os.ReadFile(path)
	all := stderr.String() + string(file) + fmt.Sprint(sink.all()) + fmt.Sprint(l.Ring().Entries())
	if strings.Contains(all, "SECRET") {
		t.Fatalf("secret leaked:\n%s", all)
	}
	if !strings.Contains(all, "[redacted]") {
		t.Fatal("no redaction marker")
	}
}

func TestLevel(t *testing.T) {
	l, _ := newTest(t, Options{Level: slog.LevelDebug})
	l.Slog().Debug("d")
	l.SetLevel(slog.LevelError)
	l.Slog().Warn("w")
	if n := l.Ring().Len(); n != 1 {
		t.Fatalf("ring has %d entries, want 1", n)
	}
}

func TestBadFilePath(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	os.WriteFile(f, nil, 0o600)
	if _, err := New(Options{Stderr: io.Discard, FilePath: filepath.Join(f, "x.log")}); err == nil {
		t.Fatal("New with a log path under a file succeeded")
	}
}

func TestDefaultLogPath(t *testing.T) {
	p, err := DefaultLogPath()
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(p) != "studio-worker.log" || filepath.Base(filepath.Dir(p)) != "studio-worker" {
		t.Fatalf("DefaultLogPath = %q", p)
	}
}

func TestRingBoundAndOrder(t *testing.T) {
	r := NewRing(3)
	for i := range 5 {
		r.Write(Entry{Message: fmt.Sprint(i)})
	}
	var got []string
	for _, e := range r.Entries() {
		got = append(got, e.Message)
	}
	if strings.Join(got, ",") != "2,3,4" || r.Total() != 5 {
		t.Fatalf("ring = %v total %d", got, r.Total())
	}
}

func TestRingSubscribeCoalesces(t *testing.T) {
	r := NewRing(10)
	ch, cancel := r.Subscribe()
	for range 5 {
		r.Write(Entry{}) // must not block although nobody reads
	}
	<-ch
	select {
	case <-ch:
		t.Fatal("five writes gave more than one pending notification")
	default:
	}
	r.Write(Entry{})
	<-ch
	cancel()
	r.Write(Entry{})
	select {
	case <-ch:
		t.Fatal("notified after cancel")
	default:
	}
}

func TestDefaultRingSize(t *testing.T) {
	l, _ := newTest(t, Options{Stderr: io.Discard})
	for range DefaultRingSize + 5 {
		l.Slog().Info("x")
	}
	if n := l.Ring().Len(); n != 1000 {
		t.Fatalf("ring holds %d, want 1000", n)
	}
}

func TestConcurrentLogging(t *testing.T) {
	l, _ := newTest(t, Options{Stderr: io.Discard, FilePath: filepath.Join(t.TempDir(), "c.log")})
	sink := &captureSink{}
	l.AddSink(sink)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			log := l.Slog().With(KeyJob, fmt.Sprint(i))
			for range 50 {
				log.Info("line")
			}
		}()
	}
	wg.Wait()
	if n := len(sink.all()); n != 200 {
		t.Fatalf("sink got %d, want 200", n)
	}
}

func BenchmarkLogInfo(b *testing.B) {
	l, err := New(Options{Stderr: io.Discard})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	log := l.Slog().With(KeyOp, "bench")
	b.ReportAllocs()
	for b.Loop() {
		log.Info("line", KeyJob, "j", "n", 1)
	}
}

// TestLogFileOnAFullDiskIsSaidOnce is issue 10's item 18: with the log
// file on a full disk the file stayed empty without a word. /dev/full
// answers every write with "no space left on device".
func TestLogFileOnAFullDiskIsSaidOnce(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("needs /dev/full: " + err.Error())
	}
	var stderr syncBuf
	reported := make(chan error, 4)
	l, err := New(Options{Stderr: &stderr, FilePath: "/dev/full", OnFileError: func(err error) { reported <- err }})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.Slog().Info("first line")
	var got error
	select {
	case got = <-reported:
	case <-time.After(10 * time.Second):
		t.Fatal("the failing log file was never reported")
	}
	if !strings.Contains(got.Error(), "no space left") {
		t.Fatalf("reported %v", got)
	}
	for range 5 {
		l.Slog().Info("more lines")
	}
	select {
	case err := <-reported:
		t.Fatalf("reported a second time: %v", err)
	default:
	}
	if n := strings.Count(stderr.String(), "cannot be written"); n != 1 {
		t.Fatalf("stderr says it %d times:\n%s", n, stderr.String())
	}
	found := false
	for _, e := range l.Ring().Entries() {
		found = found || strings.Contains(e.Message, "the log file /dev/full cannot be written")
	}
	if !found {
		t.Fatal("the Logs page (ring) does not say it")
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// flakyWriter fails while full is set.
type flakyWriter struct{ full atomic.Bool }

func (f *flakyWriter) Write(p []byte) (int, error) {
	if f.full.Load() {
		return 0, errors.New("no space left on device")
	}
	return len(p), nil
}

// TestFileWriterReportsOncePerStreak: a disk that fills while running is
// reported at its first failed line, once, and again only after a good
// write ended the streak.
func TestFileWriterReportsOncePerStreak(t *testing.T) {
	disk := &flakyWriter{}
	reports := make(chan error, 8)
	fw := &fileWriter{w: disk, report: func(err error) { reports <- err }}
	write := func() { _, _ = fw.Write([]byte("line\n")) }
	write()
	disk.full.Store(true)
	write()
	write()
	<-reports
	disk.full.Store(false)
	write()
	disk.full.Store(true)
	write()
	<-reports
	write()
	select {
	case err := <-reports:
		t.Fatalf("a third report in two streaks: %v", err)
	default:
	}
}
