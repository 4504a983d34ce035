package llama

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/minisgg/studio-worker/engine"
)

func TestSplitThink(t *testing.T) {
	cases := []struct {
		name, reply    string
		opened         bool
		content, think string
	}{
		{"no block", "Hello there", false, "Hello there", ""},
		{"leading block", "<think>plan it\n</think>\n\nThe answer.", false, "The answer.", "plan it"},
		{"whitespace first", "\n  <think> a </think>b", false, "b", "a"},
		{"block not leading", "Hi <think>x</think> y", false, "Hi <think>x</think> y", ""},
		{"unclosed", "<think>still going", false, "", "still going"},
		{"empty block", "<think></think>Answer", false, "Answer", ""},
		{"opened by prompt", "reasoning here</think>Answer", true, "Answer", "reasoning here"},
		{"opened, unclosed", "cut off", true, "", "cut off"},
		{"only first block moves", "<think>a</think>b<think>c</think>", false, "b<think>c</think>", "a"},
	}
	for _, c := range cases {
		content, think := splitThink(c.reply, c.opened)
		if content != c.content || think != c.think {
			t.Errorf("%s: got (%q, %q), want (%q, %q)", c.name, content, think, c.content, c.think)
		}
	}
	if !promptOpensThink("<|im_start|>assistant\n<think>\n") || promptOpensThink("<|im_start|>assistant\n") {
		t.Error("promptOpensThink")
	}
}

func TestStopScanner(t *testing.T) {
	s := newStopScanner([]string{"", "END", "xy"})
	text := ""
	steps := []struct {
		piece string
		cut   int
	}{{"abc", -1}, {" E", -1}, {"N", -1}, {"Dmore", 4}}
	for _, st := range steps {
		added := len(text)
		text += st.piece
		if got := s.scan(text, added); got != st.cut {
			t.Fatalf("after %q: cut %d, want %d", text, got, st.cut)
		}
	}
	// The earliest stop wins when a piece completes two.
	if got := s.scan("..xyEND", 2); got != 2 {
		t.Fatalf("earliest: %d", got)
	}
	if got := newStopScanner(nil).scan("anything", 0); got != -1 {
		t.Fatalf("no stops: %d", got)
	}
}

func TestGenOptions(t *testing.T) {
	msgs := []engine.ChatMessage{{Role: "user", Content: "hi"}}
	o, err := genOptions(&engine.LLMParams{Messages: msgs}, nil)
	if err != nil || o.maxTokens != 512 || o.temperature != 0.7 || o.topP != 1 || o.contextSize != 8192 {
		t.Fatalf("defaults: %+v %v", o, err)
	}
	o, err = genOptions(&engine.LLMParams{Messages: msgs, MaxTokens: ptr(9), Temperature: ptr(0.0), TopP: ptr(0.9),
		Seed: ptr(uint64(1) << 40), Stop: []string{"x"}}, &engine.CliDefaults{ContextSize: 2048})
	if err != nil || o.maxTokens != 9 || o.temperature != 0 || o.topP != 0.9 || o.contextSize != 2048 || o.stops[0] != "x" {
		t.Fatalf("given: %+v %v", o, err)
	}
	if o.seed == 0xFFFFFFFF {
		t.Fatal("a given seed became llama.cpp's 'random'")
	}
	bad := []engine.LLMParams{
		{},
		{Messages: msgs, MaxTokens: ptr(-5)},
		{Messages: msgs, MaxTokens: ptr(0)},
		{Messages: msgs, Temperature: ptr(-1.0)},
		{Messages: msgs, TopP: ptr(0.0)},
		{Messages: msgs, TopP: ptr(1.01)},
	}
	for _, p := range bad {
		if _, err := genOptions(&p, nil); err == nil {
			t.Errorf("accepted %+v", p)
		}
	}
	if _, err := genOptions(&engine.LLMParams{Messages: msgs}, &engine.CliDefaults{ContextSize: -1}); err == nil {
		t.Error("accepted a negative contextSize")
	}
}

func TestChatMessagesSystemFirst(t *testing.T) {
	p := &engine.LLMParams{System: "sys", Messages: []engine.ChatMessage{{Role: "user", Content: "u"}}}
	got := chatMessages(p)
	if len(got) != 2 || got[0].Role != "system" || got[0].Content != "sys" || got[1].Content != "u" {
		t.Fatalf("%+v", got)
	}
	if got := chatMessages(&engine.LLMParams{Messages: p.Messages}); len(got) != 1 {
		t.Fatalf("no system: %+v", got)
	}
}

func TestModelPath(t *testing.T) {
	src := engine.ModelSource{Files: []engine.ModelFile{{Role: engine.RoleVAE, Filename: "v.bin"}, {Role: engine.RoleTextEncoder, Filename: "t.gguf"}}}
	job := engine.Job{Source: src, Files: map[engine.FileRole]string{engine.RoleVAE: "/m/v.bin", engine.RoleTextEncoder: "/m/t.gguf"}}
	if p, err := modelPath(job); err != nil || p != "/m/t.gguf" {
		t.Fatalf("first gguf: %q %v", p, err)
	}
	job.Files[engine.RoleModel] = "/m/model.gguf"
	if p, _ := modelPath(job); p != "/m/model.gguf" {
		t.Fatalf("role model wins: %q", p)
	}
}

func TestFindLibDir(t *testing.T) {
	t.Setenv(LibEnv, "")
	empty := t.TempDir()
	_, err := FindLibDir(empty)
	if err == nil || !strings.Contains(err.Error(), empty) || !strings.Contains(err.Error(), "Reinstall Studio Worker") {
		t.Fatalf("want an error naming %s, got %v", empty, err)
	}
	exe, _ := os.Executable()
	if !strings.Contains(err.Error(), filepath.Join(filepath.Dir(exe), "lib")) {
		t.Fatalf("error should name the folder next to the program: %v", err)
	}

	withLib := t.TempDir()
	if err := os.WriteFile(filepath.Join(withLib, libFile()), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv(LibEnv, withLib)
	if got, err := FindLibDir(""); err != nil || got != withLib {
		t.Fatalf("env: %q %v", got, err)
	}
	// The setting comes before the environment.
	other := t.TempDir()
	os.WriteFile(filepath.Join(other, libFile()), nil, 0o644)
	if got, _ := FindLibDir(other); got != other {
		t.Fatalf("setting: %q", got)
	}
	// A setting without libraries falls through to the environment.
	if got, _ := FindLibDir(empty); got != withLib {
		t.Fatalf("fall through: %q", got)
	}
}
