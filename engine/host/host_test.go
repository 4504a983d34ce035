package host_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/engine/host"
	"github.com/minisgg/studio-worker/engine/host/hosted"
)

// fakeEnv makes the test binary a child serving fakeEngine; hosted's own
// variable makes it serve the real engines.
const fakeEnv = "HOST_TEST_FAKE_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(fakeEnv) != "" {
		os.Exit(host.ChildMain([]string{"fake"}, map[string]host.Builder{"fake": buildFake}, os.Stderr))
	}
	hosted.RunChildIfAsked()
	if os.Getenv(parentEnv) != "" {
		os.Exit(actAsParent())
	}
	os.Exit(m.Run())
}

// fakeEngine is an engine whose behaviour the prompt picks, run in a real
// child process: it stands for native code that throws, aborts, exits or
// hangs, which a real library does only on inputs that get fixed.
type fakeEngine struct{ held []byte }

func buildFake(host.Init, *slog.Logger) (engine.Engine, host.Hello) {
	return &fakeEngine{}, host.Hello{Kinds: []engine.TaskKind{engine.KindLLM}, Runtime: "fake"}
}

func (*fakeEngine) Name() engine.EngineName     { return engine.EngineLlamaCpp }
func (*fakeEngine) Kinds() []engine.TaskKind    { return []engine.TaskKind{engine.KindLLM} }
func (f *fakeEngine) Release() error            { f.held = nil; return nil }
func (f *fakeEngine) ResidentVRAMBytes() uint64 { return uint64(len(f.held)) }
func (f *fakeEngine) ResidentModel() string {
	if f.held == nil {
		return ""
	}
	return "held.gguf"
}

func (f *fakeEngine) Run(ctx context.Context, job engine.Job, progress engine.ProgressFunc) (engine.Result, error) {
	prompt := job.Task.Prompt()
	progress(engine.Progress{Phase: engine.PhaseLoad, Done: 1, Total: 1})
	progress(engine.Progress{Phase: engine.PhaseGenerate, Done: 0, Total: 1})
	switch prompt {
	case "abort":
		fmt.Fprintln(os.Stderr, "loading tensors")
		fmt.Fprintln(os.Stderr, "terminate called after throwing an instance of 'std::length_error'")
		fmt.Fprintln(os.Stderr, "  what():  vector::_M_default_append")
		abortSelf()
	case "exit":
		fmt.Fprintln(os.Stderr, "GGML_ASSERT(n_tensors <= max) failed")
		os.Exit(3)
	case "hang":
		select {} // ignores ctx too
	case "wait":
		<-ctx.Done()
		return engine.Result{}, ctx.Err()
	case "hold":
		// 64 MiB touched, as a loaded model is.
		f.held = make([]byte, 64<<20)
		for i := range f.held {
			f.held[i] = byte(i)
		}
		progress(engine.Progress{Phase: engine.PhaseGenerate, Done: 1, Total: 2})
		<-ctx.Done()
		return engine.Result{}, ctx.Err()
	case "invalid":
		return engine.Result{}, engine.Invalid("messages[0].content", "the message is %s", "not allowed")
	case "bad file":
		return engine.Result{}, &engine.JobError{Field: "modelSource.files[0]", Reason: "llama.cpp: bad magic",
			Err: &engine.ModelFileError{Path: "/models/m/tiny.gguf", Reason: "llama.cpp: bad magic"}}
	case "image":
		return engine.Result{Bytes: []byte("\x89PNG\x00bytes"), Ext: "png", Stats: engine.Stats{Images: 1}}, nil
	}
	doc, _ := json.Marshal(map[string]string{"echo": prompt})
	return engine.Result{JSON: doc, Stats: engine.Stats{CompletionTokens: 1}}, nil
}

// fakeClient starts a child serving fakeEngine.
func fakeClient(t *testing.T, limits host.Limits, keepAlive time.Duration) *host.Client {
	t.Helper()
	c := host.New(host.Config{
		Command: []string{os.Args[0]}, Env: []string{fakeEnv + "=1"},
		Init: host.Init{Engine: engine.EngineLlamaCpp}, What: "the text engine",
		Log: slog.New(slog.DiscardHandler), Limits: limits, KeepAlive: keepAlive,
	})
	t.Cleanup(func() { c.Close() })
	if err := c.LoadError(); err != nil {
		t.Fatalf("the fake child did not start: %v", err)
	}
	return c
}

func chatJob(id, prompt string) engine.Job {
	return engine.Job{ID: id, Model: "tiny.gguf", Task: engine.Task{Kind: engine.KindLLM,
		LLM: &engine.LLMParams{Messages: []engine.ChatMessage{{Role: "user", Content: prompt}}}},
		Source: engine.ModelSource{Engine: engine.EngineLlamaCpp}}
}

func TestResultsAndErrorsCrossThePipeWhole(t *testing.T) {
	c := fakeClient(t, host.Limits{}, -1)
	if got := c.Kinds(); len(got) != 1 || got[0] != engine.KindLLM {
		t.Fatalf("kinds %v", got)
	}
	res, err := c.Run(context.Background(), chatJob("j1", "hi"), nil)
	if err != nil || string(res.JSON) != `{"echo":"hi"}` || res.Stats.CompletionTokens != 1 {
		t.Fatalf("json result %q %+v, %v", res.JSON, res.Stats, err)
	}
	res, err = c.Run(context.Background(), chatJob("j2", "image"), nil)
	if err != nil || string(res.Bytes) != "\x89PNG\x00bytes" || res.Ext != "png" || res.JSON != nil {
		t.Fatalf("bytes result %q %q, %v", res.Bytes, res.Ext, err)
	}
	_, err = c.Run(context.Background(), chatJob("j3", "invalid"), nil)
	var je *engine.JobError
	if !errors.As(err, &je) || je.Field != "messages[0].content" || engine.IsRetryable(err) {
		t.Fatalf("a job error must stay one across the pipe (retryable=false): %#v", err)
	}
	if err.Error() != "messages[0].content: the message is not allowed" {
		t.Errorf("text %q", err)
	}
	// A model file that failed to load keeps its path, so that the parent's
	// runner can remove it from the store.
	_, err = c.Run(context.Background(), chatJob("j3b", "bad file"), nil)
	var mf *engine.ModelFileError
	if !errors.As(err, &mf) || mf.Path != "/models/m/tiny.gguf" || engine.IsRetryable(err) || !errors.As(err, &je) || je.Field != "modelSource.files[0]" {
		t.Fatalf("a model file error must stay one across the pipe: %#v", err)
	}
	_, err = c.Run(context.Background(), engine.Job{ID: "j4", Task: engine.Task{Kind: engine.KindImage, Image: &engine.ImageParams{}}}, nil)
	if !engine.IsCannotServe(err) {
		t.Errorf("a kind the child does not serve: %v", err)
	}
	if c.Starts() != 1 {
		t.Errorf("five jobs took %d children, want 1", c.Starts())
	}
}

func TestCrashFailsTheJobWithTheChildsLastLines(t *testing.T) {
	c := fakeClient(t, host.Limits{}, -1)
	for _, tc := range []struct{ prompt, exit, lines string }{
		// Go's runtime catches the SIGABRT, prints it and exits 2, as it
		// does when native code aborts.
		{"abort", "exit status 2", "terminate called after throwing an instance of 'std::length_error' | what():  vector::_M_default_append | SIGABRT: abort"},
		{"exit", "exit status 3", "GGML_ASSERT(n_tensors <= max) failed"},
	} {
		_, err := c.Run(context.Background(), chatJob("j-"+tc.prompt, tc.prompt), nil)
		var ce *engine.CrashError
		if !errors.As(err, &ce) || !engine.IsRetryable(err) {
			t.Fatalf("%s: want a retryable crash, got %#v", tc.prompt, err)
		}
		want := "the text engine crashed while generating with model tiny.gguf (" + tc.exit + "): " + tc.lines
		if err.Error() != want {
			t.Errorf("%s:\n got %q\nwant %q", tc.prompt, err, want)
		}
		// The next job gets a fresh child.
		if res, err := c.Run(context.Background(), chatJob("next", "ok"), nil); err != nil || !strings.Contains(string(res.JSON), "ok") {
			t.Fatalf("job after the %s crash: %v", tc.prompt, err)
		}
	}
	if c.Starts() != 3 {
		t.Errorf("two crashes should have taken 3 children in all, took %d", c.Starts())
	}
}

func TestHangingChildIsStopped(t *testing.T) {
	c := fakeClient(t, host.Limits{Generate: 200 * time.Millisecond}, -1)
	pid := c.PID()
	_, err := c.Run(context.Background(), chatJob("j1", "hang"), nil)
	var ce *engine.CrashError
	if !errors.As(err, &ce) || ce.Hung != 200*time.Millisecond || !engine.IsRetryable(err) {
		t.Fatalf("want a retryable hang, got %#v", err)
	}
	if want := "the text engine stopped answering (nothing for 200ms) and was stopped while generating with model tiny.gguf"; err.Error() != want {
		t.Errorf("got %q", err)
	}
	if alive(pid) {
		t.Errorf("the hung child %d is still there", pid)
	}
	if _, err := c.Run(context.Background(), chatJob("j2", "ok"), nil); err != nil {
		t.Fatalf("job after the hang: %v", err)
	}
}

func TestCancelReachesTheChild(t *testing.T) {
	c := fakeClient(t, host.Limits{}, -1)
	ctx, cancel := context.WithCancel(context.Background())
	_, err := c.Run(ctx, chatJob("j1", "wait"), func(p engine.Progress) {
		if p.Phase == engine.PhaseGenerate {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v", err)
	}
	if c.Starts() != 1 || c.PID() == 0 {
		t.Errorf("a cancelled job should leave the child up (starts %d, pid %d)", c.Starts(), c.PID())
	}
}

func TestStopGivesTheMemoryBack(t *testing.T) {
	c := fakeClient(t, host.Limits{}, -1)
	pid := c.PID()
	before := rssKB(t, pid)
	holding := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		_, err := c.Run(context.Background(), chatJob("j1", "hold"), func(p engine.Progress) {
			if p.Phase == engine.PhaseGenerate && p.Done == 1 {
				close(holding)
			}
		})
		errc <- err
	}()
	<-holding
	held := rssKB(t, pid)
	if held < before+60<<10 {
		t.Fatalf("the child should hold 64 MiB more: %d kB before, %d kB after", before, held)
	}
	start := time.Now()
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if alive(pid) {
		t.Fatalf("process %d still there after Stop", pid)
	}
	if took > 5*time.Second {
		t.Errorf("stopping took %s", took)
	}
	t.Logf("child %d held %d kB; stopped and gone in %s", pid, held, took)
	err := <-errc
	var ce *engine.CrashError
	if err == nil || errors.As(err, &ce) || err.Error() != "the text engine was stopped" {
		t.Fatalf("a stopped job is not a crash: %#v", err)
	}
	if c.ResidentVRAMBytes() != 0 || c.PID() != 0 {
		t.Errorf("after Stop: resident %d, pid %d", c.ResidentVRAMBytes(), c.PID())
	}
	if _, err := c.Run(context.Background(), chatJob("j2", "ok"), nil); err != nil {
		t.Fatalf("job after Stop: %v", err)
	}
}

func TestIdleChildExitsAfterKeepAlive(t *testing.T) {
	c := fakeClient(t, host.Limits{}, 50*time.Millisecond)
	if _, err := c.Run(context.Background(), chatJob("j1", "ok"), nil); err != nil {
		t.Fatal(err)
	}
	done := c.Done()
	if done == nil {
		t.Skip("the child exited before the test could watch it")
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the idle child did not exit")
	}
	if _, err := c.Run(context.Background(), chatJob("j2", "ok"), nil); err != nil {
		t.Fatalf("job after the idle exit: %v", err)
	}
	if c.Starts() < 2 {
		t.Errorf("the next job should start a new child; starts %d", c.Starts())
	}
}

// rssKB reads VmRSS of pid from /proc.
func rssKB(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Skipf("needs /proc to read a process's RSS: %v", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			var kb int
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), &kb)
			return kb
		}
	}
	t.Fatalf("no VmRSS for %d", pid)
	return 0
}

// alive says whether pid still exists as a process that has not exited.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// "pid (comm) S ...": a zombie has exited and holds no memory.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && len(s) > i+2 {
		return s[i+2] != 'Z'
	}
	return true
}

// parentEnv makes the test binary a parent that starts a fake child, sets
// it to work on a job that never ends, prints the child's pid and waits to
// be killed.
const parentEnv = "HOST_TEST_PARENT"

func actAsParent() int {
	c := host.New(host.Config{
		Command: []string{os.Args[0]}, Env: []string{fakeEnv + "=1"},
		Init: host.Init{Engine: engine.EngineLlamaCpp}, Log: slog.New(slog.DiscardHandler), KeepAlive: -1,
	})
	if err := c.LoadError(); err != nil {
		fmt.Println("error", err)
		return 1
	}
	started := make(chan struct{})
	go c.Run(context.Background(), chatJob("forever", "hang"), func(p engine.Progress) {
		if p.Phase == engine.PhaseGenerate {
			select {
			case <-started:
			default:
				close(started)
			}
		}
	})
	<-started
	fmt.Println(c.PID())
	select {}
}
