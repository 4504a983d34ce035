package api

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/studio"
)

// The OpenAI-shaped routes. Field names and documents follow OpenAI's API
// reference (chat completions, chat completion chunks, images, models);
// requests run through studio.Worker.RunLocal, so the one-job gate and the
// engines are those of the studio's jobs.

// model is one entry of GET /v1/models.
type model struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
	// Kind and Engine are ours: "llm" or "image", and the engine that
	// runs it.
	Kind   string `json:"kind"`
	Engine string `json:"engine"`
}

func (s *Server) handleModels(w http.ResponseWriter, r *http.Request) {
	all, err := s.opts.Models.LocalModels()
	if err != nil {
		writeError(w, http.StatusInternalServerError, "server_error", err.Error())
		return
	}
	data := []model{}
	for _, m := range all {
		data = append(data, model{ID: m.ID, Object: "model", OwnedBy: "studio-worker", Kind: string(m.Kind), Engine: string(m.Engine)})
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": data})
}

// chatRequest is the part of OpenAI's chat completion request this worker
// reads. Messages keep their wire form: engine.Task decodes them (string
// or text content parts) and names a bad field.
type chatRequest struct {
	Model               string          `json:"model"`
	Messages            json.RawMessage `json:"messages"`
	MaxTokens           *int            `json:"max_tokens"`
	MaxCompletionTokens *int            `json:"max_completion_tokens"`
	Temperature         *float64        `json:"temperature"`
	TopP                *float64        `json:"top_p"`
	Stop                json.RawMessage `json:"stop"`
	Seed                *int64          `json:"seed"`
	N                   *int            `json:"n"`
	Stream              bool            `json:"stream"`
}

func (c chatRequest) modelName() string { return c.Model }

// task builds the engine task; the error is the request's fault.
func (c chatRequest) task() (engine.Task, error) {
	if c.N != nil && *c.N != 1 {
		return engine.Task{}, errors.New("n: only 1 choice is made per request")
	}
	if c.Seed != nil && *c.Seed < 0 {
		return engine.Task{}, errors.New("seed: must be 0 or more")
	}
	max := c.MaxCompletionTokens
	if max == nil {
		max = c.MaxTokens
	}
	var stop []string
	if len(c.Stop) > 0 && string(c.Stop) != "null" {
		var one string
		if err := json.Unmarshal(c.Stop, &one); err == nil {
			stop = []string{one}
		} else if err := json.Unmarshal(c.Stop, &stop); err != nil {
			return engine.Task{}, errors.New("stop: must be a string or a list of strings")
		}
	}
	doc := map[string]any{"kind": "llm", "messages": c.Messages}
	if max != nil {
		doc["maxTokens"] = *max
	}
	if c.Temperature != nil {
		doc["temperature"] = *c.Temperature
	}
	if c.TopP != nil {
		doc["topP"] = *c.TopP
	}
	if len(stop) > 0 {
		doc["stop"] = stop
	}
	if c.Seed != nil {
		doc["seed"] = *c.Seed
	}
	if len(c.Messages) == 0 {
		return engine.Task{}, errors.New("messages: missing")
	}
	raw, err := json.Marshal(doc)
	if err != nil {
		return engine.Task{}, err
	}
	var t engine.Task
	if err := json.Unmarshal(raw, &t); err != nil {
		return engine.Task{}, err
	}
	if err := t.Validate(); err != nil {
		return engine.Task{}, err
	}
	return t, nil
}

// localRequest is a request body that names a model and makes a task.
type localRequest interface {
	modelName() string
	task() (engine.Task, error)
}

// readJob reads the body into req (a pointer), makes its task and the job
// for the model it names; false when it answered the error itself (400 for
// the body or the task, 404 for the model).
func (s *Server) readJob(w http.ResponseWriter, r *http.Request, req localRequest) (engine.Job, bool) {
	if !decodeBody(w, r, req) {
		return engine.Job{}, false
	}
	task, err := req.task()
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request_error", err.Error())
		return engine.Job{}, false
	}
	return s.localJob(w, req.modelName(), task)
}

// localJob resolves the named model and makes the job, answering the
// error itself (false).
func (s *Server) localJob(w http.ResponseWriter, name string, task engine.Task) (engine.Job, bool) {
	if name == "" {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "model: missing; GET /v1/models lists the models on disk")
		return engine.Job{}, false
	}
	m, err := s.opts.Models.LocalModel(name, task.Kind)
	if err != nil {
		writeJSON(w, http.StatusNotFound, codedError("invalid_request_error", "model_not_found", err.Error()))
		return engine.Job{}, false
	}
	return m.Job("", task), true
}

func codedError(typ, code, msg string) apiError {
	e := errorDoc(typ, msg)
	e.Error.Code = &code
	return e
}

// runError answers a failed run (see failure).
func (s *Server) runError(w http.ResponseWriter, err error) {
	status, doc, retryAfter := failure(err)
	if retryAfter != "" {
		w.Header().Set("Retry-After", retryAfter)
	}
	writeJSON(w, status, doc)
}

// failure is the answer to a failed run: its HTTP status, OpenAI-shaped
// error document and Retry-After value ("": none). 503 with Retry-After
// for a busy or stopping worker; 503 without one, code worker_paused, for
// a job the donor's "Pause now" stopped (a pause has no known end); 400
// for a job at fault; 500 for the rest.
func failure(err error) (status int, doc apiError, retryAfter string) {
	var busy *studio.BusyError
	switch {
	case errors.As(err, &busy):
		return http.StatusServiceUnavailable, codedError("server_error", "worker_busy", err.Error()),
			strconv.Itoa(int(busy.RetryAfter.Round(time.Second) / time.Second))
	case errors.Is(err, studio.ErrShuttingDown):
		return http.StatusServiceUnavailable, errorDoc("server_error", err.Error()), "30"
	case errors.Is(err, studio.ErrPausedNow):
		return http.StatusServiceUnavailable, codedError("server_error", "worker_paused",
			"the donor paused this computer, which stopped this job; try again after they resume it"), ""
	case !engine.IsRetryable(err):
		return http.StatusBadRequest, errorDoc("invalid_request_error", err.Error()), ""
	default:
		return http.StatusInternalServerError, errorDoc("server_error", err.Error()), ""
	}
}

// completionDoc is the engine's chat.completion document (engine/llama).
type completionDoc struct {
	Choices []struct {
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
	Usage json.RawMessage `json:"usage"`
}

func (s *Server) handleChat(w http.ResponseWriter, r *http.Request) {
	var req chatRequest
	job, ok := s.readJob(w, r, &req)
	if !ok {
		return
	}
	id, created := "chatcmpl-"+strconv.FormatInt(time.Now().UnixNano(), 36), time.Now().Unix()
	if req.Stream {
		s.streamChat(w, r, job, id, created)
		return
	}
	res, err := s.opts.Worker.RunLocal(r.Context(), s.opts.GateWait, job, nil)
	if err != nil {
		s.runError(w, err)
		return
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(res.JSON, &doc); err != nil {
		writeError(w, http.StatusInternalServerError, "server_error", "the engine's answer is not a chat completion")
		return
	}
	doc["id"], _ = json.Marshal(id)
	doc["created"], _ = json.Marshal(created)
	delete(doc, "elapsed_ms")
	writeJSON(w, http.StatusOK, doc)
}

// stream collects the reply text the engine reports, for the handler to
// send as it comes.
type stream struct {
	mu     sync.Mutex
	text   []string
	notify chan struct{}
}

func (st *stream) progress(p engine.Progress) {
	if p.Text == "" {
		return
	}
	st.mu.Lock()
	st.text = append(st.text, p.Text)
	st.mu.Unlock()
	select {
	case st.notify <- struct{}{}:
	default:
	}
}

func (st *stream) take() []string {
	st.mu.Lock()
	defer st.mu.Unlock()
	t := st.text
	st.text = nil
	return t
}

// chunk is a chat.completion.chunk event.
type chunk struct {
	ID      string          `json:"id"`
	Object  string          `json:"object"`
	Created int64           `json:"created"`
	Model   string          `json:"model"`
	Choices []chunkChoice   `json:"choices"`
	Usage   json.RawMessage `json:"usage,omitempty"`
}

type chunkChoice struct {
	Index        int     `json:"index"`
	Delta        delta   `json:"delta"`
	FinishReason *string `json:"finish_reason"`
}

type delta struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
}

// streamChat answers stream:true with server-sent events: a first chunk
// with the role, one chunk per piece of text as the engine makes it, a
// chunk with the finish reason, a last chunk with the usage and no
// choices, then [DONE]. The status line waits for the gate and the first
// text, so that a busy worker or a refused job is still a plain error
// answer; an error after that is an error event.
func (s *Server) streamChat(w http.ResponseWriter, r *http.Request, job engine.Job, id string, created int64) {
	st := &stream{notify: make(chan struct{}, 1)}
	type outcome struct {
		res engine.Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := s.opts.Worker.RunLocal(r.Context(), s.opts.GateWait, job, st.progress)
		done <- outcome{res, err}
	}()
	rc := http.NewResponseController(w)
	started := false
	send := func(v any) {
		b, _ := json.Marshal(v)
		var buf bytes.Buffer
		buf.WriteString("data: ")
		buf.Write(b)
		buf.WriteString("\n\n")
		_, _ = w.Write(buf.Bytes())
	}
	base := chunk{ID: id, Object: "chat.completion.chunk", Created: created, Model: job.Model}
	start := func() {
		if started {
			return
		}
		started = true
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		w.WriteHeader(http.StatusOK)
		empty := ""
		c := base
		c.Choices = []chunkChoice{{Delta: delta{Role: "assistant", Content: &empty}}}
		send(c)
	}
	flushText := func() {
		for _, t := range st.take() {
			start()
			c := base
			c.Choices = []chunkChoice{{Delta: delta{Content: &t}}}
			send(c)
		}
		if started {
			_ = rc.Flush()
		}
	}
	for {
		select {
		case <-st.notify:
			flushText()
			continue
		case out := <-done:
			flushText()
			if out.err != nil {
				if !started {
					s.runError(w, out.err)
					return
				}
				_, doc, _ := failure(out.err)
				send(doc)
				_ = rc.Flush()
				return
			}
			start()
			var doc completionDoc
			_ = json.Unmarshal(out.res.JSON, &doc)
			finish := "stop"
			if len(doc.Choices) > 0 && doc.Choices[0].FinishReason != "" {
				finish = doc.Choices[0].FinishReason
			}
			c := base
			c.Choices = []chunkChoice{{Delta: delta{}, FinishReason: &finish}}
			send(c)
			u := base
			u.Choices = []chunkChoice{}
			u.Usage = doc.Usage
			send(u)
			_, _ = w.Write([]byte("data: [DONE]\n\n"))
			_ = rc.Flush()
			return
		}
	}
}

// imageRequest is the part of OpenAI's image generation request this
// worker reads, with stable-diffusion.cpp's own knobs beside it.
type imageRequest struct {
	Model          string   `json:"model"`
	Prompt         string   `json:"prompt"`
	N              *int     `json:"n"`
	Size           string   `json:"size"`
	ResponseFormat string   `json:"response_format"`
	OutputFormat   string   `json:"output_format"`
	Seed           *int64   `json:"seed"`
	Steps          int      `json:"steps"`
	NegativePrompt string   `json:"negative_prompt"`
	CfgScale       *float64 `json:"cfg_scale"`
}

var sizeRE = regexp.MustCompile(`^([0-9]{1,5})x([0-9]{1,5})$`)

func (q imageRequest) modelName() string { return q.Model }

// task builds the engine task; the error is the request's fault.
func (q imageRequest) task() (engine.Task, error) {
	if q.N != nil && *q.N != 1 {
		return engine.Task{}, errors.New("n: only 1 image is made per request")
	}
	switch q.ResponseFormat {
	case "", "b64_json":
	default:
		return engine.Task{}, fmt.Errorf("response_format: only b64_json is served (the local API keeps no files to link to), not %q", q.ResponseFormat)
	}
	if q.Prompt == "" {
		return engine.Task{}, errors.New("prompt: missing")
	}
	p := &engine.ImageParams{Prompt: q.Prompt, NegativePrompt: q.NegativePrompt, Steps: q.Steps, CfgScale: q.CfgScale, Ext: "png"}
	switch q.OutputFormat {
	case "", "png":
	case "webp", "jpeg", "jpg":
		p.Ext = q.OutputFormat
	default:
		return engine.Task{}, fmt.Errorf("output_format: %q is not png, webp or jpeg", q.OutputFormat)
	}
	if q.Size != "" && q.Size != "auto" {
		m := sizeRE.FindStringSubmatch(q.Size)
		if m == nil {
			return engine.Task{}, fmt.Errorf("size: %q is not WIDTHxHEIGHT (such as 512x512)", q.Size)
		}
		p.Width, _ = strconv.Atoi(m[1])
		p.Height, _ = strconv.Atoi(m[2])
		if p.Width == 0 || p.Height == 0 {
			return engine.Task{}, fmt.Errorf("size: %q has a zero side", q.Size)
		}
	}
	if q.Seed != nil {
		if *q.Seed < 0 {
			return engine.Task{}, errors.New("seed: must be 0 or more")
		}
		v := uint64(*q.Seed)
		p.Seed = &v
	}
	if q.Steps < 0 {
		return engine.Task{}, errors.New("steps: must be 1 or more")
	}
	t := engine.Task{Kind: engine.KindImage, Image: p}
	if err := t.Validate(); err != nil {
		return engine.Task{}, err
	}
	return t, nil
}

// imageMIME names the image types for the answer's output_format.
var imageMIME = map[string]string{"png": "png", "webp": "webp", "jpeg": "jpeg", "jpg": "jpeg"}

func (s *Server) handleImages(w http.ResponseWriter, r *http.Request) {
	var req imageRequest
	job, ok := s.readJob(w, r, &req)
	if !ok {
		return
	}
	res, err := s.opts.Worker.RunLocal(r.Context(), s.opts.GateWait, job, nil)
	if err != nil {
		s.runError(w, err)
		return
	}
	if len(res.Bytes) == 0 {
		writeError(w, http.StatusInternalServerError, "server_error", "the engine made no image")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"created":       time.Now().Unix(),
		"data":          []map[string]string{{"b64_json": base64.StdEncoding.EncodeToString(res.Bytes)}},
		"output_format": imageMIME[res.Ext],
	})
}
