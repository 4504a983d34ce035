package llama

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	yz "github.com/hybridgroup/yzma/pkg/llama"

	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/engine/gguf"
)

// A GPU backend that fails inside ggml does not return an error: it calls
// ggml_abort, which ends the whole process (docs/gpu-checks.md: a CUDA build
// whose PTX the driver cannot compile aborts in the first llama_decode). An
// engine inside the worker cannot survive that, so a GPU runtime is first
// loaded, and made to decode, in a child process; only when the child comes
// back well does the worker load the runtime itself.

// RuntimeChecker tries the runtime in dir away from this process. nil means
// it ran a model on it; otherwise the error says what went wrong, in words
// (a *CheckError from ChildChecker).
type RuntimeChecker func(ctx context.Context, dir string) error

var checker atomic.Pointer[RuntimeChecker]

// SetRuntimeChecker makes LoadRuntime try every GPU runtime with c before
// loading it (nil: load without trying, as a program that cannot start a
// child of itself must). The program sets it once at start-up, before the
// engine loads.
func SetRuntimeChecker(c RuntimeChecker) {
	if c == nil {
		checker.Store(nil)
		return
	}
	checker.Store(&c)
}

func currentChecker() RuntimeChecker {
	if p := checker.Load(); p != nil {
		return *p
	}
	return nil
}

// CheckTimeout bounds a child's check: loading the backend, compiling its
// GPU kernels on first use and one tiny decode. A CUDA driver compiling PTX
// for the first time is the slow part.
const CheckTimeout = 2 * time.Minute

// CheckError is how a runtime's check in a child process failed.
type CheckError struct {
	Crashed  bool          // the child died (a signal, or an exit code other than 1)
	Exit     string        // how it ended: "signal: aborted", "exit status 1"
	TimedOut time.Duration // non-zero when it was stopped after this long
	Line     string        // the line of its output that says why
}

func (e *CheckError) Error() string {
	var s string
	switch {
	case e.TimedOut > 0:
		s = fmt.Sprintf("did not finish its check within %s", e.TimedOut)
	case e.Crashed:
		s = fmt.Sprintf("crashed on this GPU (%s)", e.Exit)
	default:
		s = "failed its check"
	}
	if e.Line != "" {
		s += ": " + e.Line
	}
	return s
}

// ChildChecker runs `exe args... <dir>` and judges it by how it ends: exit
// 0 is a working runtime, exit 1 a failure it explained on stderr, anything
// else a crash. The studio-worker program passes itself and its hidden
// `runtime-check` command, whose body is RuntimeCheckMain.
func ChildChecker(exe string, args ...string) RuntimeChecker {
	return func(ctx context.Context, dir string) error {
		ctx, cancel := context.WithTimeout(ctx, CheckTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, exe, append(append([]string(nil), args...), dir)...)
		// ggml_abort would otherwise try to attach a debugger for a
		// backtrace, which is slow and buries the cause in its output.
		cmd.Env = append(os.Environ(), "GGML_NO_BACKTRACE=1")
		var stdout bytes.Buffer
		stderr := &tailBuffer{max: 64 << 10}
		cmd.Stdout, cmd.Stderr = &stdout, stderr
		cmd.WaitDelay = 5 * time.Second
		err := cmd.Run()
		if err == nil {
			return nil
		}
		line := reasonLine(stderr.String())
		if ctx.Err() == context.DeadlineExceeded {
			return &CheckError{TimedOut: CheckTimeout, Line: line}
		}
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			return fmt.Errorf("could not start its check: %v", err)
		}
		ce := &CheckError{Exit: ee.ProcessState.String(), Line: line}
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			ce.Crashed = true
		} else if ee.ExitCode() != 1 {
			ce.Crashed = true
		}
		return ce
	}
}

// failPrefix starts the child's last line when it fails in an orderly way.
const failPrefix = "runtime-check failed: "

// reasonLine picks the line of a child's stderr that says why it failed:
// its own failure line; else the first line that reads "... error: ..."
// (ggml prints the cause first, then where it aborted); else the last line
// that mentions an error; else the last line.
func reasonLine(out string) string {
	lines := strings.Split(strings.ReplaceAll(out, "\r\n", "\n"), "\n")
	var own, firstColon, lastErr, last string
	for _, l := range lines {
		l = strings.TrimSpace(l)
		if l == "" {
			continue
		}
		last = l
		lower := strings.ToLower(l)
		switch {
		case strings.HasPrefix(l, failPrefix):
			own = strings.TrimPrefix(l, failPrefix)
		case strings.Contains(lower, "error:") && firstColon == "":
			firstColon = l
		case strings.Contains(lower, "error"):
			lastErr = l
		}
	}
	for _, l := range []string{own, firstColon, lastErr, last} {
		if l != "" {
			if r := []rune(l); len(r) > 300 {
				l = string(r[:300]) + "…"
			}
			return l
		}
	}
	return ""
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

// chooseRuntime decides which folder to load: found, once a GPU runtime in
// it has passed check; else a CPU runtime from the other places a runtime
// is looked for (the folder beside it first); else none, with the reason.
func chooseRuntime(ctx context.Context, found libCandidate, explicit string, check RuntimeChecker) (RuntimeInfo, error) {
	info, err := ReadRuntimeInfo(found.dir)
	info.Found = found.from
	info.Problem = found.problem
	if err != nil {
		currentLog().Warn(err.Error()+"; judging the runtime by its files", "op", "llama.load")
	}
	if !info.GPU() || check == nil {
		return info, nil
	}
	currentLog().Info(fmt.Sprintf("trying the %s in %s in a child process first", info.what(), found.dir), "op", "llama.load")
	cerr := check(ctx, found.dir)
	if cerr == nil {
		return info, nil
	}
	problem := fmt.Sprintf("the %s runtime in %s %v", info.Accel, found.dir, cerr)
	if info.AddOn != "" {
		problem = fmt.Sprintf("the %s add-on (%s) in %s %v", info.Accel, info.AddOn, found.dir, cerr)
	}
	cands, _ := libCandidates(explicit)
	cands = append([]libCandidate{{dir: filepath.Join(filepath.Dir(found.dir), engine.PlatformVariant()), from: "beside it"}}, cands...)
	for _, c := range cands {
		if sameDir(c.dir, found.dir) || hasLib(c.dir) != "" {
			continue
		}
		alt, err := ReadRuntimeInfo(c.dir)
		if err != nil || alt.GPU() {
			continue
		}
		if abs, err := filepath.Abs(c.dir); err == nil {
			alt.Dir = abs
		}
		alt.Found = c.from
		alt.Problem = problem + "; using the CPU runtime in " + alt.Dir + " instead"
		return alt, nil
	}
	info.Problem = problem
	if info.AddOn != "" && thisOS() == "linux" {
		return info, errors.New(problem + "; text jobs are off: remove the studio-worker-vulkan package to run them on the CPU")
	}
	return info, errors.New(problem + "; text jobs are off until a llama.cpp runtime that works on this computer is installed (a CPU runtime beside it would be used instead)")
}

// RuntimeCheckMain is the body of `studio-worker runtime-check <dir>`, run
// as a child by ChildChecker: it loads the runtime in dir, lists the GPUs
// ggml sees, and generates a few tokens from a tiny model with every layer
// offloaded. Exit 0 when that worked, 1 with a last line on stderr saying
// why when it did not, and whatever the crash gives when ggml aborts.
//
// With --need-gpu first (a runtime pack fetched for this computer's GPU,
// engine/packs), a GPU build whose backend sees no GPU fails too: it would
// only run on the CPU, which the CPU pack does with a smaller download.
func RuntimeCheckMain(args []string, stdout, stderr io.Writer) int {
	needGPU := len(args) > 0 && args[0] == NeedGPUFlag
	if needGPU {
		args = args[1:]
	}
	if len(args) != 1 || args[0] == "" {
		fmt.Fprintln(stderr, failPrefix+"usage: runtime-check [--need-gpu] <llama library folder>")
		return 2
	}
	err := CheckRuntime(args[0], stdout, stderr)
	if err == nil && needGPU {
		if info := Runtime(); info.GPU() && len(info.Devices) == 0 {
			err = fmt.Errorf("its %s backend sees no GPU on this computer, so it would run on the CPU", info.Accel)
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, failPrefix+err.Error())
		return 1
	}
	return 0
}

// NeedGPUFlag makes `runtime-check` fail a GPU build whose backend sees no
// GPU (see RuntimeCheckMain).
const NeedGPUFlag = "--need-gpu"

// CheckRuntime loads the runtime in dir into this process (no search, no
// child: it is the child) and runs a tiny model on it, all layers on the
// GPU when there is one. It reports each step on out and llama.cpp's
// warnings and errors on errOut.
func CheckRuntime(dir string, out, errOut io.Writer) error {
	setLogTarget(slog.New(&lineHandler{w: errOut, min: slog.LevelWarn}))
	if why := hasLib(dir); why != "" {
		return fmt.Errorf("%s: %s", dir, why)
	}
	info, err := ReadRuntimeInfo(dir)
	if err != nil {
		fmt.Fprintln(errOut, err.Error())
	}
	runtimeState.mu.Lock()
	if runtimeState.loaded {
		runtimeState.mu.Unlock()
		return errors.New("a llama.cpp runtime is already loaded in this process")
	}
	if err := loadLibs(dir); err != nil {
		runtimeState.mu.Unlock()
		return err
	}
	info.Loaded = true
	runtimeState.loaded, runtimeState.dir = true, dir
	info.Devices, err = devicesLocked()
	runtimeState.info = info
	runtimeState.mu.Unlock()
	if err != nil {
		return err
	}
	fmt.Fprintln(out, info.Summary())

	tmp, err := os.MkdirTemp("", "studio-worker-check-")
	if err != nil {
		return fmt.Errorf("no temporary folder for the test model: %v", err)
	}
	defer os.RemoveAll(tmp)
	path, err := gguf.EnsureIn(tmp, gguf.Tiny())
	if err != nil {
		return fmt.Errorf("cannot write the test model: %v", err)
	}
	llamaLog.mark()
	mp := yz.ModelDefaultParams()
	mp.NGpuLayers = 999 // every layer on the GPU: that is what is being tried
	model, err := yz.ModelLoadFromFile(path, mp)
	if err != nil {
		if r := llamaLog.firstError(); r != "" {
			return fmt.Errorf("loading a test model: %s", r)
		}
		return fmt.Errorf("loading a test model: %v", err)
	}
	defer yz.ModelFree(model)
	cp := yz.ContextDefaultParams()
	cp.NCtx, cp.NBatch, cp.NUbatch, cp.NSeqMax = 128, 64, 64, 1
	cp.NThreads, cp.NThreadsBatch = 1, 1
	ctx, err := yz.InitFromModel(model, cp)
	if err != nil {
		if r := llamaLog.firstError(); r != "" {
			return fmt.Errorf("creating a context: %s", r)
		}
		return fmt.Errorf("creating a context: %v", err)
	}
	defer yz.Free(ctx)
	vocab := yz.ModelGetVocab(model)
	tokens := yz.Tokenize(vocab, "Hello, GPU.", true, false)
	if len(tokens) == 0 {
		return errors.New("the test prompt produced no tokens")
	}
	if rc, err := yz.Decode(ctx, yz.BatchGetOne(tokens)); err != nil || rc != 0 {
		return decodeError("the test prompt", rc, err)
	}
	sampler := yz.SamplerChainInit(yz.SamplerChainDefaultParams())
	defer yz.SamplerFree(sampler)
	yz.SamplerChainAdd(sampler, yz.SamplerInitGreedy())
	one := make([]yz.Token, 1)
	n := 0
	for ; n < 4; n++ {
		tok := yz.SamplerSample(sampler, ctx, -1)
		if yz.VocabIsEOG(vocab, tok) {
			break
		}
		one[0] = tok
		if rc, err := yz.Decode(ctx, yz.BatchGetOne(one)); err != nil || rc != 0 {
			return decodeError("a test token", rc, err)
		}
	}
	where := "on the CPU (ggml sees no GPU)"
	if len(info.Devices) > 0 {
		where = "with every layer offloaded to " + info.Devices[0].Name
	}
	fmt.Fprintf(out, "decoded a %d-token prompt and %d generated tokens %s\n", len(tokens), n, where)
	return nil
}

// lineHandler writes each record's message as one plain line: the child's
// stderr is read by a person or by reasonLine, not by a log parser.
type lineHandler struct {
	mu  sync.Mutex
	w   io.Writer
	min slog.Level
}

func (h *lineHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.min }
func (h *lineHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := fmt.Fprintln(h.w, r.Message)
	return err
}
func (h *lineHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *lineHandler) WithGroup(string) slog.Handler      { return h }
