package api_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"image/png"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/minisgg/studio-worker/app/api"
	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/engine/gguf"
	"github.com/minisgg/studio-worker/engine/host/hosted"
	"github.com/minisgg/studio-worker/engine/llama"
	"github.com/minisgg/studio-worker/engine/sd"
	"github.com/minisgg/studio-worker/internal/benchratio"
	"github.com/minisgg/studio-worker/settings"
	"github.com/minisgg/studio-worker/studio"
)

func TestMain(m *testing.M) {
	hosted.RunChildIfAsked() // the test binary stands in for `studio-worker engine-host`
	code := m.Run()
	benchratio.Print()
	os.Exit(code)
}

// Model names in the test models folder.
const (
	chatModel  = "tiny.gguf"
	imageModel = "tiny-sdxs"
)

type unknownGPU struct{}

func (unknownGPU) Probe(context.Context) engine.VRAMInfo { return engine.VRAMInfo{} }

// env is a real worker (not connected to a studio: local jobs need none)
// with llama.cpp and stable-diffusion.cpp in engine-host children of the
// test binary, and the local API in front of it.
type env struct {
	worker *studio.Worker
	runner *engine.Runner
	srv    *api.Server
	cfgDir string
	hold   *holder
	llm    engine.Engine // the llama.cpp child
}

// holder wraps the worker so that a test can hold a run at its first
// streamed text until it lets go: the engine cannot finish before then.
type holder struct {
	api.Worker
	mu      sync.Mutex
	gate    chan struct{} // closed to let go; nil: no hold
	reached chan struct{} // closed when a run reached the hold
}

func (h *holder) holdNext() (reached <-chan struct{}, release func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.gate, h.reached = make(chan struct{}), make(chan struct{})
	gate := h.gate
	var once sync.Once
	return h.reached, func() { once.Do(func() { close(gate) }) }
}

func (h *holder) RunLocal(ctx context.Context, wait time.Duration, job engine.Job, progress engine.ProgressFunc) (engine.Result, error) {
	h.mu.Lock()
	gate, reached := h.gate, h.reached
	h.gate, h.reached = nil, nil
	h.mu.Unlock()
	var once sync.Once
	return h.Worker.RunLocal(ctx, wait, job, func(p engine.Progress) {
		// reached is closed before the first text goes on to the client,
		// which may read it at once; the hold comes after it went.
		hold := false
		if gate != nil && p.Text != "" {
			once.Do(func() {
				close(reached)
				hold = true
			})
		}
		if progress != nil {
			progress(p)
		}
		if hold {
			select {
			case <-gate:
			case <-ctx.Done():
			}
		}
	})
}

type envOptions struct {
	image    bool
	chat     string // the chat model's file; "": the tiny generated model
	maxBody  int64
	gateWait time.Duration
	// runner, when set, stands between the worker and the real runner.
	runner func(studio.JobRunner) studio.JobRunner
}

func newEnv(t testing.TB, o envOptions) *env {
	t.Helper()
	if _, err := llama.FindLibDir(""); err != nil {
		t.Skipf("needs the llama.cpp libraries: run `make runtime` and set %s (%v)", llama.LibEnv, err)
	}
	log := slog.New(slog.DiscardHandler)
	models := t.TempDir()
	tiny := o.chat
	if tiny == "" {
		p, err := gguf.Ensure(gguf.Tiny())
		if err != nil {
			t.Fatal(err)
		}
		tiny = p
	}
	linkOrCopy(t, tiny, filepath.Join(models, chatModel))
	engines := []engine.Engine{}
	var llmEngine engine.Engine
	llm := hosted.Client(hosted.Llama, hosted.Options{Exe: os.Args[0], Threads: 1, Log: log, KeepAlive: -1})
	t.Cleanup(func() { llm.Close() })
	if err := llm.LoadError(); err != nil {
		t.Fatalf("llama.cpp child: %v", err)
	}
	engines = append(engines, llm)
	llmEngine = llm
	if o.image {
		if os.Getenv(sd.EnvLib) == "" {
			t.Skip("needs " + sd.LibFile() + " (stable-diffusion.cpp): run `make runtime`, or set " + sd.EnvLib)
		}
		p, err := gguf.EnsureSDXS(gguf.TinySDXS())
		if err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(models, imageModel)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		linkOrCopy(t, p, filepath.Join(dir, "sdxs.gguf"))
		// The record the model store keeps beside a downloaded model.
		meta, _ := json.Marshal(map[string]string{"id": imageModel, "engine": string(engine.EngineSDCpp)})
		if err := os.WriteFile(filepath.Join(dir, ".studio-model.json"), meta, 0o644); err != nil {
			t.Fatal(err)
		}
		img := hosted.Client(hosted.SD, hosted.Options{Exe: os.Args[0], Threads: 1, Log: log, KeepAlive: -1})
		t.Cleanup(func() { img.Close() })
		if err := img.LoadError(); err != nil {
			t.Fatalf("stable-diffusion.cpp child: %v", err)
		}
		engines = append(engines, img)
	}
	runner := engine.NewRunner(engine.RunnerConfig{
		Store:    engine.NewStore(models, engine.StoreOptions{Log: log}),
		Engines:  engines,
		BudgetGB: func() float64 { return 100 },
		Probe:    unknownGPU{},
		Log:      log,
	})
	cfgDir := t.TempDir()
	s := settings.Default()
	s.ModelsDir = models
	var jobs studio.JobRunner = runner
	if o.runner != nil {
		jobs = o.runner(runner)
	}
	w := studio.NewWorker(studio.WorkerConfig{
		Settings: func() settings.Settings { return s },
		Runner:   jobs,
		Creds:    settings.NewFileCredentialStore(cfgDir),
		Log:      log,
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = w.Shutdown(ctx)
	})
	h := &holder{Worker: w}
	srv, err := api.Start(api.Options{Worker: h, Models: runner, Log: log, ConfigDir: cfgDir,
		MaxBody: o.maxBody, GateWait: o.gateWait})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return &env{worker: w, runner: runner, srv: srv, cfgDir: cfgDir, hold: h, llm: llmEngine}
}

func linkOrCopy(t testing.TB, from, to string) {
	t.Helper()
	if os.Link(from, to) == nil {
		return
	}
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// client is the official OpenAI Go client pointed at the local API.
func (e *env) client(token string, opts ...option.RequestOption) openai.Client {
	base := []option.RequestOption{option.WithBaseURL(e.srv.URL() + "/v1/"), option.WithAPIKey(token), option.WithMaxRetries(0)}
	return openai.NewClient(append(base, opts...)...)
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func chatParams(content string, maxTokens int64) openai.ChatCompletionNewParams {
	return openai.ChatCompletionNewParams{
		Model:       chatModel,
		Messages:    []openai.ChatCompletionMessageParamUnion{openai.UserMessage(content)},
		MaxTokens:   openai.Int(maxTokens),
		Temperature: openai.Float(0),
		Seed:        openai.Int(7),
	}
}

func TestChatWithTheOpenAIClient(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.client(e.srv.Token())
	ctx := ctxT(t)

	models, err := c.Models.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(models.Data) != 1 || models.Data[0].ID != chatModel {
		t.Fatalf("models: %+v", models.Data)
	}

	res, err := c.Chat.Completions.New(ctx, chatParams("Say hello.", 8))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Choices) != 1 || res.Choices[0].Message.Content == "" || res.Model != chatModel || res.ID == "" {
		t.Fatalf("completion: %+v", res)
	}
	if res.Usage.CompletionTokens < 1 || res.Usage.PromptTokens < 1 || res.Choices[0].FinishReason == "" {
		t.Fatalf("usage or finish reason missing: %+v", res)
	}
	// The same request with the same seed gives the same reply (greedy).
	again, err := c.Chat.Completions.New(ctx, chatParams("Say hello.", 8))
	if err != nil {
		t.Fatal(err)
	}
	if again.Choices[0].Message.Content != res.Choices[0].Message.Content {
		t.Errorf("same request, different replies: %q and %q", res.Choices[0].Message.Content, again.Choices[0].Message.Content)
	}

	snap := e.worker.Snapshot()
	if len(snap.Recent) != 2 || !snap.Recent[0].Local || snap.Recent[0].Outcome != studio.OutcomeDone || snap.Recent[0].Model != chatModel {
		t.Fatalf("history: %+v", snap.Recent)
	}
	if snap.Counters != (studio.Counters{}) {
		t.Errorf("local jobs counted toward the studio's totals: %+v", snap.Counters)
	}

	// An unknown model names the ones there are.
	p := chatParams("hi", 4)
	p.Model = "nope.gguf"
	_, err = c.Chat.Completions.New(ctx, p)
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusNotFound || !strings.Contains(apiErr.Message, chatModel) {
		t.Fatalf("unknown model: %v", err)
	}
	// A job at fault is a 400 with the engine's field.
	p = chatParams("hi", 4)
	p.MaxTokens = openai.Int(0)
	_, err = c.Chat.Completions.New(ctx, p)
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusBadRequest || !strings.Contains(apiErr.Message, "maxTokens") {
		t.Fatalf("max_tokens 0: %v", err)
	}
}

func TestStreamedChatArrivesBeforeTheEnd(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.client(e.srv.Token())
	ctx := ctxT(t)

	want, err := c.Chat.Completions.New(ctx, chatParams("Tell me a story.", 24))
	if err != nil {
		t.Fatal(err)
	}

	// The engine is held at its first piece of text until the client has
	// read it: that chunk cannot have waited for the end.
	reached, release := e.hold.holdNext()
	defer release()
	p := chatParams("Tell me a story.", 24)
	p.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	stream := c.Chat.Completions.NewStreaming(ctx, p)
	defer stream.Close()
	var text strings.Builder
	var finish string
	var usage openai.CompletionUsage
	chunks := 0
	for stream.Next() {
		ch := stream.Current()
		if ch.Object != "chat.completion.chunk" || ch.Model != chatModel {
			t.Fatalf("chunk: %+v", ch)
		}
		chunks++
		if ch.Usage.CompletionTokens > 0 {
			usage = ch.Usage
		}
		for _, choice := range ch.Choices {
			if choice.Delta.Content != "" && text.Len() == 0 {
				select {
				case <-reached:
				default:
					t.Fatal("text arrived before the engine made any")
				}
				if snap := e.worker.Snapshot(); snap.Current == nil || !snap.Current.Local {
					t.Fatalf("the first text arrived after the job ended: %+v", snap.Current)
				}
				release()
			}
			text.WriteString(choice.Delta.Content)
			if choice.FinishReason != "" {
				finish = choice.FinishReason
			}
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if text.String() != want.Choices[0].Message.Content {
		t.Errorf("streamed %q, the same request unstreamed made %q", text.String(), want.Choices[0].Message.Content)
	}
	if finish != string(want.Choices[0].FinishReason) || usage.CompletionTokens != want.Usage.CompletionTokens {
		t.Errorf("finish %q usage %+v, want %q %+v", finish, usage, want.Choices[0].FinishReason, want.Usage)
	}
	if chunks < 4 { // role, at least one piece, finish, usage
		t.Errorf("only %d chunks", chunks)
	}
}

func TestImageWithTheOpenAIClient(t *testing.T) {
	e := newEnv(t, envOptions{image: true})
	c := e.client(e.srv.Token())
	ctx := ctxT(t)
	res, err := c.Images.Generate(ctx, openai.ImageGenerateParams{
		Model:          imageModel,
		Prompt:         "a lighthouse",
		Size:           "64x64",
		ResponseFormat: openai.ImageGenerateParamsResponseFormatB64JSON,
	}, option.WithJSONSet("steps", 1), option.WithJSONSet("seed", 3))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Data) != 1 {
		t.Fatalf("images: %d", len(res.Data))
	}
	raw, err := base64.StdEncoding.DecodeString(res.Data[0].B64JSON)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := png.DecodeConfig(bytes.NewReader(raw))
	if err != nil || cfg.Width != 64 || cfg.Height != 64 {
		t.Fatalf("image: %v %+v", err, cfg)
	}
	if snap := e.worker.Snapshot(); len(snap.Recent) != 1 || !snap.Recent[0].Local || snap.Recent[0].Kind != engine.KindImage || snap.Counters.Done != 0 {
		t.Fatalf("history %+v counters %+v", snap.Recent, snap.Counters)
	}
	// A URL answer is refused in words.
	_, err = c.Images.Generate(ctx, openai.ImageGenerateParams{Model: imageModel, Prompt: "x", Size: "64x64",
		ResponseFormat: openai.ImageGenerateParamsResponseFormatURL})
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusBadRequest || !strings.Contains(apiErr.Message, "b64_json") {
		t.Fatalf("url format: %v", err)
	}
}

func TestGuards(t *testing.T) {
	e := newEnv(t, envOptions{maxBody: 4 << 10, gateWait: -1})
	ctx := ctxT(t)
	var apiErr *openai.Error

	// The real client: no token, a wrong token.
	c0 := e.client("")
	_, err := c0.Models.List(ctx)
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no token: %v", err)
	}
	c1 := e.client(strings.Repeat("0", 64))
	_, err = c1.Models.List(ctx)
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusUnauthorized || !strings.Contains(apiErr.Message, "wrong") {
		t.Fatalf("wrong token: %v", err)
	}
	// A web page's request (its Origin), with the right token.
	c2 := e.client(e.srv.Token(), option.WithHeader("Origin", "https://evil.example"))
	_, err = c2.Models.List(ctx)
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusForbidden {
		t.Fatalf("foreign origin: %v", err)
	}
	// A DNS-rebound name for 127.0.0.1.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.srv.URL()+"/v1/models", nil)
	req.Host = "rebind.evil.example"
	req.Header.Set("Authorization", "Bearer "+e.srv.Token())
	if code := do(t, req); code != http.StatusForbidden {
		t.Fatalf("foreign Host: %d", code)
	}
	// localhost by name is this computer.
	req, _ = http.NewRequestWithContext(ctx, http.MethodGet, e.srv.URL()+"/v1/models", nil)
	req.Host = "localhost"
	req.Header.Set("Authorization", "Bearer "+e.srv.Token())
	if code := do(t, req); code != http.StatusOK {
		t.Fatalf("Host localhost: %d", code)
	}
	// An oversized body.
	big := chatParams(strings.Repeat("a", 8<<10), 4)
	ok := e.client(e.srv.Token())
	_, err = ok.Chat.Completions.New(ctx, big)
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized body: %v", err)
	}
	// A busy worker: one request holds the gate (held at its first text);
	// the next gets 503 with Retry-After.
	reached, release := e.hold.holdNext()
	defer release()
	first := make(chan error, 1)
	go func() {
		c := e.client(e.srv.Token())
		_, err := c.Chat.Completions.New(ctx, chatParams("Tell me a story.", 16))
		first <- err
	}()
	select {
	case <-reached:
	case err := <-first:
		t.Fatalf("the first request ended before it held the gate: %v", err)
	}
	var resp *http.Response
	c3 := e.client(e.srv.Token(), option.WithResponseInto(&resp))
	_, err = c3.Chat.Completions.New(ctx, chatParams("hi", 4))
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusServiceUnavailable || resp == nil || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("busy: %v", err)
	}
	release()
	if err := <-first; err != nil {
		t.Fatalf("the first request: %v", err)
	}
}

func do(t *testing.T, req *http.Request) int {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

func TestControlRoutesAndInfoFile(t *testing.T) {
	e := newEnv(t, envOptions{})
	fi, err := os.Stat(api.InfoFile(e.cfgDir))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("info file mode %v, want 0600", fi.Mode().Perm())
	}
	info, err := api.ReadInfo(e.cfgDir)
	if err != nil || info.URL != e.srv.URL() || info.Token != e.srv.Token() {
		t.Fatalf("info %+v %v", info, err)
	}
	ctx := ctxT(t)
	st, err := api.Call(ctx, e.cfgDir, http.MethodPost, "/pause")
	if err != nil || !st.Paused || st.State != studio.StatePaused {
		t.Fatalf("pause: %+v %v", st, err)
	}
	st, err = api.Call(ctx, e.cfgDir, http.MethodPost, "/resume")
	if err != nil || st.Paused {
		t.Fatalf("resume: %+v %v", st, err)
	}
	st, err = api.Call(ctx, e.cfgDir, http.MethodPost, "/pause?now=1")
	if err != nil || !st.Paused {
		t.Fatalf("pause now: %+v %v", st, err)
	}
	// A paused worker still runs a local request.
	c := e.client(e.srv.Token())
	if _, err := c.Chat.Completions.New(ctx, chatParams("hi", 2)); err != nil {
		t.Fatal(err)
	}
	st, err = api.Call(ctx, e.cfgDir, http.MethodGet, "/status")
	if err != nil || len(st.Recent) != 1 || !st.Recent[0].Local || st.Counters.Done != 0 {
		t.Fatalf("status: %+v %v", st, err)
	}
	raw, _ := json.Marshal(st)
	if strings.Contains(string(raw), e.srv.Token()) {
		t.Error("the status holds the token")
	}
	// Gone server: the file goes, and a call says no app runs.
	e.srv.Close()
	_, err = api.Call(ctx, e.cfgDir, http.MethodGet, "/status")
	var nr *api.NotRunningError
	if !errors.As(err, &nr) {
		t.Fatalf("after close: %v", err)
	}
}

// Bad requests are refused in words, with the status OpenAI's clients
// expect, and the worker carries on.
func TestBadRequests(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := ctxT(t)
	cases := []struct {
		method, path, body string
		code               int
		mention            string
	}{
		{"POST", "/v1/chat/completions", `{"model":`, 400, "not a valid JSON object"},
		{"POST", "/v1/chat/completions", `{"model":"tiny.gguf"}`, 400, "messages: missing"},
		{"POST", "/v1/chat/completions", `{"model":"tiny.gguf","messages":[]}`, 400, "messages"},
		{"POST", "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}]}`, 400, "model: missing"},
		{"POST", "/v1/chat/completions", `{"model":"tiny.gguf","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}`, 400, "image_url"},
		{"POST", "/v1/chat/completions", `{"model":"tiny.gguf","messages":[{"role":"user","content":"hi"}],"stop":3}`, 400, "stop: must be a string or a list"},
		{"POST", "/v1/chat/completions", `{"model":"tiny.gguf","messages":[{"role":"user","content":"hi"}],"n":2}`, 400, "only 1 choice"},
		{"POST", "/v1/chat/completions", `{"model":"tiny.gguf","messages":[{"role":"user","content":"a\u0000b"}]}`, 400, "messages[0].content"},
		{"POST", "/v1/chat/completions", `{"model":"../../etc/passwd","messages":[{"role":"user","content":"hi"}]}`, 404, "there is no llm model"},
		{"POST", "/v1/chat/completions", `{"model":"tiny.gguf","messages":[{"role":"user","content":"hi"}],"stream":true,"max_tokens":-1}`, 400, "maxTokens"},
		{"POST", "/v1/images/generations", `{"model":"x","prompt":"a cat","size":"big"}`, 400, "size"},
		{"POST", "/v1/images/generations", `{"model":"x","prompt":"a cat","n":3}`, 400, "only 1 image"},
		{"POST", "/v1/images/generations", `{"model":"x","prompt":""}`, 400, "prompt: missing"},
		{"POST", "/v1/images/generations", `{"model":"tiny.gguf","prompt":"a cat","size":"64x64"}`, 404, "no image model"},
		{"POST", "/pause?now=maybe", ``, 400, "now must be 1 or 0"},
		{"GET", "/v1/chat/completions", ``, 405, ""},
		{"GET", "/nothing", ``, 404, ""},
	}
	for _, tc := range cases {
		req, _ := http.NewRequestWithContext(ctx, tc.method, e.srv.URL()+tc.path, strings.NewReader(tc.body))
		req.Header.Set("Authorization", "Bearer "+e.srv.Token())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code || !strings.Contains(string(b), tc.mention) {
			t.Errorf("%s %s %s: %d %s, want %d with %q", tc.method, tc.path, tc.body, resp.StatusCode, b, tc.code, tc.mention)
		}
	}
	// The worker carries on.
	c := e.client(e.srv.Token())
	if _, err := c.Chat.Completions.New(ctx, chatParams("hi", 2)); err != nil {
		t.Fatal(err)
	}
	// A truncated .gguf in the models folder is not listed nor run.
	whole, err := os.ReadFile(filepath.Join(e.runner.Store().Root(), chatModel))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.runner.Store().Root(), "cut.gguf"), whole[:len(whole)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	list, err := c.Models.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range list.Data {
		if m.ID == "cut.gguf" {
			t.Error("/v1/models lists a truncated GGUF")
		}
	}
	p := chatParams("hi", 2)
	p.Model = "cut.gguf"
	var apiErr *openai.Error
	if _, err := c.Chat.Completions.New(ctx, p); !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusNotFound {
		t.Errorf("a chat with the truncated GGUF: %v", err)
	}
	if n := e.worker.Snapshot().Counters; n != (studio.Counters{}) {
		t.Errorf("counters %+v", n)
	}
}

// untilCancelled is a runner whose jobs run until their context ends, as
// an engine that honours cancellation does; started says a job began.
type untilCancelled struct {
	studio.JobRunner
	started chan struct{}
}

func (r untilCancelled) Run(ctx context.Context, job engine.Job, progress engine.ProgressFunc) (engine.Result, error) {
	close(r.started)
	<-ctx.Done()
	return engine.Result{}, ctx.Err()
}

// answer is what a chat request started by startUntilCancelled got.
type answer struct {
	resp *http.Response
	err  error
}

// startUntilCancelled sends a chat request whose job runs until it is
// cancelled, and returns once that job has started; the request's answer
// arrives on got.
func startUntilCancelled(t *testing.T) (*env, <-chan answer) {
	t.Helper()
	started := make(chan struct{})
	e := newEnv(t, envOptions{runner: func(r studio.JobRunner) studio.JobRunner {
		return untilCancelled{JobRunner: r, started: started}
	}})
	ctx := ctxT(t)
	got := make(chan answer, 1)
	go func() {
		var resp *http.Response
		c := e.client(e.srv.Token(), option.WithResponseInto(&resp))
		_, err := c.Chat.Completions.New(ctx, chatParams("hi", 4))
		got <- answer{resp, err}
	}()
	select {
	case <-started:
	case a := <-got:
		t.Fatalf("the request ended before its job started: %v", a.err)
	}
	return e, got
}

// A local job stopped by the donor's "Pause now" is answered for what it
// is: 503, the OpenAI error shape, the code worker_paused and the words
// "the donor paused this computer", with no Retry-After (a pause has no
// known end). Before this it was a 500 server error.
func TestPauseNowAnswersPausedNotServerError(t *testing.T) {
	e, got := startUntilCancelled(t)
	req, _ := http.NewRequestWithContext(ctxT(t), http.MethodPost, e.srv.URL()+"/pause?now=1", nil)
	req.Header.Set("Authorization", "Bearer "+e.srv.Token())
	if code := do(t, req); code != http.StatusOK {
		t.Fatalf("POST /pause?now=1: %d", code)
	}
	a := <-got
	var apiErr *openai.Error
	if !errors.As(a.err, &apiErr) || apiErr.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("want 503, got %v", a.err)
	}
	if apiErr.Code != "worker_paused" || apiErr.Type != "server_error" || !strings.Contains(apiErr.Message, "the donor paused this computer") {
		t.Errorf("error body: code %q type %q message %q", apiErr.Code, apiErr.Type, apiErr.Message)
	}
	if ra := a.resp.Header.Get("Retry-After"); ra != "" {
		t.Errorf("Retry-After %q on a pause", ra)
	}
	snap := e.worker.Snapshot()
	if !snap.Paused || len(snap.Recent) != 1 || snap.Recent[0].Outcome != studio.OutcomeFailed {
		t.Errorf("paused %t, history %+v", snap.Paused, snap.Recent)
	}
}

// A local job that the worker's shutdown stops is answered 503 with
// Retry-After, as a request that comes while the worker stops, not 500.
func TestShutdownMidJobAnswersUnavailable(t *testing.T) {
	e, got := startUntilCancelled(t)
	now, cancel := context.WithCancel(context.Background())
	cancel() // no grace: the running job is stopped at once
	go func() { _ = e.worker.Shutdown(now) }()
	a := <-got
	var apiErr *openai.Error
	if !errors.As(a.err, &apiErr) || apiErr.StatusCode != http.StatusServiceUnavailable ||
		!strings.Contains(apiErr.Message, "shut down before the job finished") {
		t.Fatalf("want 503 saying the worker shut down, got %v", a.err)
	}
	if ra := a.resp.Header.Get("Retry-After"); ra == "" {
		t.Error("no Retry-After")
	}
}
