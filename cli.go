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
	"syscall"
	"time"

	"github.com/adrg/xdg"

	"github.com/minisgg/studio-worker/app/api"
	"github.com/minisgg/studio-worker/app/stack"
	"github.com/minisgg/studio-worker/app/update"
	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/engine/host"
	"github.com/minisgg/studio-worker/engine/host/hosted"
	"github.com/minisgg/studio-worker/engine/llama"
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
  studio-worker status [--config DIR] one line on what the running app is doing
  studio-worker pause [--now] [--config DIR]
                                     the running app takes no more studio jobs
                                     after the current one (--now: it stops
                                     that one too and frees all engine memory)
  studio-worker resume [--config DIR]
                                     the running app takes studio jobs again
  studio-worker register [--reset] [--config DIR]
                                     say whether this computer is registered
                                     (--reset: forget its credentials, so the
                                     running app, or the next run, registers
                                     it again)
  studio-worker devstudio [--addr HOST:PORT] [--data DIR] [--models DIR] [--auto-approve]
                                     run a local studio (tests, demos, self-hosting)
  studio-worker demo [--jobs N] [--image-jobs N] [--dir DIR]
                                     run real chat jobs through a local studio and this worker
  studio-worker version [--verbose]  print the version (--verbose: and which llama.cpp runtime loads)
  studio-worker feed verify [--config DIR] [FILE|URL]
                                     check a release feed's signature and list what it
                                     offers (default: the update_feed_url setting, else
                                     the built-in feed)
  studio-worker update [--check] [--to VERSION] [--feed URL] [--config DIR] [--verbose]
                                     install a newer version from the signed release
                                     feed the way this copy was installed (--check:
                                     only say what is out; --to: exactly VERSION,
                                     even an older one; --verbose: a failure's Go error too)
`

// Timings of the headless worker's shutdown: the worker gives a running job
// studio.DefaultShutdownGrace, and everything else must fit in the rest.
const shutdownTimeout = 15 * time.Second

// DefaultDevStudioAddr is where `devstudio` listens unless told otherwise.
const DefaultDevStudioAddr = "127.0.0.1:8787"

// cli runs one command line and returns the exit status. Errors are one
// line on stderr: 2 for a bad command line, 1 for anything else.
func cli(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "run" || args[0] == "update" || strings.HasPrefix(args[0], "-") {
		// A version an update restarted into that died before it said it
		// started is replaced by the one before (app/update).
		update.RecoverFailedStart(studio.Version, args, stderr)
	}
	if len(args) == 0 {
		return runDesktop(args)
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:], stderr)
	case "register":
		return cmdRegister(args[1:], stdout, stderr)
	case "status", "pause", "resume":
		return cmdControl(args[0], args[1:], stdout, stderr)
	case "devstudio":
		return cmdDevStudio(args[1:], stdout, stderr)
	case "demo":
		return cmdDemo(args[1:], stdout, stderr)
	case "version", "--version", "-version":
		return cmdVersion(args[1:], stdout, stderr)
	case "feed":
		return cmdFeed(args[1:], stdout, stderr)
	case "update":
		return cmdUpdate(args[1:], stdout, stderr)
	case "runtime-check": // hidden: the child in which a GPU runtime is tried
		return llama.RuntimeCheckMain(args[1:], stdout, stderr)
	case "engine-host": // hidden: the child a native engine runs in (engine/host)
		return host.ChildMain(args[1:], hosted.Builders(), stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	if strings.HasPrefix(args[0], "-") {
		// Flags without a command belong to the desktop app (start-up
		// entries pass them).
		return runDesktop(args)
	}
	fmt.Fprintf(stderr, "studio-worker: unknown command %q (commands: run, status, pause, resume, register, devstudio, demo, version, update, feed, help)\n", args[0])
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

// parseCommand parses a command's flags with parseFlags. done says the
// command must return code at once: 0 after writing the usage to helpOut
// for -h, 2 after one line naming the command and the problem on stderr.
func parseCommand(fs *flag.FlagSet, args []string, helpOut, stderr io.Writer) (code int, done bool) {
	err := parseFlags(fs, args)
	switch {
	case err == nil:
		return 0, false
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(helpOut, usage)
		return 0, true
	}
	fmt.Fprintln(stderr, "studio-worker "+fs.Name()+": "+err.Error())
	return 2, true
}

// ---- run ----

func cmdRun(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	studioURL := fs.String("studio", "", "studio URL for this run (default: the saved setting)")
	configDir := fs.String("config", "", "settings folder (default: the user's config folder)")
	if code, done := parseCommand(fs, args, stderr, stderr); done {
		return code
	}
	fail := func(err error) int {
		fmt.Fprintln(stderr, "studio-worker run: "+err.Error())
		return 1
	}
	if *studioURL != "" {
		if err := settings.ValidateStudioURL(*studioURL); err != nil {
			return fail(fmt.Errorf("--studio: %v", err))
		}
	}
	st, err := stack.New(stack.Options{
		Headless: true, ConfigDir: *configDir, StudioURL: *studioURL, Stderr: stderr, LocalAPI: true,
	})
	if err != nil {
		return fail(err)
	}

	sigCtx, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stopSignals()
	runErr := make(chan error, 1)
	go func() { runErr <- st.Worker.Run(context.Background()) }()
	st.Log.Info("studio worker "+studio.Version+" started; studio "+st.Settings.Current().StudioURL, "op", "run")
	updCtx, stopUpdates := context.WithCancel(context.Background())
	defer stopUpdates()
	restart := make(chan *update.Restart, 1)
	st.StartUpdates(updCtx, func(r *update.Restart) { restart <- r })

	select {
	case err := <-runErr:
		st.Shutdown(shutdownTimeout)
		if err != nil {
			return fail(errors.New(headlessAdvice(err.Error())))
		}
		return 0
	case r := <-restart:
		// An update is installed: stop (the updater holds the job gate),
		// then become the new version.
		stopUpdates()
		st.Log.Info("restarting into Studio Worker "+r.Version(), "op", "update")
		st.Shutdown(shutdownTimeout)
		return fail(r.Do()) // returns only when it could not
	case <-sigCtx.Done():
	}
	// A second Ctrl-C now kills the process the default way.
	stopSignals()
	st.Log.Info("shutting down", "op", "run")
	if err := st.Shutdown(shutdownTimeout); err != nil {
		return fail(errors.New("shutdown did not finish cleanly: " + err.Error()))
	}
	return 0
}

// headlessAdvice rewords the window's "log out and register again" for a
// run without a window, where the way to log out is a command.
func headlessAdvice(msg string) string {
	return strings.ReplaceAll(msg, "log out and register again",
		"run `studio-worker register --reset`, then `studio-worker run` to register again")
}

// ---- register ----

// cmdRegister says whether this computer is registered with the studio
// or, with --reset, forgets its credentials (the headless twin of the
// window's "Log out / reset…"): the next `run` asks the studio to register
// it again, and an operator approves it once more.
func cmdRegister(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("register", flag.ContinueOnError)
	reset := fs.Bool("reset", false, "forget this computer's studio credentials")
	configDir := fs.String("config", "", "settings folder (default: the user's config folder)")
	if code, done := parseCommand(fs, args, stdout, stderr); done {
		return code
	}
	fail := func(err error) int {
		fmt.Fprintln(stderr, "studio-worker register: "+err.Error())
		return 1
	}
	dir, err := configFolder(*configDir)
	if err != nil {
		return fail(err)
	}
	store := settings.NewCredentialStore(dir, nil)
	if *reset {
		// A running app forgets them itself and registers again at once.
		st, err := api.Call(context.Background(), dir, http.MethodPost, "/register/reset")
		var notRunning *api.NotRunningError
		switch {
		case err == nil:
			fmt.Fprintf(stdout, "the running app forgot this computer's studio credentials and asks the studio to register it again (%s)\n", st.State)
			return 0
		case !errors.As(err, &notRunning):
			return fail(err)
		}
		if err := store.Clear(); err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "forgot this computer's studio credentials (settings folder %s); `studio-worker run` asks the studio to register it again\n", dir)
		return 0
	}
	c, err := store.Load()
	switch {
	case err != nil:
		return fail(err)
	case c.Registered():
		fmt.Fprintf(stdout, "registered as worker %s; `studio-worker run` connects it\n", c.WorkerID)
	case c.RequestID != "":
		fmt.Fprintf(stdout, "registration request %s is waiting for the studio's approval; `studio-worker run` keeps asking\n", c.RequestID)
	default:
		fmt.Fprintln(stdout, "not registered; `studio-worker run` asks the studio to register this computer")
	}
	return 0
}

// configFolder is the --config flag's folder, or the default one.
func configFolder(flagValue string) (string, error) {
	if flagValue == "" {
		return settings.DefaultDir()
	}
	return settings.ExpandHome(flagValue), nil
}

// ---- status, pause, resume ----

// cmdControl asks the running app (the desktop app or `studio-worker
// run`, found through the local API's address file in the config folder)
// for its status, to pause or to resume, and prints one line. With no app
// running it says so and exits 1.
func cmdControl(name string, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	configDir := fs.String("config", "", "settings folder of the running app (default: the user's config folder)")
	now := new(bool)
	if name == "pause" {
		now = fs.Bool("now", false, "stop the running job too (the studio gives it to another worker) and free all engine memory")
	}
	if code, done := parseCommand(fs, args, stdout, stderr); done {
		return code
	}
	fail := func(err error) int {
		fmt.Fprintln(stderr, "studio-worker "+name+": "+err.Error())
		return 1
	}
	dir, err := configFolder(*configDir)
	if err != nil {
		return fail(err)
	}
	method, path := http.MethodPost, "/"+name
	switch {
	case name == "status":
		method = http.MethodGet
	case *now:
		path += "?now=1"
	}
	st, err := api.Call(context.Background(), dir, method, path)
	if err != nil {
		return fail(err)
	}
	switch {
	case name == "pause" && *now:
		fmt.Fprintln(stdout, "paused now: the running job (if any) was stopped and the engines gave their memory back; "+st.Line())
	case name == "pause" && st.PauseAfterJob:
		fmt.Fprintln(stdout, "pausing after the current job; "+st.Line())
	case name == "pause":
		fmt.Fprintln(stdout, "paused: no more studio jobs until `studio-worker resume`; "+st.Line())
	case name == "resume":
		fmt.Fprintln(stdout, "resumed: taking studio jobs again; "+st.Line())
	default:
		fmt.Fprintln(stdout, st.Line())
	}
	return 0
}

// ---- devstudio ----

func cmdDevStudio(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("devstudio", flag.ContinueOnError)
	addr := fs.String("addr", DefaultDevStudioAddr, "address to listen on")
	dataDir := fs.String("data", "", "folder for the studio's state and results (default: the user's data folder)")
	modelsDir := fs.String("models", "", "folder whose files are served at /dev/models/ (default: none)")
	autoApprove := fs.Bool("auto-approve", false, "approve every worker that asks to register")
	if code, done := parseCommand(fs, args, stdout, stderr); done {
		return code
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
	if err := stack.UsableDir(data); err != nil {
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

// Sizes of the demo: short answers keep it quick on a CPU.
const (
	demoJobTimeout = 5 * time.Minute // one job: download, load and generation
	demoMaxTokens  = 48
	demoPoll       = 50 * time.Millisecond // the demo's studio approves at once
)

// cmdDemo runs the whole product on loopback: a dev studio that serves a
// generated GGUF with its sha256, this worker registering, downloading and
// verifying it, and real chat jobs through llama.cpp. It prints each
// completion and its speed, and exits 0 only when every job was done.
func cmdDemo(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	jobs := fs.Int("jobs", 3, "how many chat jobs to run")
	imageJobs := fs.Int("image-jobs", 2, "how many image jobs to run after them (PNG and WebP in turn; 0: none)")
	dirFlag := fs.String("dir", "", "folder for the demo's studio, settings and models (default: a temporary folder, removed afterwards)")
	if code, done := parseCommand(fs, args, stdout, stderr); done {
		return code
	}
	fail := func(err error) int {
		fmt.Fprintln(stderr, "studio-worker demo: "+err.Error())
		return 1
	}
	if *jobs < 1 || *imageJobs < 0 {
		fmt.Fprintln(stderr, "studio-worker demo: --jobs must be at least 1 and --image-jobs at least 0")
		return 2
	}
	base := settings.ExpandHome(*dirFlag)
	tempDir := false
	if base == "" {
		tmp, err := os.MkdirTemp("", "studio-worker-demo-*")
		if err != nil {
			return fail(err)
		}
		defer os.RemoveAll(tmp)
		base = tmp
		tempDir = true
	}
	if err := stack.UsableDir(base); err != nil {
		return fail(fmt.Errorf("cannot use the folder %s: %v", base, err))
	}

	// The same stack as `make run`'s window, without the window: a dev
	// studio in base/studio, settings in base/config, models in base/models.
	st, err := stack.New(stack.Options{
		Headless: true, DevStudio: true, DevDir: base,
		Stderr: stderr, LogPath: "-", Level: slog.LevelWarn, RegisterPoll: demoPoll,
	})
	if err != nil {
		return fail(err)
	}
	defer st.Shutdown(shutdownTimeout)
	if !slices.Contains(st.Runner.Kinds(), engine.KindLLM) {
		return fail(fmt.Errorf("chat jobs need the llama.cpp runtime, which did not load: %v", st.Llama.LoadError()))
	}
	runDone := make(chan error, 1)
	go func() { runDone <- st.Worker.Run(context.Background()) }()

	queued, err := st.Dev.EnqueueDemoJobs(*jobs, demoMaxTokens, st.Runner.Kinds())
	if err != nil {
		return fail(err)
	}
	fmt.Fprintf(stdout, "demo: dev studio on %s, model %s (%s)\n", st.Dev.URL, queued.Model, queued.File)

	done, err := waitDemoJobs(st, "job", queued.IDs, runDone, stdout, func(id string, js devstudio.JobStatus) string {
		answer, tokens := demoAnswer(js.Result)
		return fmt.Sprintf("%q -> %q (%d tokens, %.1f tokens/s)", js.Prompt, answer, tokens, demoSpeed(st.Worker, id))
	})
	if err != nil {
		return fail(err)
	}
	total := len(queued.IDs)
	if *imageJobs > 0 {
		n, ran, err := demoImages(st, *imageJobs, runDone, stdout)
		if ran > 0 && tempDir {
			fmt.Fprintln(stdout, "demo: the images go with the demo's temporary folder when it ends; --dir DIR keeps them")
		}
		if err != nil {
			return fail(err)
		}
		done += n
		total += ran
	}
	fmt.Fprintf(stdout, "demo: %d of %d jobs done\n", done, total)
	if done != total {
		return 1
	}
	return 0
}

// demoImages runs n image jobs through the same worker and says where the
// studio stored each image. Without the stable-diffusion.cpp runtime it
// says why and runs none. It returns the jobs done and the jobs run.
func demoImages(st *stack.Stack, n int, runDone <-chan error, stdout io.Writer) (int, int, error) {
	if !slices.Contains(st.Runner.Kinds(), engine.KindImage) {
		reason := "not loaded"
		if st.Image != nil && st.Image.LoadError() != nil {
			reason = st.Image.LoadError().Error()
		}
		fmt.Fprintf(stdout, "demo: no image jobs: the stable-diffusion.cpp runtime did not load: %s\n", reason)
		return 0, 0, nil
	}
	queued, err := st.Dev.EnqueueImageDemoJobs(n, st.Runner.Kinds())
	if err != nil {
		return 0, 0, err
	}
	fmt.Fprintf(stdout, "demo: image model %s (%s, random weights: the images are noise), %dx%d, %d steps\n",
		queued.Model, queued.File, stack.DemoImageSide, stack.DemoImageSide, stack.DemoImageSteps)
	done, err := waitDemoJobs(st, "image job", queued.IDs, runDone, stdout, func(_ string, js devstudio.JobStatus) string {
		path := filepath.Join(st.Dev.DataDir(), filepath.FromSlash(js.ResultFile))
		size := int64(-1)
		if fi, err := os.Stat(path); err == nil {
			size = fi.Size()
		}
		return fmt.Sprintf("%q -> %s (%d bytes)", js.Prompt, path, size)
	})
	return done, len(queued.IDs), err
}

// waitDemoJobs waits for each queued demo job in turn and prints one line
// for it, "<label> i/n <id>: ..." with the error, the state the job ended
// in, or what doneLine says of a done job. It returns how many were done,
// and an error only when the worker stopped (runDone).
func waitDemoJobs(st *stack.Stack, label string, ids []string, runDone <-chan error, stdout io.Writer,
	doneLine func(id string, js devstudio.JobStatus) string) (int, error) {
	done := 0
	for i, id := range ids {
		ctx, cancel := context.WithTimeout(context.Background(), demoJobTimeout)
		js, err := st.Dev.Server.WaitJob(ctx, id)
		cancel()
		select {
		case rerr := <-runDone:
			return done, fmt.Errorf("the worker stopped: %v", rerr)
		default:
		}
		prefix := fmt.Sprintf("%s %d/%d %s: ", label, i+1, len(ids), id)
		switch {
		case err != nil:
			fmt.Fprintln(stdout, prefix+err.Error())
		case js.State != devstudio.JobDone:
			fmt.Fprintf(stdout, "%s%s: %s\n", prefix, js.State, js.Error)
		default:
			done++
			fmt.Fprintln(stdout, prefix+doneLine(id, js))
		}
	}
	return done, nil
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
