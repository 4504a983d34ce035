// Package llama runs chat completions on llama.cpp through yzma (purego, no
// cgo). The libraries are the prebuilt builds that `make runtime` fetches
// (packaging/fetch-runtime.sh); FindLibDir and LoadRuntime find and load them
// once per process. Engine keeps the last model resident between jobs.
package llama

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	yz "github.com/hybridgroup/yzma/pkg/llama"

	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/engine/gguf"
)

// Config configures an Engine.
type Config struct {
	// LibDir is the donor's llama library folder setting; empty searches
	// $STUDIO_WORKER_LLAMA_LIB and next to the program (see FindLibDir).
	LibDir string
	// Threads for generation; 0 means DefaultThreads(). More threads than
	// free cores makes llama.cpp collapse when anything else wants a core.
	Threads int
	// Log receives the engine's and llama.cpp's log lines.
	Log *slog.Logger
}

// DefaultThreads leaves one core to everything else: max(1, cores-1).
func DefaultThreads() int { return max(1, runtime.NumCPU()-1) }

// Engine runs `llm` tasks. It is safe for concurrent use; jobs run one at a
// time.
type Engine struct {
	log     *slog.Logger
	threads atomic.Int32
	libDir  string
	libErr  error

	mu  sync.Mutex // serialises Run and Release
	res *resident

	residentBytes atomic.Uint64
	// residentPath mirrors res.path so that it can be read while a job
	// holds mu.
	residentPath atomic.Pointer[string]
	loads        atomic.Int64
}

// resident is the loaded model with its context.
type resident struct {
	path    string
	size    int64
	modTime time.Time
	model   yz.Model
	vocab   yz.Vocab
	ctx     yz.Context
	nCtx    int // the job's context limit
	wantCtx int // what the context was made for
	nBatch  int
	threads int
	// nCtxTrain is the model's trained context; 0 when unknown.
	nCtxTrain int
	tmpl      *chatTemplate // the model's own template (source "" when none)
	facts     *vocabFacts
	weights   uint64 // bytes of weights
}

// New loads the llama.cpp libraries (once per process) and returns the
// engine. It never fails: without the libraries Kinds is empty and LibError
// says why, in words for the donor.
func New(cfg Config) *Engine {
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	e := &Engine{log: log}
	e.SetThreads(cfg.Threads)
	e.libDir, e.libErr = LoadRuntime(cfg.LibDir, log)
	if e.libErr != nil {
		log.Warn("LLM jobs unavailable: "+e.libErr.Error(), "op", "llama.load")
	}
	return e
}

// SetThreads changes the generation threads from the next job on
// (0 = DefaultThreads()).
func (e *Engine) SetThreads(n int) {
	if n <= 0 {
		n = DefaultThreads()
	}
	e.threads.Store(int32(n))
}

// Threads is the thread count the next job uses.
func (e *Engine) Threads() int { return int(e.threads.Load()) }

// LibError says why the libraries did not load (nil when they did).
func (e *Engine) LibError() error { return e.libErr }

// LibDir is the folder the libraries were loaded from.
func (e *Engine) LibDir() string { return e.libDir }

// Name implements engine.Engine.
func (e *Engine) Name() engine.EngineName { return engine.EngineLlamaCpp }

// Kinds implements engine.Engine: llm only when the libraries loaded.
func (e *Engine) Kinds() []engine.TaskKind {
	if e.libErr != nil {
		return nil
	}
	return []engine.TaskKind{engine.KindLLM}
}

// ResidentVRAMBytes implements engine.Engine: what releasing the resident
// model would give back in GPU memory. A runtime without a GPU backend holds
// the model in system memory, so this is 0 there; see ResidentBytes.
func (e *Engine) ResidentVRAMBytes() uint64 {
	if e.libErr != nil || !yz.SupportsGpuOffload() {
		return 0
	}
	return e.residentBytes.Load()
}

// ResidentBytes is the memory the resident model and its context hold
// (weights plus an estimate of the KV cache), wherever they live.
func (e *Engine) ResidentBytes() uint64 { return e.residentBytes.Load() }

// ResidentModel is the path of the GGUF file held in memory, "" when none.
// It does not wait for a running job.
func (e *Engine) ResidentModel() string {
	if p := e.residentPath.Load(); p != nil {
		return *p
	}
	return ""
}

// Loads counts model loads since the engine started (warm jobs load none).
func (e *Engine) Loads() int64 { return e.loads.Load() }

// Release implements engine.Engine: frees the resident model.
func (e *Engine) Release() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.releaseLocked()
	return nil
}

func (e *Engine) releaseLocked() {
	if e.res == nil {
		return
	}
	e.freeContextLocked()
	yz.ModelFree(e.res.model)
	e.log.Info("model released", "op", "llama.release", "path", e.res.path)
	e.res = nil
	e.residentPath.Store(nil)
	e.residentBytes.Store(0)
}

func (e *Engine) freeContextLocked() {
	if e.res != nil && e.res.ctx != 0 {
		yz.Free(e.res.ctx)
		e.res.ctx = 0
	}
}

// PromptTooLongError refuses a prompt that does not fit the context: it is
// never truncated. Run returns it inside an *engine.JobError (field
// "messages"): the same job cannot fit anywhere with the same contextSize.
// When the prompt was refused on its byte length alone, before tokenizing,
// PromptTokens is 0 and PromptBytes and MaxTokenBytes say why.
type PromptTooLongError struct {
	PromptTokens int
	Context      int
	// PromptBytes is the formatted prompt's length, MaxTokenBytes the most
	// bytes one token of this model's vocabulary covers.
	PromptBytes, MaxTokenBytes int
}

func (e *PromptTooLongError) Error() string {
	if e.PromptTokens == 0 && e.PromptBytes > 0 {
		return fmt.Sprintf("the prompt is %d bytes, more than a %d-token context can hold whatever the text (one token of this model covers at most %d bytes); shorten the conversation or raise contextSize",
			e.PromptBytes, e.Context, e.MaxTokenBytes)
	}
	return fmt.Sprintf("the prompt is %d tokens but the model's context holds %d (with room for at least one reply token); shorten the conversation or raise contextSize",
		e.PromptTokens, e.Context)
}

func tooLong(e *PromptTooLongError) error {
	return &engine.JobError{Field: "messages", Reason: e.Error(), Err: e}
}

// Run implements engine.Engine.
func (e *Engine) Run(ctx context.Context, job engine.Job, progress engine.ProgressFunc) (engine.Result, error) {
	if progress == nil {
		progress = func(engine.Progress) {}
	}
	if job.Task.Kind != engine.KindLLM || job.Task.LLM == nil {
		return engine.Result{}, &engine.CannotServeError{Engine: string(engine.EngineLlamaCpp), Kind: job.Task.Kind}
	}
	if e.libErr != nil {
		return engine.Result{}, &engine.CannotServeError{Engine: string(engine.EngineLlamaCpp), Kind: engine.KindLLM,
			Reason: fmt.Sprintf("%v: %v", errLibsMissing, e.libErr)}
	}
	p := job.Task.LLM
	opts, err := genOptions(p, job.Source.CliDefaults)
	if err != nil {
		return engine.Result{}, err
	}
	path, err := modelPath(job)
	if err != nil {
		return engine.Result{}, err
	}
	if err := ctx.Err(); err != nil {
		return engine.Result{}, err
	}

	e.mu.Lock()
	defer e.mu.Unlock()
	start := time.Now()
	if err := e.ensureModelLocked(path, opts.contextSize, progress); err != nil {
		return engine.Result{}, fileError(job, path, err)
	}
	out, err := e.generateLocked(ctx, p, opts, progress)
	if err != nil {
		return engine.Result{}, err
	}
	elapsed := time.Since(start)

	content, reasoning := splitThink(out.text, out.promptOpenedThink)
	doc := completion{
		Object: "chat.completion",
		Model:  job.Model,
		Choices: []choice{{
			Index:        0,
			Message:      message{Role: "assistant", Content: content, ReasoningContent: reasoning},
			FinishReason: out.finish,
		}},
		Usage: usage{
			PromptTokens:     out.promptTokens,
			CompletionTokens: out.completionTokens,
			TotalTokens:      out.promptTokens + out.completionTokens,
		},
		ElapsedMS: uint64(elapsed.Milliseconds()),
	}
	body, err := json.Marshal(doc)
	if err != nil {
		return engine.Result{}, fmt.Errorf("llama: encoding the completion: %w", err)
	}
	// One token says nothing about speed (no token was evaluated after it).
	tps := 0.0
	if s := out.genTime.Seconds(); s > 0 && out.completionTokens > 1 {
		tps = float64(out.completionTokens) / s
	}
	e.log.Info("chat completion done", "op", "llama.run", "job", job.ID, "model", job.Model,
		"prompt_tokens", out.promptTokens, "completion_tokens", out.completionTokens,
		"finish", out.finish, "tokens_per_s", math.Round(tps*10)/10, "elapsed_ms", elapsed.Milliseconds())
	return engine.Result{
		JSON: body,
		Stats: engine.Stats{
			PromptTokens:     out.promptTokens,
			CompletionTokens: out.completionTokens,
			TokensPerSecond:  tps,
		},
	}, nil
}

// The chat.completion document of studio-protocol §4.5.
type completion struct {
	Object    string   `json:"object"`
	Model     string   `json:"model"`
	Choices   []choice `json:"choices"`
	Usage     usage    `json:"usage"`
	ElapsedMS uint64   `json:"elapsed_ms"`
}

type choice struct {
	Index        int     `json:"index"`
	Message      message `json:"message"`
	FinishReason string  `json:"finish_reason"`
}

type message struct {
	Role             string `json:"role"`
	Content          string `json:"content"`
	ReasoningContent string `json:"reasoning_content,omitempty"`
}

type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

type options struct {
	maxTokens   int
	temperature float64
	topP        float64 // 1 = off
	seed        uint32
	stops       []string
	contextSize int
	grammar     string         // GBNF; "" for free text
	kwargs      map[string]any // chat template arguments; nil when none
}

// genOptions applies the protocol's defaults after engine.Job.Validate has
// refused values that can never work (its *engine.JobError names the field
// in words the donor and the studio's log understand).
func genOptions(p *engine.LLMParams, cli *engine.CliDefaults) (options, error) {
	o := options{maxTokens: engine.DefaultMaxTokens, temperature: engine.DefaultTemperature, topP: 1,
		seed: yz.DefaultSeed, contextSize: engine.DefaultContextSize}
	job := engine.Job{Task: engine.Task{Kind: engine.KindLLM, LLM: p}, Source: engine.ModelSource{CliDefaults: cli}}
	if err := job.Validate(); err != nil {
		return o, err
	}
	if p.MaxTokens != nil {
		o.maxTokens = *p.MaxTokens
	}
	if p.Temperature != nil {
		o.temperature = *p.Temperature
	}
	if p.TopP != nil {
		o.topP = *p.TopP
	}
	if p.Seed != nil {
		// llama.cpp seeds are 32-bit; 0xFFFFFFFF would mean "random".
		o.seed = uint32(*p.Seed % yz.DefaultSeed)
	}
	o.stops = p.Stop
	o.grammar = grammarFor(p.JSONSchema)
	if cli != nil && cli.ContextSize != 0 {
		o.contextSize = cli.ContextSize
	}
	kw, err := engine.TemplateKwargs(cli, p)
	if err != nil {
		return o, err
	}
	o.kwargs = kw
	return o, nil
}

// modelPath picks the GGUF: the file with role "model", else the first
// .gguf file of the model source.
func modelPath(job engine.Job) (string, error) {
	if p := job.Files[engine.RoleModel]; p != "" {
		return p, nil
	}
	for _, f := range job.Source.Files {
		if p := job.Files[f.Role]; p != "" && strings.EqualFold(filepath.Ext(p), ".gguf") {
			return p, nil
		}
	}
	roles := make([]string, 0, len(job.Files))
	for r := range job.Files {
		roles = append(roles, string(r))
	}
	sort.Strings(roles)
	for _, r := range roles {
		if p := job.Files[engine.FileRole(r)]; strings.EqualFold(filepath.Ext(p), ".gguf") {
			return p, nil
		}
	}
	return "", engine.Invalid("modelSource.files", "the model %q has no GGUF file (a file with role %q or a .gguf file is needed)", job.Model, engine.RoleModel)
}

// notModelError is a file that is not a model llama.cpp can load: a
// property of the job's files, not of this machine.
type notModelError struct{ reason string }

func (e *notModelError) Error() string { return e.reason }

// fileError makes a model file's failure a *engine.JobError naming the
// file's place in the offer when the file itself is at fault; other errors
// (an unreadable disk, too little memory) are returned as they are, to be
// retried.
func fileError(job engine.Job, path string, err error) error {
	var nm *notModelError
	if !errors.As(err, &nm) {
		return err
	}
	field := "modelSource.files"
	for i, f := range job.Source.Files {
		if job.Files[f.Role] == path {
			field = fmt.Sprintf("modelSource.files[%d]", i)
			break
		}
	}
	// The ModelFileError inside has the runner remove the file from the
	// store, so that the next offer downloads it again.
	return &engine.JobError{Field: field, Reason: nm.reason, Err: &engine.ModelFileError{Path: path, Reason: nm.reason}}
}

// memoryWords mark a llama.cpp load error that is this machine's (memory,
// mapping), not the file's.
var memoryWords = []string{"alloc", "memory", "mmap", "mlock", "cuda", "vulkan", "metal"}

func machineReason(reason string) bool {
	r := strings.ToLower(reason)
	for _, w := range memoryWords {
		if strings.Contains(r, w) {
			return true
		}
	}
	return false
}

// checkGGUF gives a clear reason for files llama.cpp would only call
// "failed to load".
func checkGGUF(path string) (os.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot open the model file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("cannot read the model file: %w", err)
	}
	head := make([]byte, 4)
	if _, err := io.ReadFull(f, head); err != nil || string(head) != "GGUF" {
		return nil, &notModelError{fmt.Sprintf("%s is not a GGUF model file (it does not start with the GGUF signature)", filepath.Base(path))}
	}
	// The structure and hyper-parameters are checked in Go before
	// llama.cpp reads a byte of them (issue 10: malformed headers abort it).
	if _, err := gguf.CheckLLM(f, st.Size()); err != nil {
		if gguf.IsFormatError(err) {
			return nil, &notModelError{fmt.Sprintf("%s is a malformed GGUF file: %v", filepath.Base(path), err)}
		}
		return nil, fmt.Errorf("cannot read the model file: %w", err)
	}
	return st, nil
}

// ensureModelLocked keeps the resident model when it is the same file, else
// loads the new one; then makes sure a context of the right size exists.
func (e *Engine) ensureModelLocked(path string, wantCtx int, progress engine.ProgressFunc) error {
	st, err := checkGGUF(path)
	if err != nil {
		return err
	}
	if r := e.res; r != nil && (r.path != path || r.size != st.Size() || !r.modTime.Equal(st.ModTime())) {
		e.releaseLocked()
	}
	if e.res == nil {
		progress(engine.Progress{Phase: engine.PhaseLoad, Done: 0, Total: 1})
		t0 := time.Now()
		llamaLog.mark()
		params := yz.ModelDefaultParams()
		model, err := yz.ModelLoadFromFile(path, params)
		if err != nil {
			reason := llamaLog.firstError()
			if reason != "" && machineReason(reason) {
				return fmt.Errorf("llama.cpp could not load %s: %s", filepath.Base(path), reason)
			}
			if reason == "" {
				reason = "the file may be corrupt or truncated, or its architecture unknown to llama.cpp " + LlamaCppRelease
			}
			return &notModelError{fmt.Sprintf("llama.cpp could not load %s: %s", filepath.Base(path), reason)}
		}
		e.loads.Add(1)
		vocab := yz.ModelGetVocab(model)
		r := &resident{path: path, size: st.Size(), modTime: st.ModTime(), model: model,
			vocab: vocab, nCtxTrain: int(yz.ModelNCtxTrain(model)),
			tmpl: compileTemplate(yz.ModelChatTemplate(model, "")), facts: readVocab(vocab),
			weights: yz.ModelSize(model)}
		if r.weights == 0 {
			r.weights = uint64(st.Size())
		}
		e.res = r
		e.residentPath.Store(&r.path)
		e.log.Info("model loaded", "op", "llama.load", "path", path, "bytes", st.Size(),
			"trained_context", r.nCtxTrain, "load_ms", time.Since(t0).Milliseconds(),
			"has_template", r.tmpl.source != "", "control_tokens", r.facts.nSpecial)
		if r.tmpl.compErr != nil {
			e.log.Warn("the model's chat template is not Jinja this worker can compile; llama.cpp's built-in guess for it is used",
				"op", "llama.template", "path", path, "err", r.tmpl.compErr)
		}
		progress(engine.Progress{Phase: engine.PhaseLoad, Done: 1, Total: 1})
	}
	r := e.res
	nCtx := wantCtx
	if r.nCtxTrain > 0 && nCtx > r.nCtxTrain {
		nCtx = r.nCtxTrain
	}
	threads := e.Threads()
	if r.ctx != 0 && r.wantCtx == nCtx {
		if r.threads != threads {
			yz.SetNThreads(r.ctx, int32(threads), int32(threads))
			r.threads = threads
		}
		return nil
	}
	e.freeContextLocked()
	cp := yz.ContextDefaultParams()
	cp.NCtx = uint32(nCtx)
	cp.NBatch = uint32(min(nCtx, 512))
	cp.NUbatch = cp.NBatch
	cp.NSeqMax = 1
	cp.NThreads, cp.NThreadsBatch = int32(threads), int32(threads)
	llamaLog.mark()
	c, err := yz.InitFromModel(r.model, cp)
	if err != nil {
		reason := llamaLog.firstError()
		if reason == "" {
			reason = "probably not enough memory for the context"
		}
		return fmt.Errorf("llama.cpp could not create a %d-token context: %s", nCtx, reason)
	}
	// llama.cpp pads a context to a multiple of 256; the job still gets the
	// size it asked for, so that a prompt is refused the same way anywhere.
	alloc := int(yz.NCtx(c))
	r.ctx, r.wantCtx, r.nCtx, r.nBatch, r.threads = c, nCtx, min(nCtx, alloc), int(cp.NBatch), threads
	e.residentBytes.Store(r.weights + kvBytes(r.model, alloc))
	return nil
}

// kvBytes estimates the KV cache: keys and values in F16 for every layer
// and position.
func kvBytes(m yz.Model, nCtx int) uint64 {
	heads := uint64(yz.ModelNHead(m))
	if heads == 0 {
		return 0
	}
	kvWidth := uint64(yz.ModelNEmbd(m)) / heads * uint64(yz.ModelNHeadKV(m))
	return 2 * 2 * uint64(yz.ModelNLayer(m)) * uint64(nCtx) * kvWidth
}

type genOutput struct {
	text              string
	finish            string
	promptTokens      int
	completionTokens  int
	genTime           time.Duration
	promptOpenedThink bool
}

func (e *Engine) generateLocked(ctx context.Context, p *engine.LLMParams, o options, progress engine.ProgressFunc) (genOutput, error) {
	r := e.res
	tokens, cp, err := e.promptLocked(p, o)
	if err != nil {
		return genOutput{}, err
	}
	stops := o.stops
	if cp.template == fallbackTemplateName {
		stops = append(append([]string(nil), stops...), fallbackStop)
	}
	out := genOutput{promptTokens: len(tokens), promptOpenedThink: promptOpensThink(cp.text())}

	mem, err := yz.GetMemory(r.ctx)
	if err != nil {
		return out, fmt.Errorf("llama: %w", err)
	}
	if err := yz.MemoryClear(mem, true); err != nil {
		return out, fmt.Errorf("llama: clearing the context: %w", err)
	}
	sampler, err := newSampler(o, r.vocab)
	if err != nil {
		return out, err
	}
	defer yz.SamplerFree(sampler)

	for i := 0; i < len(tokens); i += r.nBatch {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		chunk := tokens[i:min(i+r.nBatch, len(tokens))]
		if rc, err := yz.Decode(r.ctx, yz.BatchGetOne(chunk)); err != nil || rc != 0 {
			return out, decodeError("the prompt", rc, err)
		}
	}
	runtime.KeepAlive(tokens)

	maxTokens := o.maxTokens
	scan := newStopScanner(stops)
	var text []byte
	sent := 0 // bytes of text reported as progress Text
	piece := make([]byte, 256)
	pos := len(tokens)
	genStart := time.Now()
	out.finish = "length"
	one := make([]yz.Token, 1)
	for n := 0; n < maxTokens; n++ {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		tok := yz.SamplerSample(sampler, r.ctx, -1)
		if yz.VocabIsEOG(r.vocab, tok) {
			out.finish = "stop"
			break
		}
		out.completionTokens++
		k := yz.TokenToPiece(r.vocab, tok, piece, 0, false)
		if k < 0 {
			piece = make([]byte, -k)
			k = yz.TokenToPiece(r.vocab, tok, piece, 0, false)
		}
		added := len(text)
		text = append(text, piece[:max(k, 0)]...)
		cut := scan.scan(string(text), added)
		var delta string
		if cut < 0 {
			// Text that no stop string can still cut, whole characters.
			safe := streamable(text, sent, scan.maxLen-1)
			delta, sent = string(text[sent:safe]), safe
		}
		progress(engine.Progress{Phase: engine.PhaseGenerate, Done: int64(out.completionTokens), Total: int64(maxTokens), Text: delta})
		if cut >= 0 {
			text = text[:max(cut, sent)]
			out.finish = "stop"
			break
		}
		if out.completionTokens == maxTokens || pos >= r.nCtx {
			break // length: the limit, or no room to evaluate this token
		}
		one[0] = tok
		if rc, err := yz.Decode(r.ctx, yz.BatchGetOne(one)); err != nil || rc != 0 {
			return out, decodeError("a reply token", rc, err)
		}
		pos++
	}
	out.genTime = time.Since(genStart)
	if sent < len(text) {
		progress(engine.Progress{Phase: engine.PhaseGenerate, Done: int64(out.completionTokens), Total: int64(maxTokens), Text: string(text[sent:])})
	}
	out.text = string(text)
	return out, nil
}

// streamable is the end of the reply text that may be streamed: it holds
// back the last hold bytes (a stop string of hold+1 bytes may still end
// there and cut them) and a character not yet whole. It is never below
// sent, what was streamed already.
func streamable(text []byte, sent, hold int) int {
	safe := max(sent, len(text)-max(hold, 0))
	for safe > sent && !utf8.Valid(text[sent:safe]) {
		safe--
	}
	return safe
}

// promptLocked formats the chat and tokenizes it, refusing a prompt that
// cannot fit the context: first on its byte length (cheap, before any
// tokenizing: n tokens cover at most n × the longest token's bytes), then
// on its token count.
func (e *Engine) promptLocked(p *engine.LLMParams, o options) ([]yz.Token, chatPrompt, error) {
	r := e.res
	cp, err := e.formatChat(r, chatMessages(p), o.kwargs)
	if err != nil {
		return nil, cp, err
	}
	e.log.Debug("chat template", "op", "llama.template", "template", cp.template)
	room := r.nCtx - 1 // at least one reply token
	if n, per := cp.bytes(), r.facts.maxTokenBytes; per > 0 && n > room*per {
		return nil, cp, tooLong(&PromptTooLongError{Context: r.nCtx, PromptBytes: n, MaxTokenBytes: per})
	}
	// Caller text was checked by engine.Job.Validate; the template's own
	// output is checked here, since llama.cpp's tokenizer cannot take a NUL
	// (the binding cannot pass it) nor invalid UTF-8 (its decoder throws,
	// which aborts the process).
	for _, seg := range cp.segments {
		if err := engine.CheckText("prompt", seg.text); err != nil {
			var je *engine.JobError
			errors.As(err, &je)
			return nil, cp, engine.Invalid("messages", "the model's chat template made a prompt llama.cpp cannot take: %s", je.Reason)
		}
	}
	tokens := tokenize(r.vocab, r.facts, cp.segments)
	if len(tokens) == 0 {
		return nil, cp, engine.Invalid("messages", "the conversation formats to an empty prompt")
	}
	if len(tokens) > room {
		return nil, cp, tooLong(&PromptTooLongError{PromptTokens: len(tokens), Context: r.nCtx})
	}
	return tokens, cp, nil
}

func decodeError(what string, rc int32, err error) error {
	if err != nil {
		return fmt.Errorf("llama.cpp failed to evaluate %s: %w", what, err)
	}
	reason := "error"
	switch rc {
	case 1:
		reason = "no room left in the context"
	case 2:
		reason = "aborted"
	}
	return fmt.Errorf("llama.cpp failed to evaluate %s (code %d: %s)", what, rc, reason)
}

// newSampler builds the chain: the JSON grammar (when the task has a
// jsonSchema), top-p (when set), temperature, then a seeded draw;
// temperature 0 is greedy.
func newSampler(o options, vocab yz.Vocab) (yz.Sampler, error) {
	chain := yz.SamplerChainInit(yz.SamplerChainDefaultParams())
	if o.grammar != "" {
		llamaLog.mark()
		g := yz.SamplerInitGrammar(vocab, o.grammar, "root")
		if g == 0 {
			yz.SamplerFree(chain)
			return 0, fmt.Errorf("llama.cpp rejected the JSON grammar: %s", llamaLog.firstError())
		}
		yz.SamplerChainAdd(chain, g)
	}
	if o.temperature <= 0 {
		yz.SamplerChainAdd(chain, yz.SamplerInitGreedy())
		return chain, nil
	}
	if o.topP < 1 {
		yz.SamplerChainAdd(chain, yz.SamplerInitTopP(float32(o.topP), 1))
	}
	yz.SamplerChainAdd(chain, yz.SamplerInitTemp(float32(o.temperature)))
	yz.SamplerChainAdd(chain, yz.SamplerInitDist(o.seed))
	return chain, nil
}
