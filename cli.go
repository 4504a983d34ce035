package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/adrg/xdg"

	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/engine/llama"
	"github.com/minisgg/studio-worker/engine/sd"
	"github.com/minisgg/studio-worker/logging"
	"github.com/minisgg/studio-worker/settings"
	"github.com/minisgg/studio-worker/studio"
	"github.com/minisgg/studio-worker/studio/devstudio"
)

const usage = `Studio Worker lends this computer's GPU to the minis.gg studio.

usage:
  studio-worker                      start the desktop app
  studio-worker run [--studio URL] [--config DIR]
                                     run the worker without a window
  studio-worker devstudio [--addr HOST:PORT] [--data DIR] [--models DIR] [--auto-approve]
                                     run a local studio (tests, demos, self-hosting)
  studio-worker version              print the version
`

// Timings of the headless worker's shutdown: the worker gives a running job
// studio.DefaultShutdownGrace, and everything else must fit in the rest.
const shutdownTimeout = 15 * time.Second

// DefaultDevStudioAddr is where `devstudio` listens unless told otherwise.
const DefaultDevStudioAddr = "127.0.0.1:8787"

// cli runs one command line and returns the exit status. Errors are one
// line on stderr: 2 for a bad command line, 1 for anything else.
func cli(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		return runDesktop(args)
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:], stderr)
	case "devstudio":
		return cmdDevStudio(args[1:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintf(stdout, "studio-worker %s\n", studio.Version)
		return 0
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	if strings.HasPrefix(args[0], "-") {
		// Flags without a command belong to the desktop app (start-up
		// entries pass them).
		return runDesktop(args)
	}
	fmt.Fprintf(stderr, "studio-worker: unknown command %q (commands: run, devstudio, version, help)\n", args[0])
	return 2
}

// parseFlags parses a command's flags; the error is one line.
func parseFlags(fs *flag.FlagSet, args []string) error {
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%v (see `studio-worker help`)", err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (see `studio-worker help`)", fs.Arg(0))
	}
	return nil
}

// ---- run ----

func cmdRun(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	studioURL := fs.String("studio", "", "studio URL for this run (default: the saved setting)")
	configDir := fs.String("config", "", "settings folder (default: the user's config folder)")
	if err := parseFlags(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stderr, usage)
			return 0
		}
		fmt.Fprintln(stderr, "studio-worker run: "+err.Error())
		return 2
	}
	st, err := openStack(stackOptions{ConfigDir: *configDir, StudioURL: *studioURL, Stderr: stderr})
	if err != nil {
		fmt.Fprintln(stderr, "studio-worker run: "+err.Error())
		return 1
	}
	defer st.Close()

	sigCtx, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stopSignals()
	runErr := make(chan error, 1)
	go func() { runErr <- st.Worker.Run(context.Background()) }()
	st.Log.Info("studio worker "+studio.Version+" started; studio "+st.Settings().StudioURL, "op", "run")

	select {
	case err := <-runErr:
		if err != nil {
			fmt.Fprintln(stderr, "studio-worker run: "+err.Error())
			return 1
		}
		return 0
	case <-sigCtx.Done():
	}
	// A second Ctrl-C now kills the process the default way.
	stopSignals()
	st.Log.Info("shutting down", "op", "run")
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := st.Worker.Shutdown(ctx); err != nil {
		fmt.Fprintln(stderr, "studio-worker run: shutdown did not finish cleanly: "+err.Error())
		return 1
	}
	select {
	case <-runErr:
	case <-ctx.Done():
	}
	return 0
}

// stackOptions say where a worker stack finds its settings and logs.
type stackOptions struct {
	ConfigDir string // "" = settings.DefaultDir()
	// StudioURL overrides the saved studio URL for this process only.
	StudioURL string
	Stderr    io.Writer // human-readable log lines; nil = os.Stderr
	// LogFile is the rotating log file; "" = logging.DefaultLogPath(),
	// "-" = none.
	LogFile string
}

// workerStack is the headless worker with everything it stands on:
// settings, logs, the model store, the engines and the runner.
type workerStack struct {
	Dir    string
	Store  *settings.Store
	Logger *logging.Logger
	Log    *slog.Logger
	Queue  *studio.LogQueue
	Models *engine.Store
	Runner *engine.Runner
	Worker *studio.Worker
	LLM    *llama.Engine
	Image  *sd.Engine

	mu       sync.Mutex
	settings settings.Settings
}

// openStack loads the settings (refusing unusable ones with one clear
// error) and builds the worker. Nothing is started.
func openStack(o stackOptions) (*workerStack, error) {
	dir := o.ConfigDir
	if dir == "" {
		d, err := settings.DefaultDir()
		if err != nil {
			return nil, err
		}
		dir = d
	}
	dir = settings.ExpandHome(dir)
	if err := usableDir(dir); err != nil {
		return nil, fmt.Errorf("cannot use the config folder %s: %v", dir, err)
	}
	store := settings.NewStore(dir)
	s, loadErr := store.Load()
	var corrupt *settings.CorruptError
	if loadErr != nil && !errors.As(loadErr, &corrupt) {
		return nil, loadErr
	}
	if o.StudioURL != "" {
		if err := settings.ValidateStudioURL(o.StudioURL); err != nil {
			return nil, fmt.Errorf("--studio: %v", err)
		}
		s.StudioURL = strings.TrimSpace(o.StudioURL)
	}
	if err := s.Validate(0); err != nil {
		return nil, fmt.Errorf("settings in %s: %v", store.Path(), err)
	}

	logFile := o.LogFile
	if logFile == "" {
		if p, err := logging.DefaultLogPath(); err == nil {
			logFile = p
		}
	}
	if logFile == "-" {
		logFile = ""
	}
	logger, err := logging.New(logging.Options{Stderr: o.Stderr, FilePath: logFile})
	var fileErr error
	if err != nil {
		// A log file is a convenience; the worker runs without one.
		fileErr = err
		logger, err = logging.New(logging.Options{Stderr: o.Stderr})
		if err != nil {
			return nil, err
		}
	}
	log := logger.Slog()
	if fileErr != nil {
		log.Warn("logging to the terminal only: "+fileErr.Error(), "op", "run")
	}
	if corrupt != nil {
		log.Warn(corrupt.Error()+"; using the default settings", "op", "settings")
	}
	queue := studio.NewLogQueue(0)
	logger.AddSink(queue)

	st := &workerStack{Dir: dir, Store: store, Logger: logger, Log: log, Queue: queue, settings: s}
	st.Models = engine.NewStore(settings.ExpandHome(s.ModelsDir), engine.StoreOptions{UserAgent: studio.UserAgent(), Log: log})
	st.LLM = llama.New(llama.Config{LibDir: s.LlamaLibDir, Threads: s.Threads, Log: log})
	st.Image = sd.New(sd.Config{LibPath: s.SDLibPath, Threads: s.Threads, Log: log})
	st.Runner = engine.NewRunner(engine.RunnerConfig{
		Store:    st.Models,
		Engines:  []engine.Engine{st.LLM, st.Image},
		BudgetGB: func() float64 { return st.Settings().VRAMBudgetGB },
		Log:      log,
	})
	if v := st.Runner.VRAM(); v.Known && s.VRAMBudgetGB > v.TotalGB() {
		log.Warn(fmt.Sprintf("the VRAM budget (%s GB) is above this computer's graphics memory (%.1f GB)",
			trimFloat(s.VRAMBudgetGB), v.TotalGB()), "op", "settings")
	}
	st.Worker = studio.NewWorker(studio.WorkerConfig{
		Settings: st.Settings,
		Runner:   st.Runner,
		Creds:    settings.NewCredentialStore(dir),
		Log:      log,
		Logs:     queue,
	})
	return st, nil
}

// Settings are the settings this process runs with (--studio included).
func (st *workerStack) Settings() settings.Settings {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.settings
}

// Close frees what the engines hold and closes the log file.
func (st *workerStack) Close() {
	if err := st.Runner.ReleaseAll(); err != nil {
		st.Log.Warn("releasing the loaded models: "+err.Error(), "op", "run")
	}
	_ = st.Logger.Close()
}

// usableDir creates dir when needed and proves it is a writable folder.
func usableDir(dir string) error {
	if fi, err := os.Stat(dir); err == nil && !fi.IsDir() {
		return errors.New("it is a file, not a folder")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return plainErr(err)
	}
	f, err := os.CreateTemp(dir, ".write-test-*")
	if err != nil {
		return fmt.Errorf("cannot write there: %v", plainErr(err))
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}

// plainErr drops the *PathError's repetition of the path the message
// already names.
func plainErr(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func trimFloat(v float64) string {
	return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.2f", v), "0"), ".")
}

// ---- devstudio ----

func cmdDevStudio(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("devstudio", flag.ContinueOnError)
	addr := fs.String("addr", DefaultDevStudioAddr, "address to listen on")
	dataDir := fs.String("data", "", "folder for the studio's state and results (default: the user's data folder)")
	modelsDir := fs.String("models", "", "folder whose files are served at /dev/models/ (default: none)")
	autoApprove := fs.Bool("auto-approve", false, "approve every worker that asks to register")
	if err := parseFlags(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usage)
			return 0
		}
		fmt.Fprintln(stderr, "studio-worker devstudio: "+err.Error())
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintln(stderr, "studio-worker devstudio: "+strings.TrimPrefix(err.Error(), "devstudio: "))
		return 1
	}
	data := *dataDir
	if data == "" {
		data = filepath.Join(xdg.DataHome, "studio-worker", "devstudio")
	}
	data = settings.ExpandHome(data)
	if err := usableDir(data); err != nil {
		return fail(fmt.Errorf("cannot use the data folder %s: %v", data, err))
	}
	models := settings.ExpandHome(*modelsDir)
	if models != "" {
		if fi, err := os.Stat(models); err != nil || !fi.IsDir() {
			return fail(fmt.Errorf("the models folder %s does not exist or is not a folder", models))
		}
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fail(fmt.Errorf("cannot listen on %s: %v", *addr, err))
	}
	logger, err := logging.New(logging.Options{Stderr: stderr})
	if err != nil {
		ln.Close()
		return fail(err)
	}
	defer logger.Close()
	srv, err := devstudio.New(devstudio.Options{DataDir: data, ModelsDir: models, AutoApprove: *autoApprove, Log: logger.Slog()})
	if err != nil {
		ln.Close()
		return fail(err)
	}
	url := "http://" + ln.Addr().String() + "/"
	fmt.Fprintf(stdout, "dev studio listening on %s\n", url)
	fmt.Fprintf(stdout, "connect a worker with: studio-worker run --studio %s\n", url)

	httpSrv := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- httpSrv.Serve(ln) }()
	sigCtx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	status := 0
	select {
	case err := <-serveErr:
		status = fail(err)
	case <-sigCtx.Done():
	}
	// Close the studio first: open sessions keep their handlers running
	// until it ends them.
	if err := srv.Close(); err != nil {
		fmt.Fprintln(stderr, "studio-worker devstudio: saving the state: "+err.Error())
		status = 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = httpSrv.Shutdown(ctx)
	return status
}
