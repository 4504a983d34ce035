package main

import (
	"context"
	"encoding/json"
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
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/adrg/xdg"

	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/engine/gguf"
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
  studio-worker demo [--jobs N] [--dir DIR]
                                     run real chat jobs through a local studio and this worker
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
	case "demo":
		return cmdDemo(args[1:], stdout, stderr)
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
	fmt.Fprintf(stderr, "studio-worker: unknown command %q (commands: run, devstudio, demo, version, help)\n", args[0])
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
	Level   slog.Level // lowest level logged (default Info)
	// RegisterPoll overrides the 30 s registration poll (the demo's own
	// studio approves at once).
	RegisterPoll time.Duration
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
	logger, err := logging.New(logging.Options{Stderr: o.Stderr, FilePath: logFile, Level: o.Level})
	var fileErr error
	if err != nil {
		// A log file is a convenience; the worker runs without one.
		fileErr = err
		logger, err = logging.New(logging.Options{Stderr: o.Stderr, Level: o.Level})
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
		Settings:             st.Settings,
		Runner:               st.Runner,
		Creds:                settings.NewCredentialStore(dir),
		Log:                  log,
		Logs:                 queue,
		RegisterPollInterval: o.RegisterPoll,
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

// ---- demo ----

// demoPrompts are what the demo asks. The generated model has random
// weights, so the answers are nonsense, but every token is computed by
// llama.cpp on this machine.
var demoPrompts = []string{
	"Name three colours of a sunset.",
	"Write a haiku about graphics cards.",
	"What is a good name for a friendly robot?",
	"Describe a castle made of glass in one sentence.",
	"List two uses for a spare GPU.",
}

// demoJobTimeout bounds one demo job (download, load and generation).
const demoJobTimeout = 5 * time.Minute

// cmdDemo runs the whole product on loopback: a dev studio that serves a
// generated GGUF with its sha256, this worker registering, downloading and
// verifying it, and real chat jobs through llama.cpp. It prints each
// completion and its speed, and exits 0 only when every job was done.
func cmdDemo(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	jobs := fs.Int("jobs", 3, "how many chat jobs to run")
	dirFlag := fs.String("dir", "", "folder for the demo's studio, settings and models (default: a temporary folder, removed afterwards)")
	if err := parseFlags(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usage)
			return 0
		}
		fmt.Fprintln(stderr, "studio-worker demo: "+err.Error())
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintln(stderr, "studio-worker demo: "+err.Error())
		return 1
	}
	if *jobs < 1 {
		fmt.Fprintln(stderr, "studio-worker demo: --jobs must be at least 1")
		return 2
	}
	base := settings.ExpandHome(*dirFlag)
	if base == "" {
		tmp, err := os.MkdirTemp("", "studio-worker-demo-*")
		if err != nil {
			return fail(err)
		}
		defer os.RemoveAll(tmp)
		base = tmp
	}
	studioDir, served := filepath.Join(base, "studio"), filepath.Join(base, "studio", "models")
	configDir, workerModels := filepath.Join(base, "config"), filepath.Join(base, "models")
	for _, d := range []string{served, configDir, workerModels} {
		if err := usableDir(d); err != nil {
			return fail(fmt.Errorf("cannot use the folder %s: %v", d, err))
		}
	}

	spec := gguf.Tiny()
	modelPath, err := gguf.EnsureIn(served, spec)
	if err != nil {
		return fail(fmt.Errorf("could not write the demo model: %v", err))
	}
	srv, err := devstudio.New(devstudio.Options{DataDir: studioDir, ModelsDir: served, AutoApprove: true})
	if err != nil {
		return fail(errors.New(strings.TrimPrefix(err.Error(), "devstudio: ")))
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		srv.Close()
		return fail(err)
	}
	serveCtx, stopServe := context.WithCancel(context.Background())
	served2 := make(chan error, 1)
	go func() { served2 <- srv.Serve(serveCtx, ln) }()
	defer func() { stopServe(); <-served2 }()
	url := "http://" + ln.Addr().String() + "/"
	file, err := devstudio.ModelFile(url, served, filepath.Base(modelPath), engine.RoleModel)
	if err != nil {
		return fail(err)
	}

	store := settings.NewStore(configDir)
	s, err := store.Load()
	if err != nil {
		return fail(err)
	}
	s.StudioURL, s.ModelsDir = url, workerModels
	if err := store.Save(s); err != nil {
		return fail(err)
	}
	st, err := openStack(stackOptions{ConfigDir: configDir, Stderr: stderr, LogFile: "-", Level: slog.LevelWarn,
		RegisterPoll: 50 * time.Millisecond})
	if err != nil {
		return fail(err)
	}
	defer st.Close()
	if !slices.Contains(st.Runner.Kinds(), engine.KindLLM) {
		return fail(fmt.Errorf("chat jobs need the llama.cpp runtime, which did not load: %v", st.LLM.LibError()))
	}
	runDone := make(chan error, 1)
	go func() { runDone <- st.Worker.Run(context.Background()) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		_ = st.Worker.Shutdown(ctx)
	}()
	fmt.Fprintf(stdout, "demo: dev studio on %s, model %s (%s)\n", url, spec.Name, filepath.Base(modelPath))

	ids := make([]string, *jobs)
	for i := range ids {
		ids[i], err = srv.EnqueueJob(devstudio.JobSpec{
			Task: engine.Task{Kind: engine.KindLLM, LLM: &engine.LLMParams{
				Messages:  []engine.ChatMessage{{Role: "user", Content: demoPrompts[i%len(demoPrompts)]}},
				MaxTokens: 48,
			}},
			Model:          spec.Name,
			ModelSource:    engine.ModelSource{Engine: engine.EngineLlamaCpp, Files: []engine.ModelFile{file}},
			VRAMGBEstimate: 0.1,
			GameID:         "demo",
			AssetName:      fmt.Sprintf("demo-%d", i+1),
		})
		if err != nil {
			return fail(err)
		}
	}
	done := 0
	for i, id := range ids {
		ctx, cancel := context.WithTimeout(context.Background(), demoJobTimeout)
		js, err := srv.WaitJob(ctx, id)
		cancel()
		select {
		case rerr := <-runDone:
			return fail(fmt.Errorf("the worker stopped: %v", rerr))
		default:
		}
		switch {
		case err != nil:
			fmt.Fprintf(stdout, "job %d/%d %s: %v\n", i+1, len(ids), id, err)
		case js.State != devstudio.JobDone:
			fmt.Fprintf(stdout, "job %d/%d %s: %s: %s\n", i+1, len(ids), id, js.State, js.Error)
		default:
			done++
			answer, tokens := demoAnswer(js.Result)
			fmt.Fprintf(stdout, "job %d/%d %s: %q -> %q (%d tokens, %.1f tokens/s)\n",
				i+1, len(ids), id, js.Prompt, answer, tokens, demoSpeed(st.Worker, id))
		}
	}
	fmt.Fprintf(stdout, "demo: %d of %d jobs done\n", done, len(ids))
	if done != len(ids) {
		return 1
	}
	return 0
}

// demoAnswer reads the answer and its token count out of a chat.completion.
func demoAnswer(result []byte) (string, int) {
	var doc struct {
		Choices []struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
		} `json:"choices"`
		Usage struct {
			CompletionTokens int `json:"completion_tokens"`
		} `json:"usage"`
	}
	if json.Unmarshal(result, &doc) != nil || len(doc.Choices) == 0 {
		return "", 0
	}
	return doc.Choices[0].Message.Content, doc.Usage.CompletionTokens
}

// demoSpeed is the generation speed the worker measured for a job. The
// studio marks a job done when the result arrives, a moment before the
// worker files it under its recent jobs, so this waits for that snapshot.
func demoSpeed(w *studio.Worker, id string) float64 {
	snaps, stop := w.Subscribe()
	defer stop()
	timeout := time.NewTimer(5 * time.Second)
	defer timeout.Stop()
	for {
		select {
		case s := <-snaps:
			for _, j := range s.Recent {
				if j.ID == id {
					return j.Stats.TokensPerSecond
				}
			}
		case <-timeout.C:
			return 0
		}
	}
}
