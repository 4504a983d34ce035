package history

import (
	"bytes"
	"context"
	"database/sql"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/logging"
	"github.com/minisgg/studio-worker/studio"
)

func openT(t *testing.T, dir string, log *slog.Logger) *DB {
	t.Helper()
	d, err := Open(dir, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

var noon = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

func job(id string, finished time.Time, outcome string) Job {
	return Job{ID: id, Kind: "llm", Model: "m", Offered: finished.Add(-10 * time.Second), Finished: finished,
		Outcome: outcome, PromptTokens: 5, CompletionTokens: 20, TokensPerSecond: 12.5}
}

func TestOpenMigratesAndUsesWAL(t *testing.T) {
	dir := t.TempDir()
	d := openT(t, dir, nil)
	var v int
	if err := d.db.QueryRow(`PRAGMA user_version`).Scan(&v); err != nil || v != SchemaVersion {
		t.Fatalf("user_version = %d, %v; want %d", v, err, SchemaVersion)
	}
	var mode string
	if err := d.db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode = %q, %v", mode, err)
	}
	// Opening again runs no migration twice.
	d.Close()
	d2 := openT(t, dir, nil)
	if err := d2.db.QueryRow(`PRAGMA user_version`).Scan(&v); err != nil || v != SchemaVersion {
		t.Fatalf("after reopen user_version = %d, %v", v, err)
	}
}

func TestRestartKeepsJobsTotalsAndLogs(t *testing.T) {
	dir := t.TempDir()
	d := openT(t, dir, nil)
	j := job("a", noon, OutcomeDone)
	j.Thumbnail = []byte{1, 2, 3}
	j.Prompt = "hello"
	j.Log = []LogLine{{Time: noon.Add(-time.Second), Level: "INFO", Message: "accepted job a"}, {Time: noon, Level: "WARN", Message: "slow"}}
	if err := d.Record(j); err != nil {
		t.Fatal(err)
	}
	if err := d.Record(job("b", noon.Add(time.Minute), OutcomeFailed)); err != nil {
		t.Fatal(err)
	}
	d.Close()

	d2 := openT(t, dir, nil)
	jobs, err := d2.Jobs(Filter{})
	if err != nil || len(jobs) != 2 || jobs[0].ID != "b" || jobs[1].ID != "a" {
		t.Fatalf("jobs after restart = %+v, %v", jobs, err)
	}
	a := jobs[1]
	if !bytes.Equal(a.Thumbnail, []byte{1, 2, 3}) || a.Prompt != "hello" || a.CompletionTokens != 20 || !a.Finished.Equal(noon) || a.Took() != 10*time.Second {
		t.Fatalf("job a after restart = %+v", a)
	}
	logs, err := d2.JobLog("a")
	if err != nil || len(logs) != 2 || logs[1].Message != "slow" || logs[1].Level != "WARN" {
		t.Fatalf("log of a = %+v, %v", logs, err)
	}
	s, err := d2.Summary(noon.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if s.All.Done != 1 || s.All.Failed != 1 || s.All.Tokens != 25 || s.All.Working != 20*time.Second {
		t.Fatalf("all-time totals after restart = %+v", s.All)
	}
	failed, err := d2.Jobs(Filter{Outcome: OutcomeFailed})
	if err != nil || len(failed) != 1 || failed[0].ID != "b" {
		t.Fatalf("failed filter = %+v, %v", failed, err)
	}
}

func TestSummaryBucketsDaysAndLeavesLocalOut(t *testing.T) {
	d := openT(t, t.TempDir(), nil)
	now := noon
	for _, j := range []Job{
		job("today", now.Add(-time.Hour), OutcomeDone),
		job("yesterday", now.AddDate(0, 0, -1), OutcomeDone),
		job("6days", now.AddDate(0, 0, -6), OutcomeFailed),
		job("7days", now.AddDate(0, 0, -7), OutcomeDone),
		job("40days", now.AddDate(0, 0, -40), OutcomeDone),
		{ID: "local", Kind: "llm", Local: true, Offered: now.Add(-time.Minute), Finished: now.Add(-time.Second), Outcome: OutcomeDone, CompletionTokens: 1000},
		{ID: "img", Kind: "image", Offered: now.Add(-2 * time.Minute), Finished: now.Add(-time.Minute), Outcome: OutcomeDone, Images: 2},
	} {
		if err := d.Record(j); err != nil {
			t.Fatal(err)
		}
	}
	s, err := d.Summary(now)
	if err != nil {
		t.Fatal(err)
	}
	if s.Today.Jobs() != 2 || s.Today.Images != 2 || s.Today.Tokens != 25 {
		t.Errorf("today = %+v", s.Today)
	}
	if s.Week.Jobs() != 4 || s.Week.Failed != 1 {
		t.Errorf("week = %+v", s.Week)
	}
	if s.All.Jobs() != 6 || s.All.Tokens != 4*25 {
		t.Errorf("all = %+v (the local job must not count)", s.All)
	}
	if len(s.Days) != ChartDays {
		t.Fatalf("%d chart days", len(s.Days))
	}
	last := s.Days[ChartDays-1]
	if last.Jobs != 2 || last.Date.Day() != 30 || last.Busy != 10*time.Second+time.Minute {
		t.Errorf("today's bar = %+v", last)
	}
	if s.Days[ChartDays-2].Jobs != 1 || s.Days[ChartDays-8].Jobs != 1 || s.Days[0].Jobs != 0 {
		t.Errorf("bars = %+v", s.Days)
	}
	jobs, _ := d.Jobs(Filter{})
	found := false
	for _, j := range jobs {
		found = found || (j.ID == "local" && j.Local)
	}
	if !found {
		t.Error("the local job is not listed as local")
	}
}

func TestPruneDropsOldJobsAndTheirLogs(t *testing.T) {
	d := openT(t, t.TempDir(), nil)
	old := job("old", noon.AddDate(0, 0, -91), OutcomeDone)
	old.Log = []LogLine{{Time: old.Finished, Level: "INFO", Message: "x"}}
	for _, j := range []Job{old, job("new", noon.AddDate(0, 0, -89), OutcomeDone)} {
		if err := d.Record(j); err != nil {
			t.Fatal(err)
		}
	}
	n, err := d.Prune(noon.AddDate(0, 0, -DefaultKeepDays))
	if err != nil || n != 1 {
		t.Fatalf("pruned %d, %v", n, err)
	}
	jobs, _ := d.Jobs(Filter{})
	if len(jobs) != 1 || jobs[0].ID != "new" {
		t.Fatalf("left %+v", jobs)
	}
	var lines int
	if err := d.db.QueryRow(`SELECT count(*) FROM job_logs`).Scan(&lines); err != nil || lines != 0 {
		t.Fatalf("%d log lines left of pruned jobs (%v)", lines, err)
	}
}

func TestCorruptDatabaseIsSetAside(t *testing.T) {
	for name, content := range map[string][]byte{
		"garbage":   bytes.Repeat([]byte("not a database "), 500),
		"truncated": nil, // filled below from a real database
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, FileName)
			if content == nil {
				d := openT(t, dir, nil)
				for i := range 50 {
					if err := d.Record(job(strings.Repeat("x", 100)+string(rune('a'+i%26))+time.Duration(i).String(), noon, OutcomeDone)); err != nil {
						t.Fatal(err)
					}
				}
				d.Close()
				b, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				// Keep the header, damage the pages after it.
				content = append(b[:100:100], bytes.Repeat([]byte{0xff}, len(b)-100)...)
				os.Remove(path + "-wal")
			}
			if err := os.WriteFile(path, content, 0o600); err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			log := slog.New(slog.NewTextHandler(&buf, nil))
			d := openT(t, dir, log)
			if err := d.Record(job("fresh", noon, OutcomeDone)); err != nil {
				t.Fatalf("the fresh database takes no job: %v", err)
			}
			aside, _ := filepath.Glob(path + ".broken-*")
			if len(aside) == 0 {
				t.Fatal("the damaged database was not set aside")
			}
			if b, _ := os.ReadFile(aside[0]); !bytes.Equal(b, content) {
				t.Error("the set-aside file is not the damaged one")
			}
			if !strings.Contains(buf.String(), "set aside") {
				t.Errorf("no log line says it was set aside: %s", buf.String())
			}
		})
	}
}

func TestNewerSchemaIsSetAsideNotDowngraded(t *testing.T) {
	dir := t.TempDir()
	d := openT(t, dir, nil)
	if _, err := d.db.Exec(`PRAGMA user_version = 99`); err != nil {
		t.Fatal(err)
	}
	d.Close()
	var buf bytes.Buffer
	openT(t, dir, slog.New(slog.NewTextHandler(&buf, nil)))
	if !strings.Contains(buf.String(), "newer Studio Worker") {
		t.Fatalf("log = %s", buf.String())
	}
}

func TestOpenFailsOnlyWithoutAFolder(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o600)
	if _, err := Open(filepath.Join(file, "sub"), nil); err == nil {
		t.Fatal("a history under a file opened")
	}
}

// source is a snapshot source fed by the test.
type source struct{ ch chan studio.Snapshot }

func (s source) Subscribe() (<-chan studio.Snapshot, func()) { return s.ch, func() {} }

func TestRecorderWritesFinishedJobsOnceWithTheirLogs(t *testing.T) {
	dir := t.TempDir()
	d := openT(t, dir, nil)
	ring := logging.NewRing(100)
	ring.Write(logging.Entry{Time: noon, Level: slog.LevelInfo, Message: "accepted job j1", Job: "j1"})
	ring.Write(logging.Entry{Time: noon, Level: slog.LevelInfo, Message: "other", Job: "j2"})
	now := noon
	r := NewRecorder(RecorderConfig{DB: d, Logs: ring.Entries, Now: func() time.Time { return now }})
	changed, cancel := r.Subscribe()
	defer cancel()
	src := source{ch: make(chan studio.Snapshot)}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx, src); close(done) }()

	info := studio.JobInfo{ID: "j1", Kind: engine.KindImage, Model: "sd", Started: noon.Add(-5 * time.Second),
		Accepted: noon.Add(-4 * time.Second), Generating: noon.Add(-3 * time.Second), Finished: noon,
		Outcome: studio.OutcomeDone, Stats: engine.Stats{Images: 1}, Width: 64, Height: 64, Thumbnail: []byte{9}, Prompt: "a cat"}
	running := studio.JobInfo{ID: "j2", Outcome: studio.OutcomeRunning}
	src.ch <- studio.Snapshot{Current: &running, Recent: []studio.JobInfo{info}}
	<-changed
	src.ch <- studio.Snapshot{Recent: []studio.JobInfo{info}} // the same job again: no write
	// A job of the local API, from the snapshot: listed, marked local.
	api := studio.JobInfo{ID: "api-0", Kind: engine.KindLLM, Local: true, Started: noon, Finished: noon.Add(500 * time.Millisecond),
		Outcome: studio.OutcomeDone, Stats: engine.Stats{CompletionTokens: 50}}
	src.ch <- studio.Snapshot{Recent: []studio.JobInfo{api, info}}
	<-changed
	r.RecordLocal(Job{ID: "api-1", Kind: "llm", Finished: noon.Add(time.Second), Outcome: OutcomeDone, CompletionTokens: 7})
	<-changed
	stop()
	<-done

	jobs, err := d.Jobs(Filter{})
	if err != nil || len(jobs) != 3 || jobs[1].ID != "api-0" || !jobs[1].Local {
		t.Fatalf("jobs = %+v, %v", jobs, err)
	}
	got := jobs[2]
	if got.ID != "j1" || got.Kind != "image" || got.Images != 1 || got.Width != 64 || got.Prompt != "a cat" ||
		!got.Accepted.Equal(noon.Add(-4*time.Second)) || !got.Started.Equal(noon.Add(-3*time.Second)) || jobs[0].ID != "api-1" || !jobs[0].Local {
		t.Fatalf("recorded %+v / %+v", got, jobs[0])
	}
	logs, _ := d.JobLog("j1")
	if len(logs) != 1 || logs[0].Message != "accepted job j1" {
		t.Fatalf("job log = %+v", logs)
	}
	s, _ := d.Summary(noon)
	if s.All.Jobs() != 1 {
		t.Fatalf("totals count the local job: %+v", s.All)
	}
}

func TestRecorderKeepsTheWorkerGoingWhenWritesFail(t *testing.T) {
	d := openT(t, t.TempDir(), nil)
	var buf bytes.Buffer
	r := NewRecorder(RecorderConfig{DB: d, Log: slog.New(slog.NewTextHandler(&buf, nil))})
	d.Close() // every write fails from now on
	r.write(job("x", noon, OutcomeDone))
	r.write(job("y", noon, OutcomeDone))
	if n := strings.Count(buf.String(), "could not be added"); n != 1 {
		t.Fatalf("%d warnings for two failed writes, want one: %s", n, buf.String())
	}
}

func TestMigrationFromVersion1KeepsJobsAndAddsDismissed(t *testing.T) {
	dir := t.TempDir()
	raw, err := sql.Open("sqlite3", "file:"+filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(migrations[0] + `; PRAGMA user_version = 1;`); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(`INSERT INTO jobs (id, kind, model, offered_ms, finished_ms, outcome) VALUES ('v1job', 'llm', 'm', 1, 2, 'done')`); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	d := openT(t, dir, nil)
	var v int
	if err := d.db.QueryRow(`PRAGMA user_version`).Scan(&v); err != nil || v != SchemaVersion || SchemaVersion < 2 {
		t.Fatalf("user_version %d (%v), SchemaVersion %d", v, err, SchemaVersion)
	}
	jobs, err := d.Jobs(Filter{})
	if err != nil || len(jobs) != 1 || jobs[0].ID != "v1job" {
		t.Fatalf("jobs after migration = %+v, %v", jobs, err)
	}
	if d.IsDismissed("hello") {
		t.Fatal("dismissed before closing")
	}
	if err := d.Dismiss("hello"); err != nil || !d.IsDismissed("hello") || d.IsDismissed("other") {
		t.Fatalf("dismiss: %v", err)
	}
}
