// Package stack is the one composition root of the worker: it builds the
// logger, the settings, the credentials, the model store, the engines, the
// runner and the worker, and (for `make run` and the demo) an embedded dev
// studio. The desktop window and the headless commands (`run`, `demo`)
// both stand on it. It knows nothing of Fyne, so its tests need no display.
package stack

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/adrg/xdg"

	"github.com/minisgg/studio-worker/app/api"
	"github.com/minisgg/studio-worker/app/autostart"
	"github.com/minisgg/studio-worker/app/history"
	"github.com/minisgg/studio-worker/app/update"
	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/engine/host"
	"github.com/minisgg/studio-worker/engine/host/hosted"
	"github.com/minisgg/studio-worker/engine/packs"
	"github.com/minisgg/studio-worker/logging"
	"github.com/minisgg/studio-worker/settings"
	"github.com/minisgg/studio-worker/studio"
)

// Options configure New.
type Options struct {
	// ConfigDir holds settings.toml and the credentials file; empty means
	// settings.DefaultDir() (or the dev folder with DevStudio).
	ConfigDir string
	// LogPath is the rotating log file; empty means logging.DefaultLogPath,
	// "-" means none.
	LogPath string
	// Stderr receives the human-readable log; nil means os.Stderr.
	Stderr io.Writer
	// DevStudio runs an embedded dev studio on loopback that approves this
	// worker by itself and feeds it demo jobs; the worker talks to it
	// instead of the studio in the settings.
	DevStudio bool
	// DevDir keeps the dev studio's state, the dev settings and models
	// between runs; empty means $XDG_STATE_HOME/studio-worker/dev.
	DevDir string
	// DemoJobs is how many demo jobs the dev studio queues at start.
	DemoJobs int
	// DemoOver spreads the demo jobs (text and image in turn) evenly over
	// this long from start; 0 queues them all at once.
	DemoOver time.Duration
	// DemoImageJobs is how many demo image jobs it queues after them.
	DemoImageJobs int
	// Autostart keeps the login entry in step with the setting (desktop).
	Autostart bool
	// AutostartConfig overrides where the login entry goes (tests).
	AutostartConfig autostart.Config
	// LoginStart replaces the login entry altogether (tests); nil means
	// package autostart at AutostartConfig.
	LoginStart LoginStart
	// Engines replaces the real engines (tests); nil runs llama.cpp and
	// stable-diffusion.cpp, each in a child process of EngineExe.
	Engines []engine.Engine
	// StateDir holds the job journal; empty is the dev folder's "state"
	// with DevStudio, else $XDG_STATE_HOME/studio-worker.
	StateDir string
	// EngineExe is the program whose hidden `engine-host` command serves
	// the engines; empty is this program (os.Executable).
	EngineExe string
	// Probe replaces the GPU probe (tests).
	Probe engine.GPUProbe
	// ShutdownGrace is how long Shutdown lets a running job finish.
	ShutdownGrace time.Duration
	// Clock drives the worker's timers (tests); nil means real time.
	Clock studio.Clock
	// Probes replace the machine's probes for the donor's controls
	// (tests); see controlProbes.
	Probes *studio.Probes

	// Headless is the worker without a window (`studio-worker run`, the
	// demo): with no Settings page to fix them in, an unusable config
	// folder or unusable settings are an error from New instead of Notices.
	Headless bool
	// StudioURL, when set, replaces the saved studio address for this run
	// only (the file keeps what was saved).
	StudioURL string
	// Level is the lowest level logged (default Info).
	Level slog.Level
	// LocalAPI starts the local API (package api) on 127.0.0.1 unless the
	// settings turn it off: the desktop app and `studio-worker run`.
	LocalAPI bool
	// Runtime packs (issue #14): NoPacks never fetches a runtime from the
	// release feed; FeedURL replaces release.FeedURL(the update_feed_url setting) and FeedKeys
	// release.TrustedKeys (tests serve their own feed, signed with their
	// own key). Packs live in engine.PacksDir() (the data folder).
	NoPacks  bool
	FeedURL  string
	FeedKeys []ed25519.PublicKey
	// RegisterPoll overrides the registration poll: the protocol's 30 s
	// for a real studio, devRegisterPoll for the embedded dev studio.
	RegisterPoll time.Duration
}

// devRegisterPoll is the registration poll against the embedded dev
// studio, which approves at once: the first look should not wait 30 s.
const devRegisterPoll = time.Second

// desktopDemoTokens bounds the answers of `make run`'s demo jobs: long
// enough to watch the progress bar move.
const desktopDemoTokens = 160

// Stack is the running worker and what it needs.
type Stack struct {
	opts     Options
	Logger   *logging.Logger
	Log      *slog.Logger
	Settings *Controller
	Creds    settings.CredentialStore
	Runner   *engine.Runner
	// Llama and Image run llama.cpp and stable-diffusion.cpp in child
	// processes; nil when Options.Engines replaced them.
	Llama *host.Client
	Image *host.Client
	// packs fetches runtime packs; textPack and imagePack wrap Llama and
	// Image to fetch a missing runtime on the first job (nil with NoPacks
	// or Options.Engines).
	packs               *packs.Installer
	textPack, imagePack *packs.OnDemand
	packsStop           context.CancelFunc // ends startPacks' work
	packsDone           chan struct{}      // closed when it has ended
	packsProbed         chan struct{}      // closed once missing runtimes were looked up in the feed
	Worker              *studio.Worker
	Dev                 *DevStudio // nil unless Options.DevStudio
	// History records finished jobs in the state folder's database; nil
	// when no database could be made there (the worker runs without).
	History     *history.Recorder
	historyDB   *history.DB
	historyStop context.CancelFunc
	historyDone chan struct{}

	// cfgDir is the config folder (settings, credentials, the local API's
	// address file).
	cfgDir  string
	apiMu   sync.Mutex
	api     *api.Server // nil while the local API is off
	apiPort int         // the setting api was started with

	// Updates checks the signed release feed and installs new versions
	// (app/update); StartUpdates runs it.
	Updates *update.Service
	upd     updates

	// Notices are problems found at start that the donor should read
	// (a damaged settings file, no engine runtime); the log has them too.
	Notices []string
	// Later notices (a log file that stopped taking lines) go to noticeFn,
	// or wait in lateNotices until OnNotice sets it.
	noticeMu    sync.Mutex
	noticeFn    func(string)
	lateNotices []string

	runMu   sync.Mutex
	ctx     context.Context
	running bool
	runDone chan struct{}
	runErr  error

	removeQueue func()
	// closeProbes lets the controls' probes go (X and D-Bus connections,
	// NVML); nil when none were opened.
	closeProbes func()

	// storeOpts make the store of a newly chosen models folder; stores
	// keeps every store made, by folder, so that one folder has one store
	// and Shutdown can wait for all of them.
	storeOpts engine.StoreOptions
	storesMu  sync.Mutex
	stores    map[string]*engine.Store
}

// UsableDir creates dir when needed and proves it is a writable folder;
// the error says why it is not, in words (the caller names the folder).
// It is settings.UsableDir with private permissions, for the config folder
// and the dev studio's folders.
func UsableDir(dir string) error { return settings.UsableDir(dir, 0o700) }

// DefaultDevDir is where `make run` keeps its dev studio and settings.
func DefaultDevDir() string {
	return filepath.Join(xdg.StateHome, settings.AppDirName, "dev")
}

// New builds the stack. It does not start the worker (see Start).
func New(opts Options) (_ *Stack, err error) {
	st := &Stack{opts: opts, stores: map[string]*engine.Store{}}
	defer func() {
		if err != nil {
			st.abandon()
		}
	}()
	logPath := opts.LogPath
	if logPath == "" {
		p, err := logging.DefaultLogPath()
		if err == nil {
			logPath = p
		}
	}
	if logPath == "-" {
		logPath = ""
	}
	lg, err := logging.New(logging.Options{Stderr: opts.Stderr, FilePath: logPath, Level: opts.Level,
		OnFileError: func(err error) {
			st.lateNotice("The log file " + logPath + " cannot be written (" + err.Error() + "); until it can, logs are kept only on the Logs page.")
		}})
	if err != nil {
		// A log file that cannot be opened must not stop the worker.
		fileErr := err
		lg, err = logging.New(logging.Options{Stderr: opts.Stderr, Level: opts.Level})
		if err != nil {
			return nil, err
		}
		st.notice(lg.Slog(), "The log file could not be opened, so logs are only kept in memory: "+fileErr.Error())
	}
	st.Logger, st.Log = lg, lg.Slog()

	cfgDir := opts.ConfigDir
	if opts.DevStudio {
		if opts.DevDir == "" {
			opts.DevDir = DefaultDevDir()
			st.opts.DevDir = opts.DevDir
		}
		if cfgDir == "" {
			cfgDir = filepath.Join(opts.DevDir, "config")
		}
	}
	if cfgDir == "" {
		cfgDir, err = settings.DefaultDir()
		if err != nil {
			return nil, err
		}
	}
	cfgDir = settings.ExpandHome(cfgDir)
	if opts.Headless {
		if err := UsableDir(cfgDir); err != nil {
			return nil, fmt.Errorf("cannot use the config folder %s: %v", cfgDir, err)
		}
	}
	st.cfgDir = cfgDir
	store := settings.NewStore(cfgDir)
	firstRun := settingsFileMissing(store)
	cur, err := store.Load()
	var corrupt *settings.CorruptError
	switch {
	case errors.As(err, &corrupt):
		st.notice(st.Log, corrupt.Error()+".")
	case err != nil && opts.Headless:
		return nil, err
	case err != nil:
		st.notice(st.Log, "The settings could not be read, so defaults are used: "+err.Error())
	}
	if firstRun {
		st.adoptLoginStart(store, &cur)
	}
	if opts.DevStudio {
		fileCreds := settings.NewFileCredentialStore(cfgDir)
		fileCreds.SetLog(st.Log)
		st.Creds = fileCreds
		if cur.ModelsDir == settings.Default().ModelsDir {
			// Demo models stay with the dev studio, not in the donor's folder.
			cur.ModelsDir = filepath.Join(opts.DevDir, "models")
		}
	} else {
		st.Creds = settings.NewCredentialStore(cfgDir, st.Log)
	}
	st.Settings = &Controller{store: store, cur: cur, stack: st}
	if opts.StudioURL != "" {
		st.Settings.override(func(s *settings.Settings) { s.StudioURL = strings.TrimSpace(opts.StudioURL) })
	}
	poll := opts.RegisterPoll
	if opts.DevStudio {
		dev, err := StartDevStudio(filepath.Join(opts.DevDir, "studio"), true, st.Log, opts.Stderr)
		if err != nil {
			return nil, fmt.Errorf("could not start the dev studio: %w", err)
		}
		st.Dev = dev
		st.Settings.override(func(s *settings.Settings) { s.StudioURL = dev.URL })
		st.Log.Info("dev studio listening on "+dev.URL+" (it approves this worker by itself)", "op", "devstudio")
		if poll == 0 {
			poll = devRegisterPoll
		}
	}
	if opts.Headless {
		// Before anything else speaks: a refusal is one line. Validating
		// creates the models folder, or says why it cannot.
		if err := st.Settings.Current().Validate(0); err != nil {
			return nil, fmt.Errorf("settings in %s: %v", store.Path(), err)
		}
	} else {
		st.checkForWindow(st.Settings.Current())
	}

	st.storeOpts = engine.StoreOptions{UserAgent: studio.UserAgent(), Log: st.Log,
		Reserve: func() uint64 { return st.Settings.Current().DiskReserveBytes() },
		// The models folder's disk budget, read at each download (#12).
		Budget: func() uint64 { return st.Settings.Current().ModelsDiskBudgetBytes() }}
	engines := opts.Engines
	if engines == nil {
		// Each native runtime runs in a child process of this program
		// (engine/host): a crash in native code fails one job, not the app.
		keep := cur.EngineKeepAlive()
		st.Llama = hosted.Client(hosted.Llama, hosted.Options{Exe: opts.EngineExe, LibPath: cur.LlamaLibDir, Threads: cur.Threads, Log: st.Log, KeepAlive: keep})
		llamaErr := st.Llama.LoadError()
		if llamaErr != nil {
			st.Log.Warn("text (LLM) jobs are unavailable: "+llamaErr.Error(), "op", "startup")
		} else {
			// A GPU runtime that failed its check in a child process, or a
			// GPU this runtime cannot use.
			st.Notices = append(st.Notices, st.Llama.Hello().Notices...)
			// ggml sees exactly the GPUs llama.cpp offloads to, so the
			// child is the first source of GPU memory facts while it runs
			// (then nvidia-smi, sysfs).
			engine.RegisterProber("ggml", st.Llama.Devices)
		}
		st.Image = hosted.Client(hosted.SD, hosted.Options{Exe: opts.EngineExe, LibPath: cur.SDLibPath, Threads: cur.Threads, Log: st.Log, KeepAlive: keep})
		sdErr := st.Image.LoadError()
		if sdErr != nil {
			st.Log.Warn("image jobs are unavailable: "+sdErr.Error(), "op", "startup")
		}
		if n := engineNotice(llamaErr != nil, sdErr != nil, !opts.NoPacks); n != "" {
			st.Notices = append(st.Notices, n)
		}
		engines = st.setUpPacks(opts)
	}
	st.Runner = engine.NewRunner(engine.RunnerConfig{
		Store:    st.storeFor(cur.ModelsDir),
		Engines:  engines,
		BudgetGB: func() float64 { return st.Settings.Current().VRAMBudgetGB },
		Probe:    opts.Probe,
		Log:      st.Log,
	})

	st.logDiskBudget()

	if v := st.Runner.VRAM(); v.Known && cur.VRAMBudgetGB > v.TotalGB() {
		st.Log.Warn(fmt.Sprintf("the VRAM budget (%s GB) is above this computer's graphics memory (%.1f GB)",
			strconv.FormatFloat(cur.VRAMBudgetGB, 'f', -1, 64), v.TotalGB()), "op", "settings")
	}

	stateDir := opts.StateDir
	switch {
	case stateDir != "":
	case opts.DevStudio:
		stateDir = filepath.Join(opts.DevDir, "state")
	default:
		stateDir = filepath.Join(xdg.StateHome, settings.AppDirName)
	}
	journal, err := studio.OpenJournal(stateDir)
	if err != nil {
		// Without it a crash forgets the job it interrupted; the worker
		// still runs.
		st.notice(st.Log, "The job journal could not be used: "+err.Error())
	}

	if db, err := history.Open(stateDir, st.Log); err != nil {
		st.notice(st.Log, "The job history cannot be kept, so finished jobs and totals are forgotten on restart: "+err.Error())
	} else {
		st.historyDB = db
		st.History = history.NewRecorder(history.RecorderConfig{DB: db, Logs: st.Logger.Ring().Entries, Log: st.Log,
			KeepDays: func() int { return st.Settings.Current().EffectiveHistoryDays() }})
	}

	queue := studio.NewLogQueue(0)
	st.removeQueue = st.Logger.AddSink(queue)
	st.Worker = studio.NewWorker(studio.WorkerConfig{
		Settings:             st.Settings.Current,
		Runner:               st.Runner,
		Creds:                st.Creds,
		Log:                  st.Log,
		Logs:                 queue,
		ShutdownGrace:        opts.ShutdownGrace,
		Clock:                opts.Clock,
		RegisterPollInterval: poll,
		Journal:              journal,
		Probes:               st.controlProbes(opts),
	})
	st.Updates = st.newUpdates()
	st.applyLocalAPI(cur)
	if opts.Autostart {
		// Refresh the login entry so it names the program running now.
		if err := st.loginStart().Apply(cur.StartAtLogin); err != nil {
			st.notice(st.Log, err.Error()+".")
		}
	}
	return st, nil
}

// engineNotice is the first-run banner about the engines, in a donor's
// words: what works and what is missing (the log has the technical
// details: the paths looked in, the settings that choose them); "" when
// both engines loaded.
func engineNotice(noText, noImage, fetch bool) string {
	fix := " Reinstalling Studio Worker puts them back; the Logs page says where it looked."
	if fetch {
		// Runtime packs (issue #14): the first job that needs one fetches it.
		fix = " Studio Worker fetches what is missing from its release feed for the first job that needs it, when the feed has it for this computer; the Logs page says whether it does, and where it looked."
	}
	switch {
	case noText && noImage:
		return "Studio Worker cannot run jobs yet: the programs that run text jobs (llama.cpp) and image jobs (stable-diffusion.cpp) were not found on this computer." + fix
	case noText:
		return "Image jobs work, but text jobs are off: the program that runs them (llama.cpp) was not found on this computer." + fix
	case noImage:
		return "Text jobs work, but image jobs are off: the program that runs them (stable-diffusion.cpp) was not found on this computer." + fix
	}
	return ""
}

// checkForWindow turns settings the worker cannot use into notices: the
// window shows them and the donor fixes them on the Settings page.
func (st *Stack) checkForWindow(s settings.Settings) {
	if err := settings.ValidateStudioURL(s.StudioURL); err != nil {
		st.notice(st.Log, "The studio address in the settings cannot be used ("+err.Error()+"). Fix it on the Settings page and save; the worker starts then.")
	}
	if err := settings.ValidateModelsDir(s.ModelsDir); err != nil {
		st.notice(st.Log, "The models folder in the settings cannot be used ("+err.Error()+"), so no model can be downloaded. Choose another on the Settings page.")
	}
}

// stopHistory records what the worker finished last and closes the job
// history.
func (st *Stack) stopHistory() {
	if st.historyStop != nil {
		st.historyStop()
		<-st.historyDone
		st.History.Final(st.Worker.Snapshot())
	}
	if st.historyDB != nil {
		if err := st.historyDB.Close(); err != nil {
			st.Log.Warn("the job history did not close cleanly: "+err.Error(), "op", "history")
		}
		st.historyDB = nil
	}
}

// abandon frees what a failed New had made.
func (st *Stack) abandon() {
	st.stopLocalAPI()
	if st.historyDB != nil {
		_ = st.historyDB.Close()
	}
	if st.Dev != nil {
		st.Dev.Close()
	}
	if st.removeQueue != nil {
		st.removeQueue()
	}
	if st.Logger != nil {
		_ = st.Logger.Close()
	}
}

// storeFor is the model store of a folder, made on first use.
func (st *Stack) storeFor(dir string) *engine.Store {
	dir = filepath.Clean(settings.ExpandHome(dir))
	st.storesMu.Lock()
	defer st.storesMu.Unlock()
	s, ok := st.stores[dir]
	if !ok {
		s = engine.NewStore(dir, st.storeOpts)
		st.stores[dir] = s
	}
	return s
}

// useModelsDir sends the next jobs' downloads to dir; a job already
// running finishes with the folder it started in. It reports whether the
// folder changed.
func (st *Stack) useModelsDir(dir string) bool {
	next := st.storeFor(dir)
	if st.Runner.SetStore(next) == next {
		return false
	}
	st.Log.Info("models folder is now "+next.Root(), "op", "settings")
	return true
}

// OnNotice hands fn each notice raised after New (Notices has the ones
// from start); any raised before this call are handed over at once. fn is
// called on whatever goroutine raised the notice.
func (st *Stack) OnNotice(fn func(string)) {
	st.noticeMu.Lock()
	st.noticeFn = fn
	pending := st.lateNotices
	st.lateNotices = nil
	st.noticeMu.Unlock()
	for _, n := range pending {
		fn(n)
	}
}

func (st *Stack) lateNotice(msg string) {
	st.noticeMu.Lock()
	fn := st.noticeFn
	if fn == nil {
		st.lateNotices = append(st.lateNotices, msg)
	}
	st.noticeMu.Unlock()
	if fn != nil {
		fn(msg)
	}
}

func (st *Stack) notice(log *slog.Logger, msg string) {
	st.Notices = append(st.Notices, msg)
	log.Warn(msg, "op", "startup")
}

// Start runs the worker (registration, then the session) on a goroutine
// until ctx ends or Shutdown. With a dev studio it also queues the demo
// jobs.
func (st *Stack) Start(ctx context.Context) {
	st.runMu.Lock()
	st.ctx = ctx
	st.runMu.Unlock()
	if st.History != nil && st.historyDone == nil {
		// Its own context: Shutdown stops it after the worker, so the job
		// that ends during the shutdown is recorded too.
		hctx, stop := context.WithCancel(context.Background())
		st.historyStop, st.historyDone = stop, make(chan struct{})
		go func() {
			defer close(st.historyDone)
			st.History.Run(hctx, st.Worker)
		}()
	}
	st.startRun()
	if st.packs != nil && st.packsDone == nil {
		pctx, stop := context.WithCancel(ctx)
		st.packsStop, st.packsDone = stop, make(chan struct{})
		go func() {
			defer close(st.packsDone)
			st.startPacks(pctx)
		}()
	}
	if st.Dev != nil && st.opts.DemoOver > 0 && st.opts.DemoJobs+st.opts.DemoImageJobs > 0 {
		go st.spreadDemoJobs(ctx)
		return
	}
	if st.Dev != nil && st.opts.DemoJobs > 0 {
		go func() {
			if _, err := st.Dev.EnqueueDemoJobs(st.opts.DemoJobs, desktopDemoTokens, st.Runner.Kinds()); err != nil {
				st.Log.Warn("demo jobs not queued: "+err.Error(), "op", "devstudio")
			}
		}()
	}
	if st.Dev != nil && st.opts.DemoImageJobs > 0 {
		go func() {
			if _, err := st.Dev.EnqueueImageDemoJobs(st.opts.DemoImageJobs, st.Runner.Kinds()); err != nil {
				st.Log.Warn("demo image jobs not queued: "+err.Error(), "op", "devstudio")
			}
		}()
	}
}

// spreadDemoJobs queues the demo jobs one at a time, text and image in
// turn, evenly over Options.DemoOver from start, so that a newcomer sees
// them come and go instead of finding them all done at the first frame.
func (st *Stack) spreadDemoJobs(ctx context.Context) {
	texts, images := st.opts.DemoJobs, st.opts.DemoImageJobs
	every := st.opts.DemoOver / time.Duration(texts+images)
	textOK, imageOK := true, true
	for i := 0; texts+images > 0; i++ {
		if i > 0 {
			t := time.NewTimer(every)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		switch {
		case texts > 0 && (i%2 == 0 || images == 0 || !imageOK):
			texts--
			if _, err := st.Dev.EnqueueDemoJobs(1, desktopDemoTokens, st.Runner.Kinds()); err != nil && textOK {
				textOK = false
				st.Log.Warn("demo jobs not queued: "+err.Error(), "op", "devstudio")
			}
		default:
			images--
			if _, err := st.Dev.EnqueueImageDemoJobs(1, st.Runner.Kinds()); err != nil && imageOK {
				imageOK = false
				st.Log.Warn("demo image jobs not queued: "+err.Error(), "op", "devstudio")
			}
		}
	}
}

func (st *Stack) startRun() {
	st.runMu.Lock()
	defer st.runMu.Unlock()
	if st.running || st.ctx == nil {
		return
	}
	st.running = true
	done := make(chan struct{})
	st.runDone = done
	ctx := st.ctx
	go func() {
		defer close(done)
		err := st.Worker.Run(ctx)
		st.runMu.Lock()
		st.running = false
		st.runErr = err
		st.runMu.Unlock()
	}()
}

// restartAfterStop starts the worker's loop again when it ended for good
// (turned down, stopped by the studio, an unusable setting). The worker
// publishes its final state just before Run returns, so a click that
// follows that state may arrive a moment early: wait for Run to end.
func (st *Stack) restartAfterStop(wasFinal bool) {
	st.runMu.Lock()
	running, done := st.running, st.runDone
	st.runMu.Unlock()
	if running && wasFinal {
		t := time.NewTimer(5 * time.Second)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
			st.Log.Warn("the worker did not finish stopping; not starting it again", "op", "run")
			return
		}
	}
	st.startRun()
}

func isFinal(s studio.Snapshot) bool {
	return s.State == studio.StateStopped || s.State == studio.StateRejected
}

// StartOver forgets the credentials and registers again; it also restarts
// the worker's loop after the studio turned it down or stopped it.
func (st *Stack) StartOver() error {
	final := isFinal(st.Worker.Snapshot())
	err := st.Worker.Logout()
	st.restartAfterStop(final)
	return err
}

// Shutdown stops the worker: a running job gets the grace time, then is
// failed as retryable; the whole stop is bounded by timeout.
func (st *Stack) Shutdown(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	st.stopLocalAPI()
	err := st.Worker.Shutdown(ctx)
	if err != nil {
		st.Log.Warn("worker did not stop in time: "+err.Error(), "op", "shutdown")
	} else {
		st.Log.Info("worker stopped", "op", "shutdown")
	}
	if st.packsStop != nil {
		// After the worker: a text engine reloading onto a new pack waits
		// for the running job to end.
		st.packsStop()
		<-st.packsDone
	}
	st.stopHistory()
	if st.closeProbes != nil {
		st.closeProbes()
	}
	if st.Dev != nil {
		st.Dev.Close()
	}
	if st.removeQueue != nil {
		st.removeQueue()
	}
	_ = st.Runner.ReleaseAll()
	for _, c := range []*host.Client{st.Llama, st.Image} {
		if c != nil {
			_ = c.Close() // the processes go, and all they held
		}
	}
	// A finished download may still be going to disk with its record, in
	// the models folder of now or of before a change.
	st.storesMu.Lock()
	for _, s := range st.stores {
		s.Sync()
	}
	st.storesMu.Unlock()
	_ = st.Logger.Close()
	return err
}

// Backend is the worker as the window sees it (ui.Backend).
type Backend struct {
	*studio.Worker
	st *Stack
}

// Backend returns the window's view of the worker.
func (st *Stack) Backend() *Backend { return &Backend{Worker: st.Worker, st: st} }

// StartOver forgets the credentials and registers afresh.
func (b *Backend) StartOver() error { return b.st.StartOver() }

// ResidentModel is the path of the model file llama.cpp holds in memory,
// "" when none (or when the engines were replaced, in tests).
func (st *Stack) ResidentModel() string {
	if st.Llama == nil {
		return ""
	}
	return st.Llama.ResidentModel()
}

// Models is the models folder as the Models page sees it. It follows the
// folder the runner uses, so a folder chosen on the Settings page shows at
// once.
func (st *Stack) Models() ModelFolder { return ModelFolder{r: st.Runner} }

// ModelFolder is the runner's model store of the moment (ui.ModelStore).
type ModelFolder struct{ r *engine.Runner }

// Root is the models folder.
func (m ModelFolder) Root() string { return m.r.Store().Root() }

// List describes the models in the folder.
func (m ModelFolder) List() ([]engine.StoredModel, error) { return m.r.Store().List() }

// Delete removes a model unless a job uses it.
func (m ModelFolder) Delete(modelID string) error { return m.r.Store().Delete(modelID) }

// DiskUsage is the bytes under the folder.
func (m ModelFolder) DiskUsage() (uint64, error) { return m.r.Store().DiskUsage() }

// FreeSpace is the free space of the folder's disk.
func (m ModelFolder) FreeSpace() (uint64, error) { return m.r.Store().FreeSpace() }

// BudgetUse is what the folder's disk budget counts now.
func (m ModelFolder) BudgetUse() (engine.BudgetUse, error) { return m.r.Store().BudgetUse() }

// LooseLeftOut lists the donor's .gguf files that fail the GGUF check.
func (m ModelFolder) LooseLeftOut() []engine.LeftOutModel { return m.r.Store().LooseLeftOut() }

// diskBudgetCounts says what the models folder's disk budget counts, for
// the log.
const diskBudgetCounts = "only models the worker downloaded count and may be deleted (the ones used longest ago first, never one in use or loaded); files you placed in the models folder yourself are never counted or deleted"

// logDiskBudget logs the models folder's disk budget and its use now.
func (st *Stack) logDiskBudget() {
	u, err := st.Runner.Store().BudgetUse()
	if err != nil {
		st.Log.Warn("could not measure the models folder: "+err.Error(), "op", "budget")
		return
	}
	if u.BudgetBytes == 0 {
		st.Log.Info("models folder: "+u.String(), "op", "budget")
		return
	}
	st.Log.Info("models folder disk budget: "+u.String()+"; "+diskBudgetCounts, "op", "budget")
}

// ensure the interfaces the window expects are met where they can be
// checked without importing the window.
var _ interface {
	Current() settings.Settings
	Save(settings.Settings) (string, error)
} = (*Controller)(nil)

// LocalAPI is the running local API, nil while it is off.
func (st *Stack) LocalAPI() *api.Server {
	st.apiMu.Lock()
	defer st.apiMu.Unlock()
	return st.api
}

// applyLocalAPI starts, restarts or stops the local API to match the
// settings (Options.LocalAPI, the on/off switch and the port). A failure
// to start is a notice: the worker runs without it.
func (st *Stack) applyLocalAPI(s settings.Settings) {
	if !st.opts.LocalAPI || st.Worker == nil {
		return
	}
	st.apiMu.Lock()
	defer st.apiMu.Unlock()
	want := !s.LocalAPIOff
	if st.api != nil {
		if want && st.apiPort == s.APIPort() {
			return
		}
		_ = st.api.Close()
		st.api = nil
		st.Log.Info("local API stopped", "op", "api")
	}
	if !want {
		return
	}
	srv, err := api.Start(api.Options{Worker: st.Worker, Models: st.Runner, Log: st.Log, ConfigDir: st.cfgDir, Port: s.APIPort(), StartOver: st.StartOver})
	if err != nil {
		st.lateNotice("The local API did not start: " + err.Error())
		st.Log.Warn("local API did not start: "+err.Error(), "op", "api")
		return
	}
	st.api, st.apiPort = srv, s.APIPort()
}

func (st *Stack) stopLocalAPI() {
	st.apiMu.Lock()
	defer st.apiMu.Unlock()
	if st.api != nil {
		_ = st.api.Close()
		st.api = nil
	}
}
