package host

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/minisgg/studio-worker/engine"
)

// Limits bound how long the parent waits for a sign of life from the child
// before it counts the child as hung, stops it and fails the job. Each is
// the longest silence allowed in its phase: any progress frame restarts
// the count.
type Limits struct {
	// Start: from starting the process to its hello (loading the library,
	// trying a GPU runtime in a child of its own first).
	Start time.Duration
	// Load: a job's model load, before its first generation progress.
	Load time.Duration
	// Generate: between two progress frames while generating (one sampling
	// step of a large image model on a CPU is slow).
	Generate time.Duration
	// Reply: release, and the answer to a cancel.
	Reply time.Duration
}

// DefaultLimits suit a slow computer: a GPU runtime's check may take two
// minutes, a large model a few minutes to read from a slow disk.
var DefaultLimits = Limits{Start: 3 * time.Minute, Load: 10 * time.Minute, Generate: 10 * time.Minute, Reply: 30 * time.Second}

// DefaultKeepAlive is how long an idle child is kept (Ollama's default):
// after that it exits and gives back all its memory; the next job starts
// it again.
const DefaultKeepAlive = 5 * time.Minute

// Config describes the child a Client runs.
type Config struct {
	// Command is the program and its arguments, for instance
	// {os.Executable(), "engine-host", "llama"}.
	Command []string
	// Env is added to the program's environment.
	Env []string
	// Init is sent to every child it starts; Init.Engine is the engine's
	// name, which Name reports.
	Init Init
	// What names the engine in a donor's words ("the text engine"); it
	// starts crash reports.
	What string
	// Log receives the client's lines and the child's.
	Log *slog.Logger
	// Limits: zero fields are DefaultLimits'.
	Limits Limits
	// KeepAlive: 0 is DefaultKeepAlive; negative keeps an idle child
	// forever.
	KeepAlive time.Duration
}

// Client is the parent's side: an engine.Engine whose work happens in a
// child process it starts, watches and restarts. It is safe for concurrent
// use; runs and releases go one at a time, as in the engines themselves.
type Client struct {
	cfg Config
	log *slog.Logger

	op sync.Mutex // one run or release at a time; also guards starting

	mu        sync.Mutex
	ch        *child // nil when no child runs
	hello     Hello  // from the latest start
	started   bool   // a hello arrived once
	startErr  error  // why the latest start failed
	stats     Stats
	idleGen   int // invalidates older keep-alive timers
	idleTimer *time.Timer
	closed    bool
	starts    int
}

// New starts the child once to learn what it can run (Kinds), and returns
// the client. It never fails: a child that cannot start leaves Kinds empty
// and LoadError saying why.
func New(cfg Config) *Client {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	l := &cfg.Limits
	d := DefaultLimits
	for _, p := range []struct {
		v   *time.Duration
		def time.Duration
	}{{&l.Start, d.Start}, {&l.Load, d.Load}, {&l.Generate, d.Generate}, {&l.Reply, d.Reply}} {
		if *p.v <= 0 {
			*p.v = p.def
		}
	}
	if cfg.KeepAlive == 0 {
		cfg.KeepAlive = DefaultKeepAlive
	}
	if cfg.What == "" {
		cfg.What = "the " + string(cfg.Init.Engine) + " engine"
	}
	c := &Client{cfg: cfg, log: cfg.Log.With("engine", string(cfg.Init.Engine))}
	c.op.Lock()
	_, err := c.ensureChild(context.Background())
	c.op.Unlock()
	if err != nil {
		c.log.Warn(err.Error(), "op", "engine-host")
	}
	if len(c.Kinds()) == 0 {
		c.stop(false) // nothing to serve: no process kept for it
	} else {
		c.armIdle()
	}
	return c
}

// Name implements engine.Engine.
func (c *Client) Name() engine.EngineName { return c.cfg.Init.Engine }

// Kinds implements engine.Engine: what the child said it can run, known
// since New even while no child runs.
func (c *Client) Kinds() []engine.TaskKind {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.hello.Kinds)
}

// LoadError says why the engine serves nothing: its library did not load
// in the child, or the child did not start. nil when it serves something.
func (c *Client) LoadError() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.hello.LoadError != "":
		return errors.New(c.hello.LoadError)
	case !c.started && c.startErr != nil:
		return c.startErr
	case len(c.hello.Kinds) == 0:
		return fmt.Errorf("%s serves no task kinds", c.cfg.What)
	}
	return nil
}

// Hello is what the child said when it last started.
func (c *Client) Hello() Hello {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := c.hello
	h.Kinds, h.Notices = slices.Clone(h.Kinds), slices.Clone(h.Notices)
	return h
}

// PID is the running child's process id; 0 when none runs.
func (c *Client) PID() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ch == nil {
		return 0
	}
	return c.ch.pid
}

// Done is closed when the running child has gone; nil when none runs.
func (c *Client) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ch == nil {
		return nil
	}
	return c.ch.done
}

// Starts counts the children started so far.
func (c *Client) Starts() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.starts
}

// Stats is what the running child holds; zero when none runs.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ch == nil {
		return Stats{}
	}
	return c.stats
}

// Held is what the child holds now: its process's resident memory (read
// from the system where it can be; else the model's size as the child
// reports it), the model file and the GPU memory.
func (c *Client) Held() engine.Held {
	c.mu.Lock()
	ch, st := c.ch, c.stats
	c.mu.Unlock()
	h := engine.Held{Engine: c.Name()}
	if ch == nil {
		return h
	}
	h.PID, h.Model, h.VRAMBytes, h.Bytes = ch.pid, st.Model, st.ResidentVRAMBytes, st.ResidentBytes
	if rss, ok := processRSS(ch.pid); ok {
		h.Bytes = rss
	}
	return h
}

// ResidentVRAMBytes implements engine.Engine, from the child's last stats
// (it does not wait for a running job).
func (c *Client) ResidentVRAMBytes() uint64 { return c.Stats().ResidentVRAMBytes }

// ResidentModel is the path of the model file the child holds, "" when
// none.
func (c *Client) ResidentModel() string { return c.Stats().Model }

// SetThreads changes the thread count for the next jobs, in the running
// child and in every later one.
func (c *Client) SetThreads(n int) {
	c.mu.Lock()
	c.cfg.Init.Threads = n
	ch := c.ch
	c.mu.Unlock()
	if ch != nil {
		_ = ch.send(header{T: msgThreads, Threads: n}, nil)
	}
}

// Devices asks the running child for the GPUs its library sees, with
// their total and free memory now: an engine.DeviceProber for the parent's
// GPU probe, which no longer loads a native library itself. It starts no
// child; without one it says so, and the probe asks its other sources.
func (c *Client) Devices() ([]engine.GPUDevice, error) {
	c.mu.Lock()
	ch := c.ch
	c.mu.Unlock()
	if ch == nil {
		return nil, fmt.Errorf("%s is not running", c.cfg.What)
	}
	id, replies := ch.wait()
	defer ch.unwait(id)
	if err := ch.send(header{T: msgDevices, ID: id}, nil); err != nil {
		return nil, fmt.Errorf("%s did not take the question: %w", c.cfg.What, err)
	}
	limit := min(c.cfg.Limits.Reply, 5*time.Second)
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case f := <-replies:
		if f.h.T == msgError && f.h.Err != nil {
			return nil, f.h.Err.decode()
		}
		return f.h.Devices, nil
	case <-ch.done:
		return nil, fmt.Errorf("%s ended before it listed its devices", c.cfg.What)
	case <-t.C:
		return nil, fmt.Errorf("%s did not list its devices within %s", c.cfg.What, limit)
	}
}

// errStopped is a run ended by Stop (pause now, shutdown), not by a crash.
var errStopped = errors.New("was stopped")

// Run implements engine.Engine: the job runs in the child (started first
// when none runs). A child that dies, or gives no sign of life within the
// phase's limit, fails the job with an *engine.CrashError; the next job
// gets a fresh child.
func (c *Client) Run(ctx context.Context, job engine.Job, progress engine.ProgressFunc) (engine.Result, error) {
	if progress == nil {
		progress = func(engine.Progress) {}
	}
	if !slices.Contains(c.Kinds(), job.Task.Kind) {
		reason := ""
		if err := c.LoadError(); err != nil {
			reason = err.Error()
		}
		return engine.Result{}, &engine.CannotServeError{Engine: string(c.Name()), Kind: job.Task.Kind, Reason: reason}
	}
	c.op.Lock()
	defer c.op.Unlock()
	c.stopIdle()
	defer c.armIdle()
	ch, err := c.ensureChild(ctx)
	if err != nil {
		return engine.Result{}, err
	}
	id, replies := ch.wait()
	defer ch.unwait(id)
	phase := engine.PhaseLoad
	if err := ch.send(header{T: msgRun, ID: id, Job: &job}, nil); err != nil {
		return engine.Result{}, c.died(ch, job, phase)
	}
	timer := time.NewTimer(c.cfg.Limits.Load)
	defer timer.Stop()
	for {
		select {
		case f := <-replies:
			switch f.h.T {
			case msgProgress:
				if f.h.Progress == nil {
					continue
				}
				phase = phaseAfter(*f.h.Progress)
				progress(*f.h.Progress)
				limit := c.cfg.Limits.Generate
				if phase == engine.PhaseLoad {
					limit = c.cfg.Limits.Load
				}
				timer.Reset(limit)
			case msgResult:
				res := engine.Result{}
				if f.h.Result != nil {
					res.Ext, res.Stats = f.h.Result.Ext, f.h.Result.Stats
					if f.h.Result.JSON {
						res.JSON = f.body
					} else {
						res.Bytes = f.body
					}
				}
				return res, nil
			case msgError:
				if f.h.Err == nil {
					return engine.Result{}, fmt.Errorf("%s failed without saying why", c.cfg.What)
				}
				if f.h.Err.Tainted {
					// The child is left running what it could not stop
					// and exits; end it here, so that the next job never
					// meets it on its way out.
					c.log.Warn(fmt.Sprintf("%s (process %d) is left running work it could not stop; ending it", c.cfg.What, ch.pid),
						"op", "engine-host", "job", job.ID)
					ch.stopping.Store(true)
					ch.kill()
					<-ch.done
					c.forget(ch)
				}
				return engine.Result{}, f.h.Err.decode()
			}
		case <-ch.done:
			// Frames it wrote before it went may still be in the pipe: an
			// answer among them wins, and progress says what it was doing.
			ch.drained()
			for {
				select {
				case f := <-replies:
					switch f.h.T {
					case msgProgress:
						if f.h.Progress != nil {
							phase = phaseAfter(*f.h.Progress)
						}
						continue
					case msgResult, msgError:
						replies = requeue(f)
					}
				default:
				}
				break
			}
			if len(replies) > 0 {
				continue
			}
			return engine.Result{}, c.died(ch, job, phase)
		case <-timer.C:
			silence := c.cfg.Limits.Generate
			if phase == engine.PhaseLoad {
				silence = c.cfg.Limits.Load
			}
			c.log.Error(fmt.Sprintf("%s gave no sign of life for %s on job %s; stopping it", c.cfg.What, silence, job.ID),
				"op", "engine-host", "job", job.ID, "pid", ch.pid)
			ch.kill()
			<-ch.done
			c.forget(ch)
			return engine.Result{}, &engine.CrashError{What: c.cfg.What, Model: job.Model, Phase: phase, Hung: silence, Lines: ch.stderr.reason()}
		case <-ctx.Done():
			return engine.Result{}, c.cancelRun(ctx, ch, id, replies)
		}
	}
}

// cancelRun asks the child to stop job id and waits, within the reply
// limit, for it to say so; a child that does not is stopped.
func (c *Client) cancelRun(ctx context.Context, ch *child, id uint64, replies <-chan frame) error {
	if ch.send(header{T: msgCancel, ID: id}, nil) == nil {
		timer := time.NewTimer(c.cfg.Limits.Reply)
		defer timer.Stop()
		for {
			select {
			case f := <-replies:
				if f.h.T == msgProgress {
					continue
				}
				return ctx.Err()
			case <-ch.done:
				c.forget(ch)
				return ctx.Err()
			case <-timer.C:
			}
			break
		}
	}
	c.log.Warn(fmt.Sprintf("%s did not stop its job within %s of being asked; stopping its process", c.cfg.What, c.cfg.Limits.Reply),
		"op", "engine-host", "pid", ch.pid)
	ch.kill()
	<-ch.done
	c.forget(ch)
	return ctx.Err()
}

// phaseAfter is what the child is doing after reporting p: a load that
// reported itself complete has moved on to generating.
func phaseAfter(p engine.Progress) engine.Phase {
	if p.Phase == engine.PhaseLoad && p.Total > 0 && p.Done >= p.Total {
		return engine.PhaseGenerate
	}
	return p.Phase
}

// requeue is a channel holding just f, for Run's loop to take again.
func requeue(f frame) chan frame {
	r := make(chan frame, 1)
	r <- f
	return r
}

// died turns the end of ch during a job into the job's error: a
// CrashError with the child's last lines, or errStopped when Stop ended it.
func (c *Client) died(ch *child, job engine.Job, phase engine.Phase) error {
	<-ch.done // a failed write means the process is going; wait for the reaper
	c.forget(ch)
	if ch.stopping.Load() {
		return fmt.Errorf("%s %w", c.cfg.What, errStopped)
	}
	ce := &engine.CrashError{What: c.cfg.What, Model: job.Model, Phase: phase, Exit: ch.exit(), Lines: ch.stderr.reason()}
	c.log.Error(ce.Error(), "op", "engine-host", "job", job.ID, "pid", ch.pid)
	return ce
}

// Release implements engine.Engine: the child frees its model and stays
// up. With no child running nothing is held, and nothing is started.
func (c *Client) Release() error {
	c.op.Lock()
	defer c.op.Unlock()
	c.mu.Lock()
	ch := c.ch
	c.mu.Unlock()
	if ch == nil {
		return nil
	}
	id, replies := ch.wait()
	defer ch.unwait(id)
	if ch.send(header{T: msgRelease, ID: id}, nil) != nil {
		<-ch.done
		c.forget(ch)
		return nil // the process is gone, and its memory with it
	}
	timer := time.NewTimer(c.cfg.Limits.Reply)
	defer timer.Stop()
	select {
	case f := <-replies:
		if f.h.T == msgError && f.h.Err != nil {
			return f.h.Err.decode()
		}
		return nil
	case <-ch.done:
		c.forget(ch)
		return nil
	case <-timer.C:
		c.log.Warn(fmt.Sprintf("%s did not release its model within %s; stopping its process", c.cfg.What, c.cfg.Limits.Reply), "op", "engine-host")
		ch.kill()
		<-ch.done
		c.forget(ch)
		return nil
	}
}

// Stop ends the child now, whatever it is doing, and returns once the
// process is gone with all its memory (system and GPU). A job it was
// running fails with an error saying the engine was stopped, which is not
// a crash. The next job starts a new child.
func (c *Client) Stop() error {
	c.stop(true)
	return nil
}

func (c *Client) stop(say bool) {
	c.mu.Lock()
	ch := c.ch
	c.mu.Unlock()
	if ch == nil {
		return
	}
	ch.stopping.Store(true)
	ch.kill()
	<-ch.done
	c.forget(ch)
	if say {
		c.log.Info(fmt.Sprintf("%s was stopped (process %d), giving back its memory", c.cfg.What, ch.pid), "op", "engine-host")
	}
}

// Reload starts a fresh child so that it looks for its runtime again (a
// runtime pack was just installed): it waits for a running job or release
// to end, stops the running child, starts a new one and takes Kinds and
// LoadError from its hello. A child that serves nothing is not kept. The
// error is the new child's start failure, or its LoadError.
func (c *Client) Reload(ctx context.Context) error {
	c.op.Lock()
	defer c.op.Unlock()
	c.stopIdle()
	c.stop(false)
	_, err := c.ensureChild(ctx)
	if err == nil {
		err = c.LoadError()
	}
	if len(c.Kinds()) == 0 {
		c.stop(false)
	} else {
		c.armIdle()
	}
	return err
}

// Close stops the child for good; later runs start no new one.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.stopIdle()
	return c.Stop()
}

// forget drops ch as the running child once it is gone.
func (c *Client) forget(ch *child) {
	c.mu.Lock()
	if c.ch == ch {
		c.ch = nil
		c.stats = Stats{}
	}
	c.mu.Unlock()
}

// ensureChild returns the running child, starting one first when none
// runs. Called with c.op held.
func (c *Client) ensureChild(ctx context.Context) (*child, error) {
	c.mu.Lock()
	ch, closed := c.ch, c.closed
	c.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("%s is shut down", c.cfg.What)
	}
	if ch != nil {
		select {
		case <-ch.done:
			c.forget(ch)
		default:
			return ch, nil
		}
	}
	ch, hello, err := c.start(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.startErr = err
	if err != nil {
		return nil, err
	}
	c.ch, c.hello, c.started = ch, hello, true
	c.starts++
	return ch, nil
}

// start runs a new child and waits for its hello.
func (c *Client) start(ctx context.Context) (*child, Hello, error) {
	if len(c.cfg.Command) == 0 {
		return nil, Hello{}, fmt.Errorf("%s has no program to run", c.cfg.What)
	}
	begun := time.Now()
	cmd := exec.Command(c.cfg.Command[0], c.cfg.Command[1:]...)
	// ggml_abort would try to attach a debugger for a backtrace, which is
	// slow and buries the cause.
	cmd.Env = append(append(os.Environ(), "GGML_NO_BACKTRACE=1"), c.cfg.Env...)
	ch := &child{stderr: &tail{log: c.log, what: c.cfg.What}, done: make(chan struct{}), readDone: make(chan struct{}), waiters: map[uint64]chan frame{}}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, Hello{}, err
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, Hello{}, err
	}
	cmd.Stdout = pw
	cmd.Stderr = ch.stderr
	cmd.WaitDelay = 2 * time.Second
	lifeline(cmd)
	if err := startCmd(cmd); err != nil {
		pr.Close()
		pw.Close()
		return nil, Hello{}, fmt.Errorf("%s could not start: %w", c.cfg.What, err)
	}
	pw.Close()
	ch.cmd, ch.pid, ch.stdin = cmd, cmd.Process.Pid, stdin
	if err := adopt(cmd); err != nil {
		c.log.Warn("the engine process may outlive this one: "+err.Error(), "op", "engine-host", "pid", ch.pid)
	}
	hello := make(chan frame, 1)
	go ch.read(pr, c, hello)
	go ch.reap()

	c.mu.Lock()
	init := c.cfg.Init // SetThreads changes it under c.mu
	c.mu.Unlock()
	if err := ch.send(header{T: msgInit, Init: &init}, nil); err != nil {
		ch.kill()
		<-ch.done
		return nil, Hello{}, c.startFailure(ch, "")
	}
	timer := time.NewTimer(c.cfg.Limits.Start)
	defer timer.Stop()
	select {
	case f := <-hello:
		h := *f.h.Hello
		c.log.Info(fmt.Sprintf("%s started (process %d) in %d ms", c.cfg.What, ch.pid, time.Since(begun).Milliseconds()),
			"op", "engine-host", "pid", ch.pid, "kinds", fmt.Sprint(h.Kinds))
		return ch, h, nil
	case <-ch.done:
		return nil, Hello{}, c.startFailure(ch, "")
	case <-timer.C:
		ch.kill()
		<-ch.done
		return nil, Hello{}, c.startFailure(ch, fmt.Sprintf("did not say hello within %s", c.cfg.Limits.Start))
	case <-ctx.Done():
		ch.kill()
		<-ch.done
		return nil, Hello{}, ctx.Err()
	}
}

func (c *Client) startFailure(ch *child, why string) error {
	if why == "" {
		why = "ended while starting (" + ch.exit() + ")"
	}
	if l := ch.stderr.reason(); l != "" {
		why += ": " + l
	}
	return fmt.Errorf("%s could not start: %s", c.cfg.What, why)
}

// armIdle starts the keep-alive count after a job or a release: an idle
// child exits when it ends.
func (c *Client) armIdle() {
	if c.cfg.KeepAlive < 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.idleTimer != nil {
		c.idleTimer.Stop()
	}
	c.idleGen++
	gen := c.idleGen
	c.idleTimer = time.AfterFunc(c.cfg.KeepAlive, func() { c.idleExit(gen) })
}

func (c *Client) stopIdle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.idleGen++
	if c.idleTimer != nil {
		c.idleTimer.Stop()
		c.idleTimer = nil
	}
}

// idleExit lets an idle child go: it closes the child's input, which the
// child takes as "exit", and stops it if it does not.
func (c *Client) idleExit(gen int) {
	if !c.op.TryLock() {
		return // a job or release is under way; it re-arms the count
	}
	defer c.op.Unlock()
	c.mu.Lock()
	ch := c.ch
	stale := gen != c.idleGen
	c.mu.Unlock()
	if stale || ch == nil {
		return
	}
	ch.stopping.Store(true)
	ch.stdin.Close()
	timer := time.NewTimer(c.cfg.Limits.Reply)
	defer timer.Stop()
	select {
	case <-ch.done:
	case <-timer.C:
		ch.kill()
		<-ch.done
	}
	c.forget(ch)
	c.log.Info(fmt.Sprintf("%s was idle for %s; its process %d exited and gave back its memory", c.cfg.What, c.cfg.KeepAlive, ch.pid), "op", "engine-host")
}

// child is one running engine process.
type child struct {
	cmd    *exec.Cmd
	pid    int
	stdin  io.WriteCloser
	wmu    sync.Mutex
	stderr *tail

	done     chan struct{} // closed by reap once the process is gone
	readDone chan struct{} // closed when its stdout has ended
	state    *os.ProcessState
	werr     error

	stopping atomic.Bool

	mu      sync.Mutex
	nextID  uint64
	waiters map[uint64]chan frame
}

func (ch *child) send(h header, body []byte) error {
	ch.wmu.Lock()
	defer ch.wmu.Unlock()
	return writeFrame(ch.stdin, h, body)
}

func (ch *child) wait() (uint64, <-chan frame) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ch.nextID++
	r := make(chan frame, 64)
	ch.waiters[ch.nextID] = r
	return ch.nextID, r
}

func (ch *child) unwait(id uint64) {
	ch.mu.Lock()
	delete(ch.waiters, id)
	ch.mu.Unlock()
}

// read dispatches the child's frames until its stdout ends: hello to the
// starter, stats and logs to the client, the rest to whoever waits for
// their id. Progress is dropped when its waiter is behind; a final frame
// is never dropped, nor progress that carries reply text (it is part of a
// streamed reply; the waiter hands it on without blocking).
func (ch *child) read(r io.ReadCloser, c *Client, hello chan<- frame) {
	defer close(ch.readDone)
	defer r.Close()
	for {
		f, err := readFrame(r)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrClosed) {
				c.log.Warn(fmt.Sprintf("%s sent something unreadable (%v); stopping it", c.cfg.What, err), "op", "engine-host", "pid", ch.pid)
				ch.kill()
			}
			return
		}
		switch f.h.T {
		case msgHello:
			if f.h.Hello != nil {
				select {
				case hello <- f:
				default:
				}
			}
		case msgStats:
			if f.h.Stats != nil {
				c.mu.Lock()
				if c.ch == ch || c.ch == nil {
					c.stats = *f.h.Stats
				}
				c.mu.Unlock()
			}
		case msgLog:
			if l := f.h.Log; l != nil {
				args := make([]any, 0, 2*len(l.Attrs)+2)
				for k, v := range l.Attrs {
					args = append(args, k, v)
				}
				args = append(args, "pid", ch.pid)
				c.log.Log(context.Background(), l.Level, l.Msg, args...)
			}
		default:
			ch.mu.Lock()
			w := ch.waiters[f.h.ID]
			ch.mu.Unlock()
			if w == nil {
				continue
			}
			switch {
			case f.h.T == msgProgress && (f.h.Progress == nil || f.h.Progress.Text == ""):
				select {
				case w <- f:
				default:
				}
			case f.h.T == msgProgress:
				// Its waiter reads until the run's final frame, which
				// comes after every progress frame, or until the process
				// is gone.
				select {
				case w <- f:
				case <-ch.done:
				}
			default:
				w <- f
			}
		}
	}
}

// reap is the one goroutine that waits for the process; done closes when
// it is gone.
func (ch *child) reap() {
	err := ch.cmd.Wait()
	ch.state, ch.werr = ch.cmd.ProcessState, err
	close(ch.done)
}

// drained waits, briefly, until the frames a gone process wrote have all
// been read.
func (ch *child) drained() {
	t := time.NewTimer(2 * time.Second)
	defer t.Stop()
	select {
	case <-ch.readDone:
	case <-t.C:
	}
}

func (ch *child) kill() {
	if ch.cmd != nil && ch.cmd.Process != nil {
		_ = ch.cmd.Process.Kill()
	}
}

// exit says how the process ended ("signal: killed", "exit status 2").
// Valid once done is closed.
func (ch *child) exit() string {
	if ch.state != nil {
		return ch.state.String()
	}
	if ch.werr != nil {
		return ch.werr.Error()
	}
	return "ended"
}

// tail keeps the last lines of the child's stderr, and the first lines
// that read like the cause of a crash, and logs each line.
type tail struct {
	log  *slog.Logger
	what string

	mu      sync.Mutex
	partial []byte
	lines   []string
	marks   []string // the first lines that name a failure
	dump    bool     // Go's crash report began; no more marks
}

// goDump reports whether line opens the Go runtime's crash report:
// "SIGABRT: abort", "SIGSEGV: segmentation violation", "fatal error: …",
// "panic: …".
func goDump(line string) bool {
	if strings.HasPrefix(line, "panic: ") || strings.HasPrefix(line, "fatal error: ") {
		return true
	}
	sig, _, ok := strings.Cut(line, ": ")
	return ok && strings.HasPrefix(sig, "SIG") && strings.ToUpper(sig) == sig && !strings.Contains(sig, " ")
}

const (
	tailLines = 40
	markLines = 4
)

// crashMarks are the words that open what a dying process prints: a C++
// exception's terminate message and what(), a ggml or C assertion, a Go
// panic or fatal signal.
var crashMarks = []string{"terminate called", "what():", "assert", "error", "abort", "panic:", "fatal", "sigsegv", "sigabrt", "sigbus", "sigill", "exception"}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.partial = append(t.partial, p...)
	for {
		i := bytes.IndexByte(t.partial, '\n')
		if i < 0 {
			break
		}
		line := strings.TrimSpace(strings.ToValidUTF8(string(t.partial[:i]), "?"))
		t.partial = t.partial[i+1:]
		if line == "" {
			continue
		}
		t.log.Info(t.what+" printed: "+line, "op", "engine-host")
		t.lines = append(t.lines, line)
		if len(t.lines) > tailLines {
			t.lines = t.lines[len(t.lines)-tailLines:]
		}
		if len(t.marks) < markLines && !t.dump {
			if goDump(line) {
				// Go's own report of a fatal signal or panic: its first
				// line says which; the stack dump after it is noise here.
				t.marks = append(t.marks, line)
				t.dump = true
				continue
			}
			low := strings.ToLower(line)
			for _, m := range crashMarks {
				if strings.Contains(low, m) {
					t.marks = append(t.marks, line)
					break
				}
			}
		}
	}
	if len(t.partial) > 64<<10 {
		t.partial = t.partial[len(t.partial)-(64<<10):]
	}
	return len(p), nil
}

// reason is what the child printed about why it ended: the first lines
// that name a failure, else its last few lines, joined with " | " and
// bounded to 600 characters.
func (t *tail) reason() string {
	t.mu.Lock()
	lines := slices.Clone(t.marks)
	if len(lines) == 0 {
		lines = slices.Clone(t.lines)
		if p := strings.TrimSpace(string(t.partial)); p != "" {
			lines = append(lines, p)
		}
		if len(lines) > 3 {
			lines = lines[len(lines)-3:]
		}
	}
	t.mu.Unlock()
	s := strings.Join(lines, " | ")
	if r := []rune(s); len(r) > 600 {
		s = string(r[:600]) + "…"
	}
	return s
}
