package studio

import (
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/minisgg/studio-worker/logging"
)

// DefaultLogQueueSize bounds the logBatch queue (§3.6).
const DefaultLogQueueSize = 5000

// LogQueue holds log lines on their way to the studio's logBatch. It is a
// logging.Sink. When full, the oldest lines are dropped and one warn marker
// saying how many were lost is shipped in their place. Lines drained for a
// batch that could not be sent go back to the front with Requeue.
type LogQueue struct {
	mu      sync.Mutex
	max     int
	buf     []LogEntry // oldest first
	dropped int        // lines dropped since the marker was last shipped
	dropAt  time.Time  // when the last one was dropped
	now     func() time.Time
}

// NewLogQueue returns a queue holding at most max lines (0 means 5000).
func NewLogQueue(max int) *LogQueue {
	if max <= 0 {
		max = DefaultLogQueueSize
	}
	return &LogQueue{max: max, now: time.Now}
}

// Write implements logging.Sink. Debug lines are not shipped.
func (q *LogQueue) Write(e logging.Entry) {
	if e.Level < slog.LevelInfo {
		return
	}
	q.Push(EntryToLogEntry(e))
}

// EntryToLogEntry maps a log entry onto the wire: UTC millisecond time,
// info/warn/error, the op as category ("worker" without one), the job id,
// and the message with its other attributes as key=value.
func EntryToLogEntry(e logging.Entry) LogEntry {
	return LogEntry{
		TS:       FormatTS(e.Time),
		Level:    wireLevel(e.Level),
		Category: categoryOf(e.Op),
		Message:  e.Text(),
		JobID:    e.Job,
	}
}

// FormatTS is RFC 3339 in UTC with milliseconds and "Z", as LogEntry.ts.
func FormatTS(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000Z")
}

func wireLevel(l slog.Level) string {
	switch {
	case l >= slog.LevelError:
		return "error"
	case l >= slog.LevelWarn:
		return "warn"
	}
	return "info"
}

func categoryOf(op string) string {
	if op == "" {
		return "worker"
	}
	return op
}

// Push appends one entry, dropping the oldest when full.
func (q *LogQueue) Push(e LogEntry) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.buf = append(q.buf, e)
	q.trim()
}

func (q *LogQueue) trim() {
	if over := len(q.buf) - q.max; over > 0 {
		// Copy down rather than reslice so the backing array does not grow
		// without bound under steady overflow.
		n := copy(q.buf, q.buf[over:])
		clear(q.buf[n:])
		q.buf = q.buf[:n]
		q.dropped += over
		q.dropAt = q.now()
	}
}

// Len is the number of entries Drain would return now (the marker included).
func (q *LogQueue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := len(q.buf)
	if q.dropped > 0 {
		n++
	}
	return n
}

// Drain takes up to max entries from the front (max <= 0 means all). The
// overflow marker, when lines were dropped, comes first, where they were.
func (q *LogQueue) Drain(max int) []LogEntry {
	q.mu.Lock()
	defer q.mu.Unlock()
	if max <= 0 {
		max = len(q.buf) + 1
	}
	var out []LogEntry
	if q.dropped > 0 {
		out = append(out, LogEntry{
			TS:       FormatTS(q.dropAt),
			Level:    "warn",
			Category: "logs",
			Message: fmt.Sprintf("%d log lines were dropped because the queue to the studio was full (limit %d)",
				q.dropped, q.max),
		})
		q.dropped = 0
		max--
	}
	n := min(max, len(q.buf))
	out = append(out, q.buf[:n]...)
	rest := copy(q.buf, q.buf[n:])
	clear(q.buf[rest:])
	q.buf = q.buf[:rest]
	return out
}

// Requeue puts entries that were drained but not sent back at the front,
// in their order, so they ship with the next session. If that overflows
// the queue the oldest go first.
func (q *LogQueue) Requeue(entries []LogEntry) {
	if len(entries) == 0 {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.buf = append(append(make([]LogEntry, 0, len(entries)+len(q.buf)), entries...), q.buf...)
	q.trim()
}
