//go:build linux

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/minisgg/studio-worker/app/stack"
	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/engine/gguf"
	"github.com/minisgg/studio-worker/settings"
	"github.com/minisgg/studio-worker/studio"
	"github.com/minisgg/studio-worker/studio/devstudio"
)

// workerProc is `studio-worker run` as a process of its own (this test
// binary standing in for the program, see TestMain), with its log read
// line by line.
type workerProc struct {
	cmd   *exec.Cmd
	lines chan string
	log   strings.Builder
}

func startWorker(t *testing.T, env []string, args string) *workerProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(env, reexecEnv+"="+args)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w := &workerProc{cmd: cmd, lines: make(chan string, 1024)}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			select {
			case w.lines <- sc.Text():
			default: // nobody waits for more
			}
		}
		close(w.lines)
	}()
	t.Cleanup(func() {
		if w.cmd.ProcessState == nil {
			w.cmd.Process.Kill()
			w.cmd.Wait()
		}
	})
	return w
}

// waitLine returns the first log line matching re, or fails.
func (w *workerProc) waitLine(t *testing.T, re *regexp.Regexp) []string {
	t.Helper()
	timeout := time.After(2 * time.Minute)
	for {
		select {
		case l, ok := <-w.lines:
			if !ok {
				t.Fatalf("the worker ended before logging %q:\n%s", re, w.log.String())
			}
			w.log.WriteString(l + "\n")
			if m := re.FindStringSubmatch(l); m != nil {
				return m
			}
		case <-timeout:
			t.Fatalf("no log line %q within 2 minutes:\n%s", re, w.log.String())
		}
	}
}

// TestKill9OfRunMidGeneration kills `studio-worker run` with SIGKILL while
// llama.cpp generates, and checks that its engine child goes with it, that
// the next start reports the job to the studio as failed and retryable
// ("the worker stopped while running this job") in its first session, and
// that the requeued job then runs to the end.
// e2eSetup is a dev studio with one long chat job for a slow tiny model,
// and the config of a registered worker; it returns the job id, the
// worker's environment, its `run` arguments and its state folder.
func e2eSetup(t *testing.T) (dev *stack.DevStudio, id string, env []string, args, state string) {
	t.Helper()
	lib := os.Getenv("STUDIO_WORKER_LLAMA_LIB")
	if lib == "" {
		lib = filepath.Join("runtime", "llama", "linux-x64")
	}
	if _, err := os.Stat(filepath.Join(lib, "libllama.so")); err != nil {
		t.Skip("needs the llama.cpp runtime (make runtime, or STUDIO_WORKER_LLAMA_LIB): " + err.Error())
	}
	lib, _ = filepath.Abs(lib)
	dir := t.TempDir()
	var err error
	dev, err = stack.StartDevStudio(filepath.Join(dir, "studio"), true, slog.New(slog.DiscardHandler), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dev.Close)

	// A model slow enough on one thread that a long answer takes seconds.
	spec := gguf.Tiny()
	spec.Name, spec.Embd, spec.Layers, spec.FF, spec.Context = "slow-tiny", 256, 4, 768, 4096
	served := filepath.Join(dir, "studio", "models")
	path, err := gguf.EnsureIn(served, spec)
	if err != nil {
		t.Fatal(err)
	}
	file, err := devstudio.ModelFile(dev.URL, served, filepath.Base(path), engine.RoleModel)
	if err != nil {
		t.Fatal(err)
	}
	maxTokens := 1500
	id, err = dev.Server.EnqueueJob(devstudio.JobSpec{
		Task: engine.Task{Kind: engine.KindLLM, LLM: &engine.LLMParams{
			Messages: []engine.ChatMessage{{Role: "user", Content: "Tell me everything."}}, MaxTokens: &maxTokens}},
		Model: spec.Name, ModelSource: engine.ModelSource{Engine: engine.EngineLlamaCpp, Files: []engine.ModelFile{file}},
		VRAMGBEstimate: 0.1, GameID: "g", AssetName: "a",
	})
	if err != nil {
		t.Fatal(err)
	}

	cfg := filepath.Join(dir, "config")
	os.MkdirAll(cfg, 0o700)
	os.WriteFile(filepath.Join(cfg, "settings.toml"), []byte(fmt.Sprintf("models_dir = %q\nthreads = 1\nvram_budget_gb = 8\ninstall_id = \"e2e-install\"\n", filepath.Join(dir, "models"))), 0o600)
	// Registered beforehand (the protocol polls every 30 s): the worker
	// finds its credentials in the config folder.
	reg := studio.NewRegistrar(studio.RegistrarConfig{BaseURL: dev.URL, Store: settings.NewFileCredentialStore(cfg), InstallID: "e2e-install",
		Capabilities: func() studio.Capabilities { return studio.Capabilities{} }, PollInterval: 10 * time.Millisecond})
	rctx, rcancel := context.WithTimeout(context.Background(), time.Minute)
	_, err = reg.Run(rctx)
	rcancel()
	if err != nil {
		t.Fatalf("registering: %v", err)
	}
	state = filepath.Join(dir, "state")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DBUS_SESSION_BUS_ADDRESS=") && !strings.HasPrefix(kv, "XDG_STATE_HOME=") {
			env = append(env, kv)
		}
	}
	env = append(env, "XDG_STATE_HOME="+state, "STUDIO_WORKER_LLAMA_LIB="+lib, "HOME="+dir)
	args = "run --studio " + dev.URL + " --config " + cfg

	return dev, id, env, args, state
}

func TestKill9OfRunMidGeneration(t *testing.T) {
	dev, id, env, args, state := e2eSetup(t)
	t0 := time.Now()
	w1 := startWorker(t, env, args)
	child := w1.waitLine(t, regexp.MustCompile(`the text engine started \(process (\d+)\)`))
	childPID, _ := strconv.Atoi(child[1])
	w1.waitLine(t, regexp.MustCompile(`model loaded`)) // generation starts now
	pidfd, err := unix.PidfdOpen(childPID, 0)
	if err != nil {
		t.Fatalf("the engine child %d: %v", childPID, err)
	}
	defer unix.Close(pidfd)
	journal, err := os.ReadFile(filepath.Join(state, "studio-worker", studio.JournalFile))
	if err != nil || !strings.Contains(string(journal), id) {
		t.Fatalf("the running job is not in the journal: %v\n%s", err, journal)
	}
	t.Logf("%s: generating; kill -9", time.Since(t0))
	w1.cmd.Process.Signal(syscall.SIGKILL)
	w1.cmd.Wait()
	if n, err := unix.Poll([]unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}, 10_000); n != 1 || err != nil {
		unix.Kill(childPID, unix.SIGKILL)
		t.Fatalf("the engine child %d outlived the killed worker (poll %d, %v)", childPID, n, err)
	}
	if js, _ := dev.Server.Job(id); js.State == devstudio.JobDone {
		t.Fatal("the job finished before the kill; the model is too fast for this test")
	}

	w2 := startWorker(t, env, args)
	w2.waitLine(t, regexp.MustCompile(`job `+regexp.QuoteMeta(id)+` failed \(retryable=true\): the worker stopped while running this job`))
	t.Logf("%s: reported by the next start", time.Since(t0))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	js, err := dev.Server.WaitJob(ctx, id)
	if err != nil {
		t.Fatalf("the requeued job: %v\n%s", err, w2.log.String())
	}
	if js.State != devstudio.JobDone || !slices.Contains(js.LateReports, "the worker stopped while running this job") {
		t.Fatalf("job %+v", js)
	}
	t.Logf("%s: done", time.Since(t0))
	w2.waitLine(t, regexp.MustCompile(`studio confirmed completion of job `+regexp.QuoteMeta(id)))
	w2.cmd.Process.Signal(syscall.SIGTERM)
	w2.cmd.Wait()
	var left []json.RawMessage
	b, _ := os.ReadFile(filepath.Join(state, "studio-worker", studio.JournalFile))
	if json.Unmarshal(b, &left) != nil || len(left) != 0 {
		t.Errorf("the journal should be empty once the studio acknowledged everything: %s", b)
	}
}

// TestEngineChildKilledMidGeneration kills the llama.cpp child with SIGKILL
// while it generates: the worker keeps running, fails the job as retryable
// in words, and runs it again (the studio requeues it) in a fresh child.
func TestEngineChildKilledMidGeneration(t *testing.T) {
	dev, id, env, args, _ := e2eSetup(t)
	w := startWorker(t, env, args)
	child := w.waitLine(t, regexp.MustCompile(`the text engine started \(process (\d+)\)`))
	childPID, _ := strconv.Atoi(child[1])
	w.waitLine(t, regexp.MustCompile(`model loaded`))
	syscall.Kill(childPID, syscall.SIGKILL)
	// The kill may land before the child's "loaded" progress reaches the
	// parent; either phase is the truth as the parent knows it.
	w.waitLine(t, regexp.MustCompile(`job `+regexp.QuoteMeta(id)+` failed \(retryable=true\): the text engine crashed while (loading|generating with) model slow-tiny \(signal: killed\)`))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	js, err := dev.Server.WaitJob(ctx, id)
	if err != nil || js.State != devstudio.JobDone || js.Attempts != 1 {
		t.Fatalf("the requeued job: %+v, %v\n%s", js, err, w.log.String())
	}
	if w.cmd.ProcessState != nil {
		t.Fatal("the worker ended")
	}
	w.waitLine(t, regexp.MustCompile(`the text engine started \(process \d+\)`)) // the fresh child
}
