// Package history keeps the donor's job history and contribution totals in
// an embedded SQLite database in the app's state folder, so that what a
// computer has given survives a restart. The Recorder fills it from the
// worker's snapshots; the window reads it (Jobs, Summary, JobLog).
//
// The database is SQLite through github.com/ncruces/go-sqlite3, a pure Go
// build of SQLite (no cgo, so the Windows build and the tests need no C
// compiler), opened through database/sql. It runs in WAL mode; the schema
// is versioned with PRAGMA user_version and migrated forward on open. A
// database that cannot be opened, read or migrated is set aside (renamed
// with a ".broken-<time>" suffix) with a log line, and a fresh one is
// started: history is a convenience, it never stops the worker.
package history

import (
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	_ "github.com/ncruces/go-sqlite3/driver" // registers "sqlite3"
)

// FileName is the database's name in the state folder.
const FileName = "history.db"

// DefaultKeepDays is how long finished jobs are kept when the setting is 0.
const DefaultKeepDays = 90

// Outcomes a job can end with, as studio.JobInfo names them.
const (
	OutcomeDone   = "done"
	OutcomeFailed = "failed"
	OutcomeLost   = "lost"
)

// LogLine is one log line of a job.
type LogLine struct {
	Time    time.Time
	Level   string // "INFO", "WARN", "ERROR", "DEBUG"
	Message string
}

// Job is one finished job as the history keeps it.
type Job struct {
	ID    string
	Kind  string // "llm", "image", …
	Model string
	// Local is a job asked of this computer's own API, not by the studio;
	// it is listed but never counted in the studio totals.
	Local bool
	// Offered is when the offer came, Accepted when the studio was told
	// yes, Started when generation began, Finished when it ended. Any but
	// Offered and Finished may be zero (a job that failed before).
	Offered, Accepted, Started, Finished time.Time
	Outcome                              string // OutcomeDone, OutcomeFailed, OutcomeLost
	Reason                               string // why it failed, in a donor's words; "" when done
	Prompt                               string // shortened by the worker
	PromptTokens, CompletionTokens       int
	TokensPerSecond                      float64
	Images                               int
	Width, Height                        int // image size in pixels
	Thumbnail                            []byte
	// Log is the job's own log lines; only JobLog fills it.
	Log []LogLine
}

// Tokens is prompt plus completion tokens.
func (j Job) Tokens() int { return j.PromptTokens + j.CompletionTokens }

// Took is how long the job held this computer, offer to end.
func (j Job) Took() time.Duration {
	if j.Finished.Before(j.Offered) {
		return 0
	}
	return j.Finished.Sub(j.Offered)
}

// DB is the open history database. It is safe for concurrent use.
type DB struct {
	db   *sql.DB
	path string
	log  *slog.Logger
}

// migrations[i] brings the schema from version i to i+1. Append only:
// never edit a migration that has shipped.
var migrations = []string{
	`CREATE TABLE jobs (
		id TEXT PRIMARY KEY,
		kind TEXT NOT NULL,
		model TEXT NOT NULL,
		local INTEGER NOT NULL DEFAULT 0,
		offered_ms INTEGER NOT NULL,
		accepted_ms INTEGER NOT NULL DEFAULT 0,
		started_ms INTEGER NOT NULL DEFAULT 0,
		finished_ms INTEGER NOT NULL,
		outcome TEXT NOT NULL,
		reason TEXT NOT NULL DEFAULT '',
		prompt TEXT NOT NULL DEFAULT '',
		prompt_tokens INTEGER NOT NULL DEFAULT 0,
		completion_tokens INTEGER NOT NULL DEFAULT 0,
		tokens_per_second REAL NOT NULL DEFAULT 0,
		images INTEGER NOT NULL DEFAULT 0,
		width INTEGER NOT NULL DEFAULT 0,
		height INTEGER NOT NULL DEFAULT 0,
		thumbnail BLOB
	);
	CREATE INDEX jobs_finished ON jobs(finished_ms);
	CREATE TABLE job_logs (
		job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
		seq INTEGER NOT NULL,
		at_ms INTEGER NOT NULL,
		level TEXT NOT NULL,
		message TEXT NOT NULL,
		PRIMARY KEY (job_id, seq)
	);`,
	// 2: notices the donor closed, so they are not shown again.
	`CREATE TABLE dismissed (
		notice TEXT PRIMARY KEY,
		at_ms INTEGER NOT NULL
	);`,
}

// SchemaVersion is the schema version this build writes.
var SchemaVersion = len(migrations)

// Open opens (or creates) the history in dir. A database that cannot be
// used is set aside, logged, and replaced by a fresh one; Open fails only
// when no database can be made in dir at all (an unwritable folder).
func Open(dir string, log *slog.Logger) (*DB, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("cannot create the folder for the job history: %w", err)
	}
	if err := engineStarts(); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, FileName)
	d, err := open(path, log)
	if err == nil {
		return d, nil
	}
	aside, moveErr := setAside(path)
	if moveErr != nil {
		return nil, fmt.Errorf("the job history %s cannot be read (%v) nor set aside (%v)", path, err, moveErr)
	}
	log.Warn(fmt.Sprintf("the job history could not be read (%v); it was set aside as %s and a new one started", err, aside), "op", "history")
	return open(path, log)
}

// engineStarts opens a throwaway in-memory database, so that a SQLite
// that cannot start on this system is told apart from a damaged file (which
// Open sets aside). The driver panics rather than returning an error when
// it cannot reserve its memory: seen under Wine 8, whose VirtualAlloc2
// refuses the placeholder reservations (MEM_RESERVE_PLACEHOLDER) that
// github.com/ncruces/go-sqlite3 makes on Windows 10 1803 and later. The
// history is then off, said once by the caller; the worker goes on.
func engineStarts() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("SQLite cannot start on this system: %v", r)
		}
	}()
	db, err := sql.Open("sqlite3", ":memory:")
	if err != nil {
		return fmt.Errorf("SQLite cannot start on this system: %w", err)
	}
	defer db.Close()
	if err := db.Ping(); err != nil {
		return fmt.Errorf("SQLite cannot start on this system: %w", err)
	}
	return nil
}

func open(path string, log *slog.Logger) (*DB, error) {
	// One connection: SQLite serialises writers anyway, and one
	// connection keeps the pragmas (foreign keys) in force everywhere.
	db, err := sql.Open("sqlite3", "file:"+path+"?_pragma=busy_timeout(5000)&_pragma=foreign_keys(1)&_pragma=journal_mode(wal)&_pragma=synchronous(normal)")
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	d := &DB{db: db, path: path, log: log}
	if err := d.check(); err != nil {
		db.Close()
		return nil, err
	}
	if err := d.migrate(); err != nil {
		db.Close()
		return nil, err
	}
	return d, nil
}

// check proves the file is a database SQLite can read end to end.
func (d *DB) check() error {
	var res string
	if err := d.db.QueryRow(`PRAGMA quick_check`).Scan(&res); err != nil {
		return err
	}
	if res != "ok" {
		return errors.New("damaged: " + res)
	}
	return nil
}

func (d *DB) migrate() error {
	var v int
	if err := d.db.QueryRow(`PRAGMA user_version`).Scan(&v); err != nil {
		return err
	}
	if v > len(migrations) {
		return fmt.Errorf("it was written by a newer Studio Worker (schema %d, this one knows %d)", v, len(migrations))
	}
	for ; v < len(migrations); v++ {
		tx, err := d.db.Begin()
		if err != nil {
			return err
		}
		if _, err := tx.Exec(migrations[v]); err != nil {
			tx.Rollback()
			return fmt.Errorf("schema migration %d: %w", v+1, err)
		}
		if _, err := tx.Exec(fmt.Sprintf(`PRAGMA user_version = %d`, v+1)); err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	return nil
}

// setAside renames path (and its WAL and shared-memory files) out of the
// way and returns the new name.
func setAside(path string) (string, error) {
	aside := path + ".broken-" + time.Now().UTC().Format("20060102-150405")
	if err := os.Rename(path, aside); err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	for _, suf := range []string{"-wal", "-shm"} {
		if err := os.Rename(path+suf, aside+suf); err != nil && !errors.Is(err, os.ErrNotExist) {
			return "", err
		}
	}
	return aside, nil
}

// Path is the database file.
func (d *DB) Path() string { return d.path }

// Close closes the database.
func (d *DB) Close() error { return d.db.Close() }

func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMS(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v)
}

// Record saves a finished job and its log lines; recording the same id
// again replaces it (a job reported again after a restart).
func (d *DB) Record(j Job) error {
	if j.ID == "" {
		return errors.New("a job without an id cannot be recorded")
	}
	tx, err := d.db.Begin()
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.Exec(`DELETE FROM jobs WHERE id = ?`, j.ID); err != nil {
		return err
	}
	local := 0
	if j.Local {
		local = 1
	}
	_, err = tx.Exec(`INSERT INTO jobs (id, kind, model, local, offered_ms, accepted_ms, started_ms, finished_ms,
		outcome, reason, prompt, prompt_tokens, completion_tokens, tokens_per_second, images, width, height, thumbnail)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		j.ID, j.Kind, j.Model, local, ms(j.Offered), ms(j.Accepted), ms(j.Started), ms(j.Finished),
		j.Outcome, j.Reason, j.Prompt, j.PromptTokens, j.CompletionTokens, j.TokensPerSecond,
		j.Images, j.Width, j.Height, j.Thumbnail)
	if err != nil {
		return err
	}
	for i, l := range j.Log {
		if _, err := tx.Exec(`INSERT INTO job_logs (job_id, seq, at_ms, level, message) VALUES (?, ?, ?, ?, ?)`,
			j.ID, i, ms(l.Time), l.Level, l.Message); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// Dismiss remembers that the donor closed notice.
func (d *DB) Dismiss(notice string) error {
	_, err := d.db.Exec(`INSERT OR REPLACE INTO dismissed (notice, at_ms) VALUES (?, ?)`, notice, time.Now().UnixMilli())
	return err
}

// IsDismissed reports whether the donor closed notice before; false when
// the database cannot tell.
func (d *DB) IsDismissed(notice string) bool {
	var n int
	err := d.db.QueryRow(`SELECT count(*) FROM dismissed WHERE notice = ?`, notice).Scan(&n)
	return err == nil && n > 0
}

// Filter narrows Jobs.
type Filter struct {
	// Outcome is OutcomeDone, OutcomeFailed (failed and lost together),
	// or "" for all.
	Outcome string
	// Limit bounds the rows (0: 500).
	Limit int
}

// Jobs lists finished jobs, newest first, without their log lines.
func (d *DB) Jobs(f Filter) ([]Job, error) {
	q := `SELECT id, kind, model, local, offered_ms, accepted_ms, started_ms, finished_ms, outcome, reason, prompt,
		prompt_tokens, completion_tokens, tokens_per_second, images, width, height, thumbnail FROM jobs`
	var args []any
	switch f.Outcome {
	case "":
	case OutcomeFailed:
		q += ` WHERE outcome <> ?`
		args = append(args, OutcomeDone)
	default:
		q += ` WHERE outcome = ?`
		args = append(args, f.Outcome)
	}
	if f.Limit <= 0 {
		f.Limit = 500
	}
	q += ` ORDER BY finished_ms DESC, id LIMIT ?`
	args = append(args, f.Limit)
	rows, err := d.db.Query(q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Job
	for rows.Next() {
		var j Job
		var local int
		var off, acc, sta, fin int64
		if err := rows.Scan(&j.ID, &j.Kind, &j.Model, &local, &off, &acc, &sta, &fin, &j.Outcome, &j.Reason, &j.Prompt,
			&j.PromptTokens, &j.CompletionTokens, &j.TokensPerSecond, &j.Images, &j.Width, &j.Height, &j.Thumbnail); err != nil {
			return nil, err
		}
		j.Local = local != 0
		j.Offered, j.Accepted, j.Started, j.Finished = fromMS(off), fromMS(acc), fromMS(sta), fromMS(fin)
		out = append(out, j)
	}
	return out, rows.Err()
}

// JobLog is a job's log lines, oldest first.
func (d *DB) JobLog(id string) ([]LogLine, error) {
	rows, err := d.db.Query(`SELECT at_ms, level, message FROM job_logs WHERE job_id = ? ORDER BY seq`, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []LogLine
	for rows.Next() {
		var l LogLine
		var at int64
		if err := rows.Scan(&at, &l.Level, &l.Message); err != nil {
			return nil, err
		}
		l.Time = fromMS(at)
		out = append(out, l)
	}
	return out, rows.Err()
}

// Prune deletes the jobs (and their log lines) that finished before
// cutoff; it returns how many went.
func (d *DB) Prune(cutoff time.Time) (int, error) {
	res, err := d.db.Exec(`DELETE FROM jobs WHERE finished_ms < ?`, cutoff.UnixMilli())
	if err != nil {
		return 0, err
	}
	n, err := res.RowsAffected()
	return int(n), err
}

// Totals add up studio jobs over a span.
type Totals struct {
	Done, Failed int
	// Tokens is prompt plus completion tokens of the jobs done.
	Tokens int64
	Images int
	// Working is the time jobs held this computer, offer to end.
	Working time.Duration
}

// Jobs is done plus failed.
func (t Totals) Jobs() int { return t.Done + t.Failed }

func (t *Totals) add(j Job) {
	t.Working += j.Took()
	if j.Outcome != OutcomeDone {
		t.Failed++
		return
	}
	t.Done++
	t.Tokens += int64(j.Tokens())
	t.Images += j.Images
}

// Day is one calendar day (local time) of the chart.
type Day struct {
	Date time.Time // local midnight
	Jobs int       // done and failed
	Busy time.Duration
}

// ChartDays is how many days Summary's chart covers.
const ChartDays = 30

// Summary is what the Status page shows: totals today, over the last 7
// days (today and the 6 before) and all time, and jobs per day for the
// last ChartDays days, oldest first. Local jobs are left out.
type Summary struct {
	Today, Week, All Totals
	Days             []Day
}

// Summary adds up the studio jobs as of now, in now's location.
func (d *DB) Summary(now time.Time) (Summary, error) {
	var s Summary
	loc := now.Location()
	today := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, loc)
	first := today.AddDate(0, 0, -(ChartDays - 1))
	weekStart := today.AddDate(0, 0, -6)
	s.Days = make([]Day, ChartDays)
	for i := range s.Days {
		s.Days[i].Date = first.AddDate(0, 0, i)
	}
	rows, err := d.db.Query(`SELECT offered_ms, finished_ms, outcome, prompt_tokens, completion_tokens, images
		FROM jobs WHERE local = 0`)
	if err != nil {
		return s, err
	}
	defer rows.Close()
	for rows.Next() {
		var j Job
		var off, fin int64
		if err := rows.Scan(&off, &fin, &j.Outcome, &j.PromptTokens, &j.CompletionTokens, &j.Images); err != nil {
			return s, err
		}
		j.Offered, j.Finished = fromMS(off).In(loc), fromMS(fin).In(loc)
		s.All.add(j)
		if !j.Finished.Before(weekStart) {
			s.Week.add(j)
		}
		if !j.Finished.Before(today) {
			s.Today.add(j)
		}
		if !j.Finished.Before(first) {
			fd := time.Date(j.Finished.Year(), j.Finished.Month(), j.Finished.Day(), 0, 0, 0, 0, loc)
			for i := range s.Days {
				if s.Days[i].Date.Equal(fd) {
					s.Days[i].Jobs++
					s.Days[i].Busy += j.Took()
				}
			}
		}
	}
	return s, rows.Err()
}
