package stack

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minisgg/studio-worker/app/autostart"
	"github.com/minisgg/studio-worker/app/history"
	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/settings"
	"github.com/minisgg/studio-worker/studio"
	"github.com/minisgg/studio-worker/studio/devstudio"
)

// echoEngine is a test double for llama.cpp: it checks that the model file
// the store fetched is there and answers with a fixed completion.
type echoEngine struct {
	ran      chan string
	resident uint64
}

func (e *echoEngine) Name() engine.EngineName   { return engine.EngineLlamaCpp }
func (e *echoEngine) Kinds() []engine.TaskKind  { return []engine.TaskKind{engine.KindLLM} }
func (e *echoEngine) Release() error            { return nil }
func (e *echoEngine) ResidentVRAMBytes() uint64 { return e.resident }
func (e *echoEngine) Run(ctx context.Context, job engine.Job, _ engine.ProgressFunc) (engine.Result, error) {
	path := job.Files[engine.RoleModel]
	if _, err := os.Stat(path); err != nil {
		return engine.Result{}, err
	}
	if e.ran != nil {
		e.ran <- job.ID
	}
	out, _ := json.Marshal(map[string]any{"choices": []any{map[string]any{"message": map[string]string{"role": "assistant", "content": "test double"}}}})
	return engine.Result{JSON: out, Stats: engine.Stats{CompletionTokens: 2}}, nil
}

type unknownGPU struct{}

func (unknownGPU) Probe(context.Context) engine.VRAMInfo { return engine.VRAMInfo{} }

func testOptions(t *testing.T) Options {
	t.Helper()
	dir := t.TempDir()
	// The default models folder is under the home folder, and checking it
	// creates it.
	t.Setenv("HOME", dir)
	return Options{
		ConfigDir:       filepath.Join(dir, "config"),
		DevDir:          filepath.Join(dir, "dev"),
		StateDir:        filepath.Join(dir, "state"),
		LogPath:         "-",
		Stderr:          io.Discard,
		Engines:         []engine.Engine{&echoEngine{}},
		Probe:           unknownGPU{},
		AutostartConfig: autostart.Config{Exe: "/opt/sw/studio-worker", Home: dir, ConfigHome: filepath.Join(dir, "xdg")},
		ShutdownGrace:   time.Second,
	}
}

// until waits for a snapshot that satisfies ok, calling step (if any) on
// each snapshot that does not.
func until(ctx context.Context, t *testing.T, w *studio.Worker, ok func(studio.Snapshot) bool, step func(studio.Snapshot)) studio.Snapshot {
	t.Helper()
	ch, cancel := w.Subscribe()
	defer cancel()
	for {
		select {
		case s := <-ch:
			if ok(s) {
				return s
			}
			if step != nil {
				step(s)
			}
		case <-ctx.Done():
			t.Fatalf("gave up waiting: %+v", w.Snapshot())
		}
	}
}

// pollNowWhilePending brings each 30 s registration poll forward while the
// request is open, so the worker learns the studio's answer at once.
func pollNowWhilePending(ctx context.Context, clock *studio.FakeClock, w *studio.Worker) {
	for {
		if err := clock.BlockUntilContext(ctx, 1); err != nil {
			return
		}
		switch w.Snapshot().Registration.State {
		case "none", "pending":
			clock.Advance(studio.RegisterPollInterval)
		default:
			return
		}
	}
}

func TestDevStudioApprovesAndRunsDemoJobs(t *testing.T) {
	opts := testOptions(t)
	opts.DevStudio = true
	// One job: a second offered while the first runs is turned down as
	// busy, and the studio waits for a heartbeat, which this test's fake
	// clock does not send.
	opts.DemoJobs = 1
	clock := studio.NewFakeClock(time.Now())
	opts.Clock = clock
	st, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if st.Dev == nil || st.Settings.Current().StudioURL != st.Dev.URL {
		t.Fatalf("the worker should talk to the dev studio, not %q", st.Settings.Current().StudioURL)
	}
	if got := st.Settings.Current().ModelsDir; got != filepath.Join(opts.DevDir, "models") {
		t.Errorf("dev models folder %q", got)
	}
	// A models folder chosen before the first job is where it downloads.
	s := st.Settings.Current()
	s.ModelsDir = filepath.Join(t.TempDir(), "chosen")
	if _, err := st.Settings.Save(s); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st.Start(ctx)
	// The request is approved at once; the worker learns it at its next
	// poll, which the fake clock brings forward.
	go pollNowWhilePending(ctx, clock, st.Worker)
	until(ctx, t, st.Worker, func(s studio.Snapshot) bool { return s.Counters.Done == 1 }, nil)
	jobs := st.Dev.Server.Jobs()
	if len(jobs) != 1 {
		t.Fatalf("the studio has %d jobs, want the demo job", len(jobs))
	}
	for _, j := range jobs {
		// The worker counts a job done when its result is sent; the studio
		// records it when the frame arrives.
		got, err := st.Dev.Server.WaitJob(ctx, j.ID, devstudio.JobDone, devstudio.JobFailed)
		if err != nil || got.State != devstudio.JobDone {
			t.Errorf("job %s: %s %v (%s)", j.ID, got.State, err, got.Error)
		}
	}
	models, err := st.Models().List()
	if err != nil || len(models) != 1 || filepath.Dir(models[0].Dir) != s.ModelsDir {
		t.Errorf("the demo model is not in the chosen folder %s: %+v %v", s.ModelsDir, models, err)
	}
	if err := st.Shutdown(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	// The job outlives the process: the next start finds it in the
	// history, with its log lines, and counts it.
	db, err := history.Open(opts.StateDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	hj, err := db.Jobs(history.Filter{})
	if err != nil || len(hj) != 1 || hj[0].Outcome != history.OutcomeDone || hj[0].CompletionTokens != 2 || hj[0].Accepted.IsZero() {
		t.Fatalf("history after restart = %+v, %v", hj, err)
	}
	lines, err := db.JobLog(hj[0].ID)
	if err != nil || len(lines) == 0 {
		t.Fatalf("the job's log lines were not kept: %v", err)
	}
	sum, err := db.Summary(time.Now())
	if err != nil || sum.All.Done != 1 || sum.Today.Done != 1 {
		t.Fatalf("totals after restart = %+v, %v", sum, err)
	}
}

func TestCorruptSettingsAreSetAsideWithANotice(t *testing.T) {
	opts := testOptions(t)
	if err := os.MkdirAll(opts.ConfigDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(opts.ConfigDir, settings.FileName), []byte("studio_url = = ]]garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Shutdown(time.Second)
	if len(st.Notices) == 0 || !strings.Contains(st.Notices[0], "could not be read") {
		t.Fatalf("notices %q", st.Notices)
	}
	if st.Settings.Current().StudioURL != settings.DefaultStudioURL {
		t.Errorf("defaults not used: %q", st.Settings.Current().StudioURL)
	}
	aside, _ := filepath.Glob(filepath.Join(opts.ConfigDir, settings.FileName+".corrupt-*"))
	if len(aside) != 1 {
		t.Errorf("the garbage file was not set aside: %v", aside)
	}
}

func TestSaveAppliesSettings(t *testing.T) {
	opts := testOptions(t)
	opts.Autostart = true
	st, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Shutdown(time.Second)
	entry, _ := autostart.Path(opts.AutostartConfig)
	if _, err := os.Stat(entry); !os.IsNotExist(err) {
		t.Fatalf("login entry exists before it was asked for: %v", err)
	}

	s := st.Settings.Current()
	s.StudioURL = "ftp://nope"
	if _, err := st.Settings.Save(s); err == nil {
		t.Fatal("an ftp studio URL was saved")
	}
	var fe *settings.FieldError
	if !errors.As(err, &fe) && err != nil {
		t.Fatalf("want a field error, got %v", err)
	}

	s = st.Settings.Current()
	s.StartAtLogin = true
	s.VRAMBudgetGB = 3
	s.ModelsDir = filepath.Join(t.TempDir(), "elsewhere")
	note, err := st.Settings.Save(s)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(note, "next start") || !strings.Contains(note, "New jobs use the new models folder") {
		t.Errorf("note %q should say the new models folder is used from the next job", note)
	}
	if st.Runner.Store().Root() != s.ModelsDir || st.Models().Root() != s.ModelsDir {
		t.Errorf("models folder in force: runner %q, Models page %q, want %q", st.Runner.Store().Root(), st.Models().Root(), s.ModelsDir)
	}
	if st.Settings.Current().VRAMBudgetGB != 3 || st.Worker.Snapshot().VRAM.BudgetGB != 3 {
		t.Errorf("budget not in force: settings %v, worker %v", st.Settings.Current().VRAMBudgetGB, st.Worker.Snapshot().VRAM.BudgetGB)
	}
	b, err := os.ReadFile(entry)
	if err != nil || !strings.Contains(string(b), "/opt/sw/studio-worker") {
		t.Fatalf("login entry not written: %v %s", err, b)
	}
	reloaded, err := settings.NewStore(opts.ConfigDir).Load()
	if err != nil || !reloaded.StartAtLogin || reloaded.VRAMBudgetGB != 3 {
		t.Errorf("not persisted: %+v %v", reloaded, err)
	}
	s.StartAtLogin = false
	if note, err := st.Settings.Save(s); err != nil || note != "" {
		t.Fatalf("saving with the same models folder: note %q, %v", note, err)
	}
	if _, err := os.Stat(entry); !os.IsNotExist(err) {
		t.Errorf("login entry still there after turning it off")
	}
}

func TestStartOverAfterRejection(t *testing.T) {
	opts := testOptions(t)
	clock := studio.NewFakeClock(time.Now())
	opts.Clock = clock
	dev, err := StartDevStudio(t.TempDir(), false, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	st, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	st.Settings.override(func(s *settings.Settings) { s.StudioURL = dev.URL })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st.Start(ctx)
	first := until(ctx, t, st.Worker, func(s studio.Snapshot) bool { return s.Registration.State == "pending" }, nil)
	if err := dev.Server.Reject(first.Registration.RequestID, "not this one"); err != nil {
		t.Fatal(err)
	}
	go pollNowWhilePending(ctx, clock, st.Worker)
	rejected := until(ctx, t, st.Worker, func(s studio.Snapshot) bool { return s.State == studio.StateRejected }, nil)
	if !strings.Contains(rejected.IdleReason, "not this one") {
		t.Errorf("the rejection reason is lost: %q", rejected.IdleReason)
	}
	// The window's "Try again": forget, and run registration again.
	if err := st.StartOver(); err != nil {
		t.Fatal(err)
	}
	until(ctx, t, st.Worker, func(s studio.Snapshot) bool {
		return s.Registration.State == "pending" && s.Registration.RequestID != first.Registration.RequestID
	}, nil)
	if err := st.Shutdown(5 * time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestBadStudioURLIsReportedAndFixedBySaving(t *testing.T) {
	opts := testOptions(t)
	if err := os.MkdirAll(opts.ConfigDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(opts.ConfigDir, settings.FileName), []byte(`studio_url = "ftp://studio.example/"`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Notices) == 0 || !strings.Contains(st.Notices[0], "studio address") {
		t.Fatalf("notices %q", st.Notices)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st.Start(ctx)
	stopped := until(ctx, t, st.Worker, func(s studio.Snapshot) bool { return s.State == studio.StateStopped }, nil)
	if stopped.StopReason == "" {
		t.Error("the stop has no reason to show")
	}
	dev, err := StartDevStudio(t.TempDir(), false, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	s := st.Settings.Current()
	s.StudioURL = dev.URL
	if _, err := st.Settings.Save(s); err != nil {
		t.Fatal(err)
	}
	until(ctx, t, st.Worker, func(s studio.Snapshot) bool { return s.Registration.State == "pending" }, nil)
	if err := st.Shutdown(5 * time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestHeadlessRefusesWhatItCannotUse(t *testing.T) {
	file := filepath.Join(t.TempDir(), "a-file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	opts := testOptions(t)
	opts.Headless = true
	opts.ConfigDir = file
	if _, err := New(opts); err == nil || !strings.Contains(err.Error(), "cannot use the config folder") || !strings.Contains(err.Error(), "it is a file, not a folder") {
		t.Errorf("config folder that is a file: %v", err)
	}

	opts = testOptions(t)
	opts.Headless = true
	opts.StudioURL = "ftp://studio.example/"
	if _, err := New(opts); err == nil || !strings.Contains(err.Error(), "must start with https://") {
		t.Errorf("ftp studio: %v", err)
	}

	opts = testOptions(t)
	if err := os.MkdirAll(opts.ConfigDir, 0o700); err != nil {
		t.Fatal(err)
	}
	toml := "models_dir = \"" + file + "\"\n"
	if err := os.WriteFile(filepath.Join(opts.ConfigDir, settings.FileName), []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	opts.Headless = true
	if _, err := New(opts); err == nil || !strings.Contains(err.Error(), "models folder") {
		t.Errorf("models folder that is a file, headless: %v", err)
	}
	// The window reports it instead and keeps going.
	opts.Headless = false
	st, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Shutdown(time.Second)
	if len(st.Notices) == 0 || !strings.Contains(strings.Join(st.Notices, "\n"), "The models folder in the settings cannot be used") {
		t.Errorf("notices %q", st.Notices)
	}
}

func TestHeadlessStudioOverride(t *testing.T) {
	opts := testOptions(t)
	opts.Headless = true
	opts.StudioURL = " http://127.0.0.1:9/ "
	st, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Shutdown(time.Second)
	if got := st.Settings.Current().StudioURL; got != "http://127.0.0.1:9/" {
		t.Errorf("studio in force %q", got)
	}
	saved, err := settings.NewStore(opts.ConfigDir).Load()
	if err != nil || saved.StudioURL == "http://127.0.0.1:9/" {
		t.Errorf("the override must not be saved: %q %v", saved.StudioURL, err)
	}
	if len(st.Notices) != 0 {
		t.Errorf("a headless stack with usable settings has notices: %q", st.Notices)
	}
}

func TestResidentMemoryReachesTheSnapshot(t *testing.T) {
	opts := testOptions(t)
	opts.Engines = []engine.Engine{&echoEngine{resident: 3 << 30}}
	st, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Shutdown(time.Second)
	if got := st.Worker.Snapshot().VRAM.InUseBytes; got != 3<<30 {
		t.Errorf("VRAM in use %d, want the engine's resident %d", got, uint64(3<<30))
	}
	if got := st.ResidentModel(); got != "" {
		t.Errorf("resident model %q without llama.cpp", got)
	}
}

// fakeLoginStart stands in for the system's login entry.
type fakeLoginStart struct {
	entry   bool
	applied []bool
}

func (f *fakeLoginStart) Enabled() (bool, error) { return f.entry, nil }
func (f *fakeLoginStart) Apply(on bool) error {
	f.applied = append(f.applied, on)
	f.entry = on
	return nil
}

// The Windows installer's "start at login" writes the same entry the app
// does. On the first run (no settings file yet) the setting follows that
// entry instead of the default, so the app does not remove what the donor
// chose in the installer; once the donor has settings, they win.
func TestFirstRunAdoptsAnExistingLoginEntry(t *testing.T) {
	cases := []struct {
		name        string
		savedBefore *bool // a settings file from an earlier run, with this start_at_login
		entry       bool
		want        bool
	}{
		{name: "first run, installer set it", entry: true, want: true},
		{name: "first run, no entry", entry: false, want: false},
		{name: "saved off, entry there", savedBefore: new(false), entry: true, want: false},
		{name: "saved on, no entry", savedBefore: new(true), entry: false, want: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			opts := testOptions(t)
			opts.Autostart = true
			if tc.savedBefore != nil {
				s := settings.Default()
				s.StartAtLogin = *tc.savedBefore
				if err := settings.NewStore(opts.ConfigDir).Save(s); err != nil {
					t.Fatal(err)
				}
			}
			fake := &fakeLoginStart{entry: tc.entry}
			opts.LoginStart = fake
			st, err := New(opts)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Shutdown(time.Second)
			if got := st.Settings.Current().StartAtLogin; got != tc.want {
				t.Errorf("StartAtLogin = %t, want %t", got, tc.want)
			}
			if len(fake.applied) != 1 || fake.applied[0] != tc.want {
				t.Errorf("login entry calls %v, want one Apply(%t)", fake.applied, tc.want)
			}
			reloaded, err := settings.NewStore(opts.ConfigDir).Load()
			if err != nil || reloaded.StartAtLogin != tc.want {
				t.Errorf("saved StartAtLogin = %t (%v), want %t", reloaded.StartAtLogin, err, tc.want)
			}
		})
	}
}

// TestLogFileOnAFullDiskReachesTheWindow is issue 10's item 18: a log file
// that cannot be written is said once, as a notice for the window (and on
// stderr, by the logger).
func TestLogFileOnAFullDiskReachesTheWindow(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("needs /dev/full: " + err.Error())
	}
	opts := testOptions(t)
	opts.LogPath = "/dev/full"
	stderr := &lockedBuilder{}
	opts.Stderr = stderr
	st, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Shutdown(time.Second)
	notices := make(chan string, 4)
	st.OnNotice(func(n string) { notices <- n })
	select {
	case n := <-notices:
		if !strings.Contains(n, "/dev/full cannot be written") || !strings.Contains(n, "no space left") {
			t.Fatalf("notice %q", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no notice for the window")
	}
	st.Log.Info("another line that cannot reach the file")
	select {
	case n := <-notices:
		t.Fatalf("said twice: %q", n)
	default:
	}
	if c := strings.Count(stderr.String(), "cannot be written"); c != 1 {
		t.Fatalf("stderr says it %d times:\n%s", c, stderr.String())
	}
}

type lockedBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuilder) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuilder) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

func TestDemoJobsAreSpreadOverTime(t *testing.T) {
	opts := testOptions(t)
	opts.DevStudio = true
	opts.DemoJobs, opts.DemoImageJobs = 2, 0
	opts.DemoOver = 20 * time.Millisecond
	st, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Shutdown(5 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	st.spreadDemoJobs(ctx) // not started: only the queueing is under test
	if n := len(st.Dev.Server.Jobs()); n != 2 {
		t.Fatalf("%d demo jobs queued, want 2", n)
	}
	// The second waited its turn: half of DemoOver after the first.
	if took := time.Since(start); took < 10*time.Millisecond {
		t.Errorf("both jobs queued at once (%s)", took)
	}
}

func TestStartAtLoginAgainstTheDevStudioSaysItIsNotWritten(t *testing.T) {
	opts := testOptions(t)
	opts.DevStudio = true // as app.Run: no login entry with a dev studio
	st, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Shutdown(5 * time.Second)
	s := st.Settings.Current()
	s.StartAtLogin = true
	note, err := st.Settings.Save(s)
	if err != nil || !strings.Contains(note, "no login entry is written while Studio Worker runs against the dev studio") {
		t.Fatalf("note %q, %v", note, err)
	}
	if _, err := os.Stat(filepath.Join(opts.AutostartConfig.ConfigHome, "autostart")); !os.IsNotExist(err) {
		t.Errorf("a login entry folder was made: %v", err)
	}
}

func TestEngineNoticeSpeaksToADonor(t *testing.T) {
	for _, c := range []struct {
		noText, noImage bool
		want            string
	}{
		{false, false, ""},
		{true, false, "Image jobs work, but text jobs are off"},
		{false, true, "Text jobs work, but image jobs are off"},
		{true, true, "cannot run jobs yet"},
	} {
		got := engineNotice(c.noText, c.noImage, false)
		if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
			t.Errorf("%+v: %q", c, got)
		}
		fetched := engineNotice(c.noText, c.noImage, true)
		if (c.want == "") != (fetched == "") || !strings.Contains(fetched, c.want) ||
			(c.want != "" && !strings.Contains(fetched, "fetches what is missing from its release feed for the first job that needs it")) {
			t.Errorf("%+v with runtime packs: %q", c, fetched)
		}
		for _, jargon := range []string{"STUDIO_WORKER", "_lib_", "sd_lib_path", "llama_lib_dir", "$"} {
			if strings.Contains(got, jargon) {
				t.Errorf("%+v names %q: %q", c, jargon, got)
			}
		}
	}
}
