package hosted_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/engine/gguf"
	"github.com/minisgg/studio-worker/engine/host"
	"github.com/minisgg/studio-worker/engine/host/hosted"
	"github.com/minisgg/studio-worker/engine/llama"
	"github.com/minisgg/studio-worker/internal/benchratio"
)

func TestMain(m *testing.M) {
	hosted.RunChildIfAsked() // the test binary stands in for `studio-worker engine-host`
	code := m.Run()
	benchratio.Print()
	os.Exit(code)
}

// llamaClient starts a real llama.cpp child on 1 thread.
func llamaClient(t *testing.T) *host.Client {
	t.Helper()
	if _, err := llama.FindLibDir(""); err != nil {
		t.Skipf("needs the llama.cpp libraries: run `make runtime` and set %s (%v)", llama.LibEnv, err)
	}
	c := hosted.Client(hosted.Llama, hosted.Options{Exe: os.Args[0], Threads: 1, Log: slog.New(slog.DiscardHandler), KeepAlive: -1})
	t.Cleanup(func() { c.Close() })
	if err := c.LoadError(); err != nil {
		t.Fatalf("llama.cpp child: %v", err)
	}
	return c
}

func model(t *testing.T, s gguf.Spec) string {
	t.Helper()
	p, err := gguf.Ensure(s)
	if err != nil {
		t.Fatalf("generating %s: %v", s.Name, err)
	}
	return p
}

func chat(path, content string, maxTokens int) engine.Job {
	return engine.Job{ID: "job-" + content, Model: "tiny.gguf",
		Task: engine.Task{Kind: engine.KindLLM, LLM: &engine.LLMParams{
			Messages: []engine.ChatMessage{{Role: "user", Content: content}}, MaxTokens: &maxTokens}},
		Source: engine.ModelSource{Engine: engine.EngineLlamaCpp},
		Files:  map[engine.FileRole]string{engine.RoleModel: path}}
}

func TestChatThroughTheChild(t *testing.T) {
	c := llamaClient(t)
	path := model(t, gguf.Tiny())
	if h := c.Hello(); !strings.HasPrefix(h.Runtime, "llama.cpp runtime:") || h.PID == os.Getpid() {
		t.Errorf("hello %+v", h)
	}
	var phases []engine.Phase
	res, err := c.Run(context.Background(), chat(path, "Hello there", 8), func(p engine.Progress) {
		if len(phases) == 0 || phases[len(phases)-1] != p.Phase {
			phases = append(phases, p.Phase)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(res.JSON), `"chat.completion"`) || res.Stats.CompletionTokens == 0 {
		t.Fatalf("result %s %+v", res.JSON, res.Stats)
	}
	if len(phases) < 2 || phases[0] != engine.PhaseLoad || phases[len(phases)-1] != engine.PhaseGenerate {
		t.Errorf("progress phases %v", phases)
	}
	if got := c.ResidentModel(); got != path {
		t.Errorf("resident model %q, want %q", got, path)
	}
	if err := c.Release(); err != nil || c.ResidentModel() != "" {
		t.Errorf("release: %v, resident %q", err, c.ResidentModel())
	}
}

// TestSIGKILLMidGeneration kills the child as it generates: the job fails
// as a retryable crash, and the next job runs in a fresh child.
func TestSIGKILLMidGeneration(t *testing.T) {
	c := llamaClient(t)
	path := model(t, gguf.Tiny())
	pid := c.PID()
	killed := false
	_, err := c.Run(context.Background(), chat(path, "Tell me a long story", 200), func(p engine.Progress) {
		if p.Phase == engine.PhaseGenerate && p.Done > 0 && !killed {
			killed = true
			if p, err := os.FindProcess(pid); err == nil {
				p.Kill()
			}
		}
	})
	var ce *engine.CrashError
	if !errors.As(err, &ce) || !engine.IsRetryable(err) {
		t.Fatalf("want a retryable crash, got %#v", err)
	}
	if !strings.HasPrefix(err.Error(), "the text engine crashed while generating with model tiny.gguf (signal: killed)") {
		t.Errorf("got %q", err)
	}
	res, err := c.Run(context.Background(), chat(path, "Again", 4), nil)
	if err != nil || len(res.JSON) == 0 {
		t.Fatalf("the next job: %v", err)
	}
	if c.PID() == pid || c.Starts() != 2 {
		t.Errorf("the next job should run in a new child (pid %d then %d, starts %d)", pid, c.PID(), c.Starts())
	}
}

// llama3Template is enough of Llama 3's chat template for llama.cpp to
// recognise it by its text.
const llama3Template = "{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"

// TestNULInAMessage sends a chat message holding U+0000, which made
// llama.cpp throw std::logic_error and abort the process: with a Llama-3
// template and with none. Either the engine refuses the text first (a job
// error, not retryable) or the crash stays in the child (retryable, in
// the child's words); the next job succeeds either way.
func TestNULInAMessage(t *testing.T) {
	c := llamaClient(t)
	l3 := gguf.Tiny()
	l3.Name, l3.ChatTemplate = "tiny-llama3-template", llama3Template
	for _, s := range []gguf.Spec{l3, gguf.TinyNoTemplate()} {
		path := model(t, s)
		_, err := c.Run(context.Background(), chat(path, "hi\x00there", 4), nil)
		var ce *engine.CrashError
		var je *engine.JobError
		switch {
		case errors.As(err, &ce):
			if !engine.IsRetryable(err) || !strings.Contains(err.Error(), "crashed") {
				t.Errorf("%s: crash %q", s.Name, err)
			}
			t.Logf("%s: %v", s.Name, err)
		case errors.As(err, &je):
			if engine.IsRetryable(err) {
				t.Errorf("%s: a refusal must not be retryable", s.Name)
			}
			t.Logf("%s: refused: %v", s.Name, err)
		default:
			t.Errorf("%s: want a crash or a refusal, got %#v", s.Name, err)
		}
		if res, err := c.Run(context.Background(), chat(path, "hello", 4), nil); err != nil || len(res.JSON) == 0 {
			t.Fatalf("%s: the next job: %v", s.Name, err)
		}
	}
}

// TestStopReturnsTheModelsMemory loads a model in a real llama.cpp child,
// reads what the process holds, stops it and checks that it is gone within
// 5 s, with everything it held.
func TestStopReturnsTheModelsMemory(t *testing.T) {
	c := llamaClient(t)
	path := model(t, gguf.Tiny())
	if _, err := c.Run(context.Background(), chat(path, "hi", 2), nil); err != nil {
		t.Fatal(err)
	}
	h := c.Held()
	if h.PID == 0 || h.Model != path || h.Bytes < 1<<20 {
		t.Fatalf("held %+v", h)
	}
	done := c.Done()
	start := time.Now()
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("process %d still there 5 s after Stop", h.PID)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", h.PID)); err == nil {
		t.Errorf("process %d was not reaped", h.PID)
	}
	t.Logf("the llama.cpp child held %.1f MB RSS with the model; gone %s after Stop", float64(h.Bytes)/(1<<20), time.Since(start).Round(time.Millisecond))
	if got := c.Held(); got.PID != 0 || got.Bytes != 0 || got.Model != "" {
		t.Errorf("held after Stop: %+v", got)
	}
}

// TestDevicesFromTheChild: the parent's GPU probe asks the llama.cpp child
// which GPUs ggml sees (none with this CPU runtime), and gets an error,
// not an empty answer, when no child runs.
func TestDevicesFromTheChild(t *testing.T) {
	c := llamaClient(t)
	devs, err := c.Devices()
	if err != nil {
		t.Fatalf("devices: %v", err)
	}
	t.Logf("ggml in the child sees %d GPU(s)", len(devs))
	c.Stop()
	if _, err := c.Devices(); err == nil || !strings.Contains(err.Error(), "is not running") {
		t.Errorf("without a child: %v", err)
	}
}

// TestHostileChatTemplates runs chat templates that would pin a core or
// eat the memory (github.com/ardanlabs/jinja has no limits of its own)
// through a real llama.cpp child. Each fails its job as the job's fault,
// naming the chat template and the limit, instead of running for minutes.
// A render past the time or memory limit cannot be stopped inside the
// process, so the child is ended before the answer returns (the parent ends
// it, and it exits by itself too); the next job runs in a fresh child.
func TestHostileChatTemplates(t *testing.T) {
	c := llamaClient(t)
	good := model(t, gguf.Tiny())
	cases := []struct {
		name, template, says string
		exits                bool
	}{
		// range() items count across calls: the second call goes past
		// (and is refused before it allocates, so the time limit cannot
		// fire first on a slow machine).
		{"range", "{% set a = range(1000) %}{% set b = range(1048000) %}{{ messages[0].content }}",
			"asked range() for more than", false},
		{"huge-range", "{% for i in range(10**12) %}x{% endfor %}", "asked range() for more than", false},
		{"repeat", "{{ 'x' * 300000000 }}", "took more than", true},
		// Doubling a string: the memory limit stops it, or on a slow,
		// busy machine the time limit may come first; either ends it.
		{"memory", "{% set ns = namespace(s='ab') %}{% for c in 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa' %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
			"took more than|ran for more than", true},
		// One allocation larger than the machine: Go ends the process at
		// once ("fatal error: runtime: out of memory"), which no Go code
		// can catch. The crash stays in the child and says so.
		{"repeat-tb", "{{ 'x' * 1000000000000 }}", "out of memory", true},
		{"time", "{% for c in ('a' * 20000) %}{% for d in ('a' * 20000) %}{% endfor %}{% endfor %}{{ messages[0].content }}",
			"ran for more than", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := gguf.Tiny()
			s.Name, s.ChatTemplate = "tiny-hostile-template-"+tc.name, tc.template
			path := model(t, s)
			pid := c.PID()
			if pid == 0 {
				if _, err := c.Run(context.Background(), chat(good, "warm up", 1), nil); err != nil {
					t.Fatal(err)
				}
				pid = c.PID()
			}
			done := c.Done()
			start := time.Now()
			_, err := c.Run(context.Background(), chat(path, "hi", 4), nil)
			took := time.Since(start)
			var je *engine.JobError
			var ce *engine.CrashError
			switch {
			case tc.name == "repeat-tb":
				if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.says) {
					t.Fatalf("want a crash saying %q, got %#v", tc.says, err)
				}
			case !errors.As(err, &je) || engine.IsRetryable(err) || !strings.Contains(err.Error(), "chat template") || !saysOneOf(err.Error(), tc.says):
				t.Fatalf("want a job error naming the chat template and %q, got %#v", tc.says, err)
			}
			t.Logf("%s: %v (%s)", tc.name, err, took.Round(time.Millisecond))
			if tc.exits {
				select {
				case <-done:
				default:
					t.Error("the child left running the template was still there when the job's answer came")
				}
			} else if c.PID() != pid {
				t.Errorf("the child was replaced (pid %d then %d) after a limit that stops the render itself", pid, c.PID())
			}
			if res, err := c.Run(context.Background(), chat(good, "hello", 4), nil); err != nil || len(res.JSON) == 0 {
				t.Fatalf("the next job: %v", err)
			}
			if tc.exits && c.PID() == pid {
				t.Errorf("the next job ran in the child that was left running the template (pid %d)", pid)
			}
		})
	}
}

// saysOneOf reports whether msg contains one of the |-separated phrases.
func saysOneOf(msg, phrases string) bool {
	for _, p := range strings.Split(phrases, "|") {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}
