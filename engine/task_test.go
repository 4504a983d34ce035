package engine

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestTaskMaxTokensAbsentIsNotZero(t *testing.T) {
	var absent, zero Task
	if err := json.Unmarshal([]byte(`{"kind":"llm","messages":[{"role":"user","content":"hi"}]}`), &absent); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(`{"kind":"llm","messages":[],"maxTokens":0}`), &zero); err != nil {
		t.Fatal(err)
	}
	if absent.LLM.MaxTokens != nil {
		t.Fatalf("absent maxTokens decoded as %d", *absent.LLM.MaxTokens)
	}
	if zero.LLM.MaxTokens == nil || *zero.LLM.MaxTokens != 0 {
		t.Fatal("an explicit maxTokens 0 must stay visible so that the engine can refuse it")
	}
	out, err := json.Marshal(zero)
	if err != nil || !strings.Contains(string(out), `"maxTokens":0`) {
		t.Fatalf("re-encoded: %s %v", out, err)
	}
}

func TestTaskRejectsUnknownKindAndMissingFields(t *testing.T) {
	for _, in := range []string{
		`{"kind":"sculpture","prompt":"x"}`,
		`{"prompt":"x"}`,
		`{"kind":"image"}`,
		`{"kind":"llm","messages":null}`,
		`{"kind":"audio_stt"}`,
	} {
		var task Task
		if err := json.Unmarshal([]byte(in), &task); err == nil {
			t.Errorf("%s: accepted", in)
		}
	}
}

func TestTaskPromptIsTheFullLastMessage(t *testing.T) {
	long := strings.Repeat("a long prompt ", 100)
	task := Task{Kind: KindLLM, LLM: &LLMParams{Messages: []ChatMessage{{Role: "system", Content: "s"}, {Role: "user", Content: long}}}}
	if task.Prompt() != long {
		t.Fatal("prompt was not the full last message")
	}
}

// jobErr asserts that err is a *JobError for field, not retryable.
func jobErr(t *testing.T, what string, err error, field string) *JobError {
	t.Helper()
	var je *JobError
	if !errors.As(err, &je) {
		t.Fatalf("%s: want a *JobError for %q, got %T %v", what, field, err, err)
	}
	if je.Field != field {
		t.Fatalf("%s: field %q, want %q (%v)", what, je.Field, field, err)
	}
	if IsRetryable(err) {
		t.Fatalf("%s: a job-owned failure must not be retryable: %v", what, err)
	}
	return je
}

// Item 6 of issue 10: OpenAI content parts. Text parts are joined with
// "\n"; any other part type fails that task with a typed error naming the
// part, which a caller decoding a whole offer still finds with errors.As.
func TestTaskContentParts(t *testing.T) {
	var task Task
	in := `{"kind":"llm","messages":[{"role":"system","content":null},{"role":"user","content":[{"type":"text","text":"hi"},{"type":"text","text":"there"}]},{"role":"user","content":"plain"}]}`
	if err := json.Unmarshal([]byte(in), &task); err != nil {
		t.Fatal(err)
	}
	got := task.LLM.Messages
	if len(got) != 3 || got[0].Content != "" || got[1].Content != "hi\nthere" || got[1].Role != "user" || got[2].Content != "plain" {
		t.Fatalf("messages %+v", got)
	}
	// Re-encoded as the plain string form.
	out, _ := json.Marshal(task)
	if !strings.Contains(string(out), `"content":"hi\nthere"`) {
		t.Fatalf("re-encoded: %s", out)
	}

	var offer struct {
		JobID string `json:"jobId"`
		Task  *Task  `json:"task"`
	}
	bad := `{"jobId":"j1","task":{"kind":"llm","messages":[{"role":"user","content":"ok"},{"role":"user","content":[{"type":"text","text":"look"},{"type":"image_url","image_url":{"url":"https://x.invalid/a.png"}}]}]}}`
	err := json.Unmarshal([]byte(bad), &offer)
	je := jobErr(t, "image part", err, "messages[1].content[1].type")
	if !strings.Contains(je.Error(), `"image_url"`) || !strings.Contains(err.Error(), "llm") {
		t.Fatalf("reason: %v", err)
	}
	for in, field := range map[string]string{
		`{"kind":"llm","messages":[{"role":"user","content":[{"text":"x"}]}]}`:             "messages[0].content[0].type",
		`{"kind":"llm","messages":[{"role":"user","content":[{"type":"text"}]}]}`:          "messages[0].content[0].text",
		`{"kind":"llm","messages":[{"role":"user","content":[{"type":"text","text":5}]}]}`: "messages[0].content[0].text",
		`{"kind":"llm","messages":[{"role":"user","content":{"text":"x"}}]}`:               "messages[0].content",
		`{"kind":"llm","messages":[{"role":"user","content":7}]}`:                          "messages[0].content",
		`{"kind":"llm","messages":[{"role":3,"content":"x"}]}`:                             "messages[0].role",
		`{"kind":"llm","messages":"hi"}`:                                                   "messages",
		`{"kind":"llm","messages":[]}`:                                                     "", // decodes; Validate refuses it
		`{"kind":"llm","messages":[{"role":"user","content":"x"}],"maxTokens":"ten"}`:      "maxTokens",
		`{"kind":"image","prompt":"x","width":"wide"}`:                                     "width",
		`{"kind":"image"}`:           "prompt",
		`{"kind":"3d","prompt":"x"}`: "kind",
		`{"prompt":"x"}`:             "kind",
	} {
		var task Task
		err := json.Unmarshal([]byte(in), &task)
		if field == "" {
			if err != nil {
				t.Errorf("%s: %v", in, err)
			}
			continue
		}
		jobErr(t, in, err, field)
	}
}

// Item 1 of issue 10: a NUL (or invalid UTF-8) in any text that becomes a C
// string fails the job as not retryable, naming the field.
func TestValidateRefusesTextNativeCodeCannotTake(t *testing.T) {
	msgs := func(content string) []ChatMessage {
		return []ChatMessage{{Role: "user", Content: "fine"}, {Role: "user", Content: content}}
	}
	llm := func(p LLMParams) Job { return Job{Task: Task{Kind: KindLLM, LLM: &p}} }
	image := func(p ImageParams) Job { return Job{Task: Task{Kind: KindImage, Image: &p}} }
	cases := []struct {
		name  string
		job   Job
		field string
	}{
		{"NUL in content", llm(LLMParams{Messages: msgs("Reply with BANANA.\x00 Ignore this")}), "messages[1].content"},
		{"bad UTF-8 in content", llm(LLMParams{Messages: msgs("caf\xe9")}), "messages[1].content"},
		{"NUL in role", llm(LLMParams{Messages: []ChatMessage{{Role: "us\x00er", Content: "x"}}}), "messages[0].role"},
		{"NUL in system", llm(LLMParams{Messages: msgs("x"), System: "be\x00"}), "system"},
		{"NUL in a stop string", llm(LLMParams{Messages: msgs("x"), Stop: []string{"ok", "\x00"}}), "stop[1]"},
		{"NUL in a template argument", llm(LLMParams{Messages: msgs("x"), ChatTemplateKwargs: json.RawMessage(`{"persona":"a\u0000b"}`)}), "chatTemplateKwargs.persona"},
		{"NUL in a nested template argument", llm(LLMParams{Messages: msgs("x"), ChatTemplateKwargs: json.RawMessage(`{"tools":[{"name":"\u0000"}]}`)}), "chatTemplateKwargs.tools[0].name"},
		{"NUL in image prompt", image(ImageParams{Prompt: "a cat\x00"}), "prompt"},
		{"NUL in negative prompt", image(ImageParams{Prompt: "a cat", NegativePrompt: "\x00dog"}), "negativePrompt"},
		{"bad UTF-8 in image prompt", image(ImageParams{Prompt: "\xff"}), "prompt"},
		{"NUL in the model's template arguments", Job{Task: llm(LLMParams{Messages: msgs("x")}).Task,
			Source: ModelSource{CliDefaults: &CliDefaults{ChatTemplateKwargs: json.RawMessage(`{"x":"\u0000"}`)}}}, "modelSource.cliDefaults.chatTemplateKwargs.x"},
	}
	for _, c := range cases {
		je := jobErr(t, c.name, c.job.Validate(), c.field)
		if !strings.Contains(je.Reason, "NUL") && !strings.Contains(je.Reason, "UTF-8") {
			t.Errorf("%s: reason %q", c.name, je.Reason)
		}
	}
	// The wire's own escape reaches the check too.
	var task Task
	if err := json.Unmarshal([]byte(`{"kind":"llm","messages":[{"role":"user","content":"Reply with BANANA.\u0000 Ignore this"}]}`), &task); err != nil {
		t.Fatal(err)
	}
	jobErr(t, "decoded NUL", Job{Task: task}.Validate(), "messages[0].content")
	if err := (Job{Task: Task{Kind: KindLLM, LLM: &LLMParams{Messages: msgs("héllo <|im_end|> 🐈")}}}).Validate(); err != nil {
		t.Fatalf("ordinary text refused: %v", err)
	}
}

// Item 9 of issue 10: parameters that can never succeed are refused as
// not retryable, case by case.
func TestValidateRefusesImpossibleLLMParams(t *testing.T) {
	hi := []ChatMessage{{Role: "user", Content: "hi"}}
	i := func(v int) *int { return &v }
	f := func(v float64) *float64 { return &v }
	cases := []struct {
		name  string
		p     LLMParams
		cli   *CliDefaults
		field string
	}{
		{"messages: []", LLMParams{Messages: []ChatMessage{}}, nil, "messages"},
		{"maxTokens 0", LLMParams{Messages: hi, MaxTokens: i(0)}, nil, "maxTokens"},
		{"maxTokens -5", LLMParams{Messages: hi, MaxTokens: i(-5)}, nil, "maxTokens"},
		{"temperature -0.5", LLMParams{Messages: hi, Temperature: f(-0.5)}, nil, "temperature"},
		{"temperature 1000", LLMParams{Messages: hi, Temperature: f(1000)}, nil, "temperature"},
		{"topP 0", LLMParams{Messages: hi, TopP: f(0)}, nil, "topP"},
		{"topP 1.5", LLMParams{Messages: hi, TopP: f(1.5)}, nil, "topP"},
		{"kwargs not an object", LLMParams{Messages: hi, ChatTemplateKwargs: json.RawMessage(`[true]`)}, nil, "chatTemplateKwargs"},
		{"kwargs sets messages", LLMParams{Messages: hi, ChatTemplateKwargs: json.RawMessage(`{"messages":[]}`)}, nil, "chatTemplateKwargs.messages"},
		{"negative contextSize", LLMParams{Messages: hi}, &CliDefaults{ContextSize: -1}, "modelSource.cliDefaults.contextSize"},
		{"model kwargs not an object", LLMParams{Messages: hi}, &CliDefaults{ChatTemplateKwargs: json.RawMessage(`"x"`)}, "modelSource.cliDefaults.chatTemplateKwargs"},
	}
	for _, c := range cases {
		p := c.p
		job := Job{Task: Task{Kind: KindLLM, LLM: &p}, Source: ModelSource{CliDefaults: c.cli}}
		jobErr(t, c.name, job.Validate(), c.field)
	}
	ok := Job{Task: Task{Kind: KindLLM, LLM: &LLMParams{Messages: hi, MaxTokens: i(1), Temperature: f(0), TopP: f(1),
		ChatTemplateKwargs: json.RawMessage(` {"enable_thinking": false} `)}}, Source: ModelSource{CliDefaults: &CliDefaults{ContextSize: 64}}}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid job refused: %v", err)
	}
}

func TestTemplateKwargsTaskOverridesModel(t *testing.T) {
	cli := &CliDefaults{ChatTemplateKwargs: json.RawMessage(`{"enable_thinking":false,"depth":2}`)}
	got, err := TemplateKwargs(cli, &LLMParams{ChatTemplateKwargs: json.RawMessage(`{"enable_thinking":true}`)})
	if err != nil || got["enable_thinking"] != true || got["depth"] != json.Number("2") || len(got) != 2 {
		t.Fatalf("merged %v %v", got, err)
	}
	if got, err := TemplateKwargs(cli, &LLMParams{}); err != nil || got["enable_thinking"] != false {
		t.Fatalf("model defaults alone: %v %v", got, err)
	}
	if got, err := TemplateKwargs(nil, &LLMParams{}); err != nil || got != nil {
		t.Fatalf("none: %v %v", got, err)
	}
}

func TestEngineNameWords(t *testing.T) {
	for n, want := range map[EngineName]string{
		EngineLlamaCpp: "the text engine (llama.cpp)",
		EngineSDCpp:    "the image engine (stable-diffusion.cpp)",
		EngineONNX:     "the onnx engine",
	} {
		if got := n.Words(); got != want {
			t.Errorf("%s.Words() = %q, want %q", n, got, want)
		}
	}
}

func TestFormatSize(t *testing.T) {
	for b, want := range map[uint64]string{
		0:                "0 B",
		512:              "512 B",
		4 << 10:          "4.0 KB",
		38<<20 + 300<<10: "38.3 MB",
		1<<30 - 1:        "1.00 GB",
		1<<20 - 1:        "1.0 MB",
		1023 << 20:       "1023.0 MB",
		1 << 30:          "1.00 GB",
		12<<30 + 307<<20: "12.30 GB",
	} {
		if got := FormatSize(b); got != want {
			t.Errorf("FormatSize(%d) = %q, want %q", b, got, want)
		}
	}
}
