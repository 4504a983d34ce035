package update

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minisgg/studio-worker/settings"
	"github.com/minisgg/studio-worker/studio"
)

// statusLog records a Service's statuses in order.
type statusLog struct {
	mu  sync.Mutex
	got []Status
	ch  chan Status
}

func (l *statusLog) add(st Status) {
	l.mu.Lock()
	l.got = append(l.got, st)
	l.mu.Unlock()
	l.ch <- st
}

// until reads statuses until one in state s arrives.
func (l *statusLog) until(t *testing.T, s State) Status {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case st := <-l.ch:
			if st.State == s {
				return st
			}
		case <-timeout:
			t.Fatalf("no %s status came", s)
		}
	}
}

// The schedule: a check at start and one per interval while auto_update
// is on, none while it is off, and Check now whatever it says; a .deb
// install is told how to install, without the job gate.
func TestServiceScheduleAndCheckNow(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(nil)
	fs := newFeedServer(t)
	a := fs.file("studio-worker_0.3.0_amd64.deb", []byte("a package"))
	fs.setFeed(t, key, rel("0.3.0", "linux", "amd64", "deb", a))
	clock := studio.NewFakeClock(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	var mu sync.Mutex
	set := settings.Default()
	work := t.TempDir()
	gates := 0
	svc := NewService(ServiceConfig{
		Settings: func() settings.Settings { mu.Lock(); defer mu.Unlock(); return set },
		Updater: func(settings.Settings) *Updater {
			return New(Config{FeedURL: fs.URL + "/feed.json", Trusted: []ed25519.PublicKey{pub}, Current: "0.2.0",
				Install: Install{Kind: KindDeb}, GOOS: "linux", GOARCH: "amd64", WorkDir: work})
		},
		Gate:  func(context.Context, string) (func(), error) { gates++; return func() {}, nil },
		Clock: clock,
	})
	log := &statusLog{ch: make(chan Status, 64)}
	svc.OnStatus(log.add)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { svc.Run(ctx); close(done) }()

	st := log.until(t, StateReady)
	if !strings.Contains(st.Line, "sudo apt install "+work+"/studio-worker_0.3.0_amd64.deb") {
		t.Fatalf("the .deb line: %q", st.Line)
	}
	if gates != 0 {
		t.Error("a .deb install replaces nothing here and needs no job gate")
	}
	// The next check is due after the interval.
	if err := clock.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal(err)
	}
	clock.Advance(settings.DefaultUpdateCheckHours * time.Hour)
	log.until(t, StateChecking)
	log.until(t, StateReady)

	// Off: the interval passes without a check; Check now still checks.
	mu.Lock()
	set.AutoUpdate = false
	mu.Unlock()
	if err := clock.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal(err)
	}
	clock.Advance(settings.DefaultUpdateCheckHours * time.Hour)
	if err := clock.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal(err)
	}
	select {
	case st := <-log.ch:
		t.Fatalf("a check ran with updates off: %+v", st)
	default:
	}
	svc.CheckNow()
	log.until(t, StateChecking)
	log.until(t, StateReady)
	cancel()
	<-done
}

// A tarball install waits for the one-job gate before it touches the
// install, and gives the gate back when the install fails.
func TestServiceWaitsForTheGate(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(nil)
	fs := newFeedServer(t)
	a := fs.file("studio-worker-0.3.0-linux-amd64.tar.xz", []byte("not a tarball"))
	fs.setFeed(t, key, rel("0.3.0", "linux", "amd64", "tar.xz", a))
	parent := t.TempDir()
	exe := mkProgram(t, parent+"/studio-worker", true)
	gateAsked := make(chan struct{})
	jobEnds := make(chan struct{})
	released := make(chan struct{})
	svc := NewService(ServiceConfig{
		Settings: settings.Default,
		Updater: func(settings.Settings) *Updater {
			return New(Config{FeedURL: fs.URL + "/feed.json", Trusted: []ed25519.PublicKey{pub}, Current: "0.2.0",
				Install: Install{Kind: KindTarball, Exe: exe, Dir: parent + "/studio-worker"}, GOOS: "linux", GOARCH: "amd64", WorkDir: t.TempDir()})
		},
		Gate: func(ctx context.Context, what string) (func(), error) {
			if what != "installing Studio Worker 0.3.0" {
				t.Errorf("gate holder %q", what)
			}
			close(gateAsked)
			<-jobEnds // the running job
			return func() { close(released) }, nil
		},
		Restart: func(*Restart) { t.Error("a failed install must not restart") },
		Clock:   studio.NewFakeClock(time.Now()),
	})
	log := &statusLog{ch: make(chan Status, 64)}
	svc.OnStatus(log.add)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go svc.Run(ctx)
	log.until(t, StateWaiting)
	<-gateAsked
	close(jobEnds)
	st := log.until(t, StateFailed)
	if !strings.Contains(st.Line, "could not be unpacked") || !strings.Contains(st.Line, "nothing was replaced") {
		t.Errorf("line %q", st.Line)
	}
	<-released
	if b, err := readFile(exe); err != nil || b != "program" {
		t.Errorf("the installed program changed: %q, %v", b, err)
	}
}

// Check now with no feed server to reach: the Settings page's line names
// the server and what went wrong in words; the log keeps Go's error.
func TestServiceCheckNowUnreachableFeed(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(nil)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	feed := "http://" + l.Addr().String() + "/feed.json"
	l.Close() // nothing listens there now
	var logged bytes.Buffer
	var logMu sync.Mutex
	svc := NewService(ServiceConfig{
		Settings: settings.Default,
		Updater: func(settings.Settings) *Updater {
			return New(Config{FeedURL: feed, Trusted: []ed25519.PublicKey{pub}, Current: "0.2.0",
				Install: Install{Kind: KindTarball}, GOOS: "linux", GOARCH: "amd64", WorkDir: t.TempDir()})
		},
		Gate:   func(context.Context, string) (func(), error) { t.Error("nothing to install"); return func() {}, nil },
		Manual: true,
		Clock:  studio.NewFakeClock(time.Now()),
		Log:    slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logged}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	log := &statusLog{ch: make(chan Status, 64)}
	svc.OnStatus(log.add)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go svc.Run(ctx)
	svc.CheckNow()
	st := log.until(t, StateFailed)
	want := "Could not check for a new version: 127.0.0.1 refused the connection. Nothing was installed."
	if st.Line != want {
		t.Fatalf("line %q, want %q", st.Line, want)
	}
	logMu.Lock()
	defer logMu.Unlock()
	// The warning is the donor's line; Go's error is there at debug level.
	var warned, debugged bool
	for _, line := range strings.Split(logged.String(), "\n") {
		switch {
		case strings.Contains(line, "level=WARN"):
			warned = true
			if !strings.Contains(line, "127.0.0.1 refused the connection") || strings.Contains(line, "dial tcp") {
				t.Errorf("warning %s", line)
			}
		case strings.Contains(line, "level=DEBUG") && strings.Contains(line, "connection refused"):
			debugged = true
		}
	}
	if !warned || !debugged {
		t.Fatalf("warned %v, Go's error at debug level %v: %s", warned, debugged, logged.String())
	}
	// Errors that are not about reaching a server keep their own words,
	// with a capital first letter.
	if got := FailureLine(&DowngradeError{Offered: "0.1.0", Current: "0.2.0"}); !strings.HasPrefix(got, "The update feed offers 0.1.0, older than this 0.2.0") {
		t.Fatalf("downgrade line %q", got)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
