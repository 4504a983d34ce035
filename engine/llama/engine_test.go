package llama

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/engine/gguf"
)

// hello is a chat asking for maxTokens tokens; 0 leaves maxTokens out.
func hello(maxTokens int, seed uint64) engine.LLMParams {
	p := engine.LLMParams{
		Messages: []engine.ChatMessage{{Role: "user", Content: "Tell me a story about the cat"}},
		Seed:     ptr(seed),
	}
	if maxTokens != 0 {
		p.MaxTokens = ptr(maxTokens)
	}
	return p
}

func TestChatCompletion(t *testing.T) {
	e, _ := newTestEngine(t)
	if got := e.Kinds(); len(got) != 1 || got[0] != engine.KindLLM {
		t.Fatalf("Kinds() = %v, want [llm]", got)
	}
	if e.Name() != engine.EngineLlamaCpp {
		t.Fatalf("Name() = %q", e.Name())
	}
	path := modelFile(t, gguf.Tiny())
	var mu sync.Mutex
	var gen []engine.Progress
	var loads int
	res, err := e.Run(context.Background(), llmJob(path, hello(16, 1), nil), func(p engine.Progress) {
		mu.Lock()
		defer mu.Unlock()
		switch p.Phase {
		case engine.PhaseGenerate:
			gen = append(gen, p)
		case engine.PhaseLoad:
			loads++
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	doc := parse(t, res)
	if doc.Object != "chat.completion" || doc.Model != "tiny-llama.gguf" || doc.ElapsedMS == nil {
		t.Fatalf("bad envelope: %s", res.JSON)
	}
	c := doc.Choices[0]
	if c.Index != 0 || c.Message.Role != "assistant" || c.Message.ReasoningContent != nil {
		t.Fatalf("bad choice: %s", res.JSON)
	}
	if strings.TrimSpace(c.Message.Content) == "" {
		t.Fatalf("empty reply: %s", res.JSON)
	}
	// The tiny model practically never ends by itself, so 16 tokens is the limit.
	if c.FinishReason != "length" || doc.Usage.CompletionTokens != 16 {
		t.Fatalf("want 16 tokens and finish length, got %d / %q", doc.Usage.CompletionTokens, c.FinishReason)
	}
	if doc.Usage.PromptTokens < 10 || doc.Usage.TotalTokens != doc.Usage.PromptTokens+doc.Usage.CompletionTokens {
		t.Fatalf("bad usage: %+v", doc.Usage)
	}
	if res.Stats.CompletionTokens != 16 || res.Stats.PromptTokens != doc.Usage.PromptTokens || res.Stats.TokensPerSecond <= 0 {
		t.Fatalf("bad stats: %+v", res.Stats)
	}
	if len(gen) != 16 || gen[0].Done != 1 || gen[15].Done != 16 || gen[15].Total != 16 || loads != 2 {
		t.Fatalf("progress: %d generate events (%v), %d load events", len(gen), gen, loads)
	}
	t.Logf("resident %d bytes (%d in GPU memory), %.0f tokens/s", e.ResidentBytes(), e.ResidentVRAMBytes(), res.Stats.TokensPerSecond)
	if e.ResidentBytes() < 500_000 {
		t.Fatalf("ResidentBytes() = %d, want at least the weights", e.ResidentBytes())
	}
}

func TestDeterministicWithSeed(t *testing.T) {
	e, _ := newTestEngine(t)
	path := modelFile(t, gguf.Tiny())
	a := runText(t, e, llmJob(path, hello(24, 7), nil))
	b := runText(t, e, llmJob(path, hello(24, 7), nil))
	c := runText(t, e, llmJob(path, hello(24, 8), nil))
	if a != b {
		t.Fatalf("same seed, different replies:\n%q\n%q", a, b)
	}
	if a == c {
		t.Fatalf("different seeds, same reply %q", a)
	}
}

func runText(t *testing.T, e *Engine, job engine.Job) string {
	t.Helper()
	res, err := e.Run(context.Background(), job, nil)
	if err != nil {
		t.Fatal(err)
	}
	return parse(t, res).Choices[0].Message.Content
}

func TestStopString(t *testing.T) {
	e, _ := newTestEngine(t)
	path := modelFile(t, gguf.Tiny())
	full := runText(t, e, llmJob(path, hello(40, 11), nil))
	// A stop string that first occurs in the middle of the unconstrained reply.
	cut := -1
	for i := len(full) / 3; i+4 <= len(full); i++ {
		if strings.Index(full, full[i:i+4]) == i {
			cut = i
			break
		}
	}
	if cut < 0 {
		t.Fatalf("no usable stop string in %q", full)
	}
	stop := full[cut : cut+4]
	p := hello(40, 11)
	p.Stop = []string{"never-in-this-reply", stop}
	res, err := e.Run(context.Background(), llmJob(path, p, nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	doc := parse(t, res)
	c := doc.Choices[0]
	if c.FinishReason != "stop" || c.Message.Content != full[:cut] {
		t.Fatalf("stop %q: got %q (%s), want %q", stop, c.Message.Content, c.FinishReason, full[:cut])
	}
	if doc.Usage.CompletionTokens >= 40 || doc.Usage.CompletionTokens == 0 {
		t.Fatalf("completion tokens %d for a reply cut at a stop string", doc.Usage.CompletionTokens)
	}
}

func TestEndOfGenerationToken(t *testing.T) {
	e, _ := newTestEngine(t)
	s := gguf.Tiny()
	s.Name = "tiny-llama-eager-eos"
	s.EOGLogit = 30 // the model ends its reply at once
	res, err := e.Run(context.Background(), llmJob(modelFile(t, s), hello(16, 1), nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	doc := parse(t, res)
	if doc.Choices[0].FinishReason != "stop" || doc.Usage.CompletionTokens != 0 || doc.Choices[0].Message.Content != "" {
		t.Fatalf("want an empty reply ended by the model: %s", res.JSON)
	}
}

func TestLengthLimit(t *testing.T) {
	e, _ := newTestEngine(t)
	path := modelFile(t, gguf.Tiny())
	for _, n := range []int{1, 5} {
		res, err := e.Run(context.Background(), llmJob(path, hello(n, 3), nil), nil)
		if err != nil {
			t.Fatal(err)
		}
		doc := parse(t, res)
		if doc.Choices[0].FinishReason != "length" || doc.Usage.CompletionTokens != n {
			t.Fatalf("maxTokens %d: %s", n, res.JSON)
		}
	}
}

func TestContextFullEndsWithLength(t *testing.T) {
	e, _ := newTestEngine(t)
	path := modelFile(t, gguf.Tiny())
	p := hello(500, 3)
	res, err := e.Run(context.Background(), llmJob(path, p, &engine.CliDefaults{ContextSize: 40}), nil)
	if err != nil {
		t.Fatal(err)
	}
	doc := parse(t, res)
	// The last reply token is sampled from the last position's logits; it
	// needs no room of its own, so the usage is one more than the context.
	if doc.Choices[0].FinishReason != "length" || doc.Usage.TotalTokens != 41 {
		t.Fatalf("want the 40-token context filled, got %s", res.JSON)
	}
}

func TestOverContextRefused(t *testing.T) {
	e, _ := newTestEngine(t)
	path := modelFile(t, gguf.Tiny())
	p := hello(8, 1)
	p.Messages[0].Content = strings.Repeat("the cat is about the dog ", 20)
	_, err := e.Run(context.Background(), llmJob(path, p, &engine.CliDefaults{ContextSize: 64}), nil)
	var tooLong *PromptTooLongError
	if !errors.As(err, &tooLong) || tooLong.Context != 64 || tooLong.PromptTokens <= 64 {
		t.Fatalf("want a refusal naming the 64-token context, got %v", err)
	}
	if !strings.Contains(err.Error(), "contextSize") {
		t.Fatalf("error should say what to change: %v", err)
	}
	// Asking for more than the model was trained on gets its trained context.
	if _, err := e.Run(context.Background(), llmJob(path, p, &engine.CliDefaults{ContextSize: 100000}), nil); err != nil {
		t.Fatal(err)
	}
	e.mu.Lock()
	got := e.res.nCtx
	e.mu.Unlock()
	if got != gguf.Tiny().Context {
		t.Fatalf("context %d, want the trained %d", got, gguf.Tiny().Context)
	}
}

func TestCancellation(t *testing.T) {
	e, _ := newTestEngine(t)
	path := modelFile(t, gguf.Tiny())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var last int64
	_, err := e.Run(ctx, llmJob(path, hello(400, 1), nil), func(p engine.Progress) {
		if p.Phase == engine.PhaseGenerate {
			last = p.Done
			if p.Done == 3 {
				cancel()
			}
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("want context.Canceled, got %v", err)
	}
	if last != 3 {
		t.Fatalf("generation went on to token %d after the cancel at 3", last)
	}
	// The engine keeps serving.
	if text := runText(t, e, llmJob(path, hello(4, 1), nil)); text == "" {
		t.Fatal("empty reply after a cancelled job")
	}
}

func TestWarmReuse(t *testing.T) {
	e, _ := newTestEngine(t)
	a := modelFile(t, gguf.Tiny())
	b := modelFile(t, gguf.TinyNoTemplate())
	run := func(path string) {
		t.Helper()
		if _, err := e.Run(context.Background(), llmJob(path, hello(2, 1), nil), nil); err != nil {
			t.Fatal(err)
		}
	}
	if got := e.ResidentModel(); got != "" {
		t.Fatalf("resident model %q before any job", got)
	}
	run(a)
	run(a)
	if n := e.Loads(); n != 1 {
		t.Fatalf("two jobs on one model loaded it %d times", n)
	}
	if got := e.ResidentModel(); got != a {
		t.Fatalf("resident model %q, want %q", got, a)
	}
	run(b)
	if n := e.Loads(); n != 2 {
		t.Fatalf("another model: %d loads, want 2", n)
	}
	if got := e.ResidentModel(); got != b {
		t.Fatalf("resident model %q after the swap, want %q", got, b)
	}
	if err := e.Release(); err != nil {
		t.Fatal(err)
	}
	if e.ResidentBytes() != 0 || e.ResidentVRAMBytes() != 0 || e.ResidentModel() != "" {
		t.Fatalf("after Release: %d bytes resident, model %q", e.ResidentBytes(), e.ResidentModel())
	}
	run(b)
	if n := e.Loads(); n != 3 {
		t.Fatalf("after Release: %d loads, want 3", n)
	}
}

func TestTemplates(t *testing.T) {
	e, rec := newTestEngine(t)
	p := hello(2, 1)
	p.System = "You are terse."
	if _, err := e.Run(context.Background(), llmJob(modelFile(t, gguf.Tiny()), p, nil), nil); err != nil {
		t.Fatal(err)
	}
	if got := rec.find("chat template"); len(got) == 0 || got[len(got)-1]["template"] != templateJinja {
		t.Fatalf("model with a template: %v", got)
	}
	if len(rec.find("using the fallback")) != 0 {
		t.Fatal("fallback used for a model with a template")
	}
	res, err := e.Run(context.Background(), llmJob(modelFile(t, gguf.TinyNoTemplate()), p, nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := rec.find("no chat template; using the fallback"); len(got) != 1 {
		t.Fatalf("want one fallback log line, got %v", got)
	}
	if parse(t, res).Usage.PromptTokens < 10 {
		t.Fatalf("fallback prompt too short: %s", res.JSON)
	}
}

// Every template must render system first and the generation prompt last;
// the model's Jinja template, llama.cpp's built-in ChatML and our fallback
// agree byte for byte.
func TestTemplateMatchesFallback(t *testing.T) {
	e, _ := newTestEngine(t)
	if _, err := e.Run(context.Background(), llmJob(modelFile(t, gguf.Tiny()), hello(1, 1), nil), nil); err != nil {
		t.Fatal(err)
	}
	p := hello(1, 1)
	p.System = "Be brief."
	e.mu.Lock()
	cp, err := e.formatChat(e.res, chatMessages(&p), nil)
	prompt, name := cp.text(), cp.template
	builtin, ok := renderBuiltin(e.res.tmpl.source, chatMessages(&p), newProtector(e.res.facts))
	e.mu.Unlock()
	want := "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nTell me a story about the cat<|im_end|>\n<|im_start|>assistant\n"
	if err != nil || name != templateJinja || prompt != want {
		t.Fatalf("template %s gave %q (%v)", name, prompt, err)
	}
	if !ok || builtin != want {
		t.Fatalf("llama.cpp's built-in ChatML gave %q", builtin)
	}
	if got := formatFallback(chatMessages(&p)); got != want {
		t.Fatalf("fallback gave %q", got)
	}
}

func TestConcurrentRuns(t *testing.T) {
	e, _ := newTestEngine(t)
	path := modelFile(t, gguf.Tiny())
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			_, err := e.Run(context.Background(), llmJob(path, hello(4, seed), nil), nil)
			errs <- err
			_ = e.ResidentVRAMBytes()
		}(uint64(i))
	}
	wg.Add(1)
	go func() { defer wg.Done(); e.SetThreads(1); _ = e.Threads() }()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if e.Loads() != 1 {
		t.Fatalf("%d loads for three jobs on one model", e.Loads())
	}
}

func TestBadModelFiles(t *testing.T) {
	e, _ := newTestEngine(t)
	good := modelFile(t, gguf.Tiny())
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	var foo strings.Builder
	b := gguf.NewBuilder()
	b.String("general.architecture", "foo-arch")
	b.Tensor("x.weight", gguf.F32, []uint64{4}, func(n int, put func(float32)) error {
		for i := 0; i < n; i++ {
			put(0)
		}
		return nil
	})
	if _, err := b.WriteTo(&foo); err != nil {
		t.Fatal(err)
	}
	// Header mutations that aborted the whole process inside llama.cpp
	// (issue 10 item 11) must stop at the Go check instead.
	info, err := gguf.CheckLLMFile(good)
	if err != nil {
		t.Fatal(err)
	}
	mutate := func(name, key string, v uint32) string {
		kv, _ := info.Get(key)
		b := append([]byte(nil), data...)
		binary.LittleEndian.PutUint32(b[kv.Offset:], v)
		return write(name, b)
	}
	cases := []struct {
		name, path, want string
	}{
		{"block_count 0x7FFFFFFF", mutate("layers.gguf", "llama.block_count", 0x7FFFFFFF), "llama.block_count"},
		{"eos id out of range", mutate("eos.gguf", "tokenizer.ggml.eos_token_id", 1<<20), "tokenizer.ggml.eos_token_id"},
		{"truncated", write("trunc.gguf", data[:len(data)/2]), "trunc.gguf is a malformed GGUF file"},
		{"not gguf", write("html.gguf", []byte("<html>not found</html>")), "not a GGUF model file"},
		{"empty", write("empty.gguf", nil), "not a GGUF model file"},
		{"unknown architecture", write("foo.gguf", []byte(foo.String())), "foo-arch"},
		{"missing", filepath.Join(dir, "absent.gguf"), "cannot open the model file"},
	}
	for _, c := range cases {
		_, err := e.Run(context.Background(), llmJob(c.path, hello(2, 1), nil), nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: want an error containing %q, got %v", c.name, c.want, err)
		}
		// A file that is not a usable model is named so that the runner
		// removes it from the store (issue 10 item 5).
		var mfe *engine.ModelFileError
		if c.name != "missing" && (!errors.As(err, &mfe) || mfe.Path != c.path) {
			t.Errorf("%s: no ModelFileError for %s in %v", c.name, c.path, err)
		}
	}
	// And the engine still serves good jobs.
	if text := runText(t, e, llmJob(good, hello(3, 1), nil)); text == "" {
		t.Fatal("empty reply after bad files")
	}
}

func TestBadParams(t *testing.T) {
	e, _ := newTestEngine(t)
	path := modelFile(t, gguf.Tiny())
	cases := map[string]engine.LLMParams{
		"maxTokens":   {Messages: hello(1, 1).Messages, MaxTokens: ptr(0)},
		"temperature": {Messages: hello(1, 1).Messages, Temperature: ptr(-0.5)},
		"topP":        {Messages: hello(1, 1).Messages, TopP: ptr(1.5)},
		"messages":    {},
	}
	for field, p := range cases {
		_, err := e.Run(context.Background(), llmJob(path, p, nil), nil)
		wantJobError(t, field, err, field)
	}
	_, err := e.Run(context.Background(), engine.Job{Task: engine.Task{Kind: engine.KindImage, Image: &engine.ImageParams{Prompt: "x"}}}, nil)
	if !engine.IsCannotServe(err) {
		t.Fatalf("image task: want cannot serve, got %v", err)
	}
	var noGGUF engine.Job = llmJob(path, hello(1, 1), nil)
	noGGUF.Files = map[engine.FileRole]string{engine.RoleVAE: "/x/vae.safetensors"}
	if _, err := e.Run(context.Background(), noGGUF, nil); err == nil || !strings.Contains(err.Error(), "no GGUF file") {
		t.Fatalf("no gguf: %v", err)
	}
	// Temperature 0 is greedy, and a greedy reply does not depend on the seed.
	g1, g2 := hello(8, 1), hello(8, 2)
	g1.Temperature, g2.Temperature = ptr(0.0), ptr(0.0)
	if a, b := runText(t, e, llmJob(path, g1, nil)), runText(t, e, llmJob(path, g2, nil)); a != b {
		t.Fatalf("greedy replies differ: %q %q", a, b)
	}
}

func TestDefaultMaxTokens(t *testing.T) {
	e, _ := newTestEngine(t)
	path := modelFile(t, gguf.Tiny())
	p := hello(0, 1)
	res, err := e.Run(context.Background(), llmJob(path, p, nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	// maxTokens left out: the tiny model's 512-token context ends the reply
	// before the default 512 new tokens.
	doc := parse(t, res)
	if doc.Choices[0].FinishReason != "length" || doc.Usage.TotalTokens != 513 {
		t.Fatalf("no maxTokens should mean the default 512 (capped by the context): %+v", doc.Usage)
	}
}

// Without libraries the engine offers nothing and says where it looked.
// The libraries are process-wide, so this runs in a child process.
func TestWithoutLibraries(t *testing.T) {
	if os.Getenv("LLAMA_TEST_CHILD") == "nolibs" {
		e := New(Config{LibDir: filepath.Join(os.TempDir(), "no-such-llama-dir")})
		if len(e.Kinds()) != 0 || e.LibError() == nil || e.ResidentVRAMBytes() != 0 {
			t.Fatalf("kinds %v, err %v", e.Kinds(), e.LibError())
		}
		_, err := e.Run(context.Background(), llmJob("/x.gguf", hello(1, 1), nil), nil)
		if !engine.IsCannotServe(err) || !strings.Contains(err.Error(), "no-such-llama-dir") {
			t.Fatalf("run without libraries: %v", err)
		}
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestWithoutLibraries$", "-test.v")
	cmd.Env = append(os.Environ(), "LLAMA_TEST_CHILD=nolibs", LibEnv+"=")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestWithoutLibraries") {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

func TestJSONSchemaConstrainsToJSON(t *testing.T) {
	e, _ := newTestEngine(t)
	path := modelFile(t, gguf.Tiny())
	for _, seed := range []uint64{1, 2, 3} {
		p := hello(60, seed)
		p.JSONSchema = json.RawMessage(`{"type":"object","properties":{"name":{"type":"string"}}}`)
		res, err := e.Run(context.Background(), llmJob(path, p, nil), nil)
		if err != nil {
			t.Fatal(err)
		}
		c := parse(t, res).Choices[0]
		body := strings.TrimSpace(c.Message.Content)
		t.Logf("seed %d (%s): %q", seed, c.FinishReason, body)
		if !strings.HasPrefix(body, "{") {
			t.Fatalf("seed %d: reply is not a JSON object: %q", seed, body)
		}
		var v any
		err = json.Unmarshal([]byte(body), &v)
		switch c.FinishReason {
		case "stop":
			if err != nil {
				t.Fatalf("seed %d: finished reply is not JSON: %q (%v)", seed, body, err)
			}
		case "length": // cut by maxTokens: what there is must be a JSON prefix
			dec := json.NewDecoder(strings.NewReader(body))
			if err := dec.Decode(&v); err == nil || !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("seed %d: cut reply is not a JSON prefix: %q (%v)", seed, body, err)
			}
		}
	}
}

func TestGrammarFor(t *testing.T) {
	if grammarFor(nil) != "" || grammarFor(json.RawMessage(" null ")) != "" {
		t.Fatal("no schema must mean free text")
	}
	if g := grammarFor(json.RawMessage(`{"type":"object"}`)); !strings.HasPrefix(g, "root   ::= ws object ws") {
		t.Fatalf("object schema: %q", g[:40])
	}
	if g := grammarFor(json.RawMessage(`{"anyOf":[]}`)); !strings.HasPrefix(g, "root   ::= ws value ws") {
		t.Fatalf("other schema: %q", g[:40])
	}
}
