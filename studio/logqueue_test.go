package studio

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/minisgg/studio-worker/logging"
)

func TestEntryToLogEntry(t *testing.T) {
	at := time.Date(2025, 1, 2, 4, 4, 5, 678_900_000, time.FixedZone("CET", 3600))
	cases := []struct {
		in   logging.Entry
		want LogEntry
	}{
		{logging.Entry{Time: at, Level: slog.LevelInfo, Message: "connected", Op: "ws"},
			LogEntry{TS: "2025-01-02T03:04:05.678Z", Level: "info", Category: "ws", Message: "connected"}},
		{logging.Entry{Time: at, Level: slog.LevelWarn, Message: "slow", Job: "job-1", Model: "m.gguf",
			Attrs: []slog.Attr{slog.Int("n", 3), slog.String("why", "two words")}},
			LogEntry{TS: "2025-01-02T03:04:05.678Z", Level: "warn", Category: "worker",
				Message: `slow model=m.gguf n=3 why="two words"`, JobID: "job-1"}},
		{logging.Entry{Time: at, Level: slog.LevelError + 4, Message: "boom", Op: "engine"},
			LogEntry{TS: "2025-01-02T03:04:05.678Z", Level: "error", Category: "engine", Message: "boom"}},
		{logging.Entry{Time: at.Truncate(time.Second), Level: slog.LevelInfo + 2, Message: "x"},
			LogEntry{TS: "2025-01-02T03:04:05.000Z", Level: "info", Category: "worker", Message: "x"}},
	}
	for _, tc := range cases {
		if got := EntryToLogEntry(tc.in); got != tc.want {
			t.Errorf("EntryToLogEntry(%+v)\n got %+v\nwant %+v", tc.in, got, tc.want)
		}
	}
}

func TestLogQueueSkipsDebug(t *testing.T) {
	q := NewLogQueue(0)
	q.Write(logging.Entry{Level: slog.LevelDebug, Message: "d"})
	q.Write(logging.Entry{Level: slog.LevelInfo, Message: "i"})
	if got := q.Drain(0); len(got) != 1 || got[0].Message != "i" {
		t.Fatalf("Drain = %+v", got)
	}
}

func msgs(es []LogEntry) string {
	var s []string
	for _, e := range es {
		s = append(s, e.Message)
	}
	return strings.Join(s, ",")
}

func TestLogQueueDrainAndRequeue(t *testing.T) {
	q := NewLogQueue(10)
	for i := range 5 {
		q.Push(LogEntry{Message: fmt.Sprint(i)})
	}
	first := q.Drain(2)
	if msgs(first) != "0,1" || q.Len() != 3 {
		t.Fatalf("Drain(2) = %s, Len %d", msgs(first), q.Len())
	}
	q.Push(LogEntry{Message: "5"})
	q.Requeue(first) // the batch could not be sent
	if got := q.Drain(0); msgs(got) != "0,1,2,3,4,5" {
		t.Fatalf("after Requeue: %s", msgs(got))
	}
	if q.Len() != 0 || len(q.Drain(0)) != 0 {
		t.Fatal("queue not empty")
	}
	q.Requeue(nil)
	if q.Len() != 0 {
		t.Fatal("Requeue(nil) added entries")
	}
}

func TestLogQueueOverflowDropsOldestWithOneMarker(t *testing.T) {
	q := NewLogQueue(5000)
	q.now = func() time.Time { return time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC) }
	for i := range 5003 {
		q.Push(LogEntry{Level: "info", Message: fmt.Sprint(i)})
	}
	if q.Len() != 5001 {
		t.Fatalf("Len = %d, want 5000 entries and the marker", q.Len())
	}
	got := q.Drain(3)
	if len(got) != 3 {
		t.Fatalf("Drain(3) gave %d", len(got))
	}
	m := got[0]
	if m.Level != "warn" || m.Category != "logs" || !strings.HasPrefix(m.Message, "3 log lines were dropped") ||
		m.TS != "2025-01-02T03:04:05.000Z" {
		t.Fatalf("marker = %+v", m)
	}
	if got[1].Message != "3" || got[2].Message != "4" {
		t.Fatalf("oldest kept = %s", msgs(got[1:]))
	}
	rest := q.Drain(0)
	if len(rest) != 4998 || rest[len(rest)-1].Message != "5002" {
		t.Fatalf("rest: %d entries, last %q", len(rest), rest[len(rest)-1].Message)
	}
	for _, e := range rest {
		if e.Category == "logs" {
			t.Fatal("a second marker")
		}
	}
}

func TestLogQueueRequeueOverflow(t *testing.T) {
	q := NewLogQueue(3)
	q.Push(LogEntry{Message: "c"})
	q.Push(LogEntry{Message: "d"})
	q.Requeue([]LogEntry{{Message: "a"}, {Message: "b"}})
	got := q.Drain(0)
	if msgs(got) != "1 log lines were dropped because the queue to the studio was full (limit 3),b,c,d" {
		t.Fatalf("Drain = %s", msgs(got))
	}
}

func TestLogQueueAsSink(t *testing.T) {
	l, err := logging.New(logging.Options{Stderr: nilWriter{}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	q := NewLogQueue(0)
	l.AddSink(q)
	l.Slog().With(logging.KeyOp, "ws", logging.KeyJob, "job-9").Warn("retrying", "n", 2)
	got := q.Drain(0)
	if len(got) != 1 || got[0].Category != "ws" || got[0].JobID != "job-9" || got[0].Message != "retrying n=2" ||
		got[0].Level != "warn" || !strings.HasSuffix(got[0].TS, "Z") || len(got[0].TS) != len("2025-01-02T03:04:05.000Z") {
		t.Fatalf("queued %+v", got)
	}
}

type nilWriter struct{}

func (nilWriter) Write(p []byte) (int, error) { return len(p), nil }

func BenchmarkLogQueuePushDrain(b *testing.B) {
	q := NewLogQueue(0)
	e := LogEntry{TS: "2025-01-02T03:04:05.000Z", Level: "info", Category: "ws", Message: "m"}
	b.ReportAllocs()
	for b.Loop() {
		for range 100 {
			q.Push(e)
		}
		q.Drain(0)
	}
}
