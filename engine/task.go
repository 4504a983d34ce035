// Package engine runs studio jobs on the donor's machine: the Engine interface,
// the task and model-source types the studio sends, routing by
// modelSource.engine (never a fallback), the model store and the GPU facts
// behind the VRAM budget. It knows nothing of the studio session or the UI.
package engine

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"unicode/utf8"
)

// TaskKind is the snake_case wire value of a task's kind.
type TaskKind string

const (
	KindImage    TaskKind = "image"
	KindLLM      TaskKind = "llm"
	KindAudioSTT TaskKind = "audio_stt"
	KindAudioTTS TaskKind = "audio_tts"
	KindVideo    TaskKind = "video"
)

// AllKinds lists the kinds in the protocol's map-key order.
var AllKinds = []TaskKind{KindImage, KindLLM, KindAudioSTT, KindAudioTTS, KindVideo}

// Valid reports whether k is one of the protocol's kinds.
func (k TaskKind) Valid() bool {
	for _, v := range AllKinds {
		if k == v {
			return true
		}
	}
	return false
}

// Task is the studio's internally tagged union: `kind` sits beside the
// parameters of that kind. Exactly one of the pointers is set after decoding.
type Task struct {
	Kind  TaskKind
	Image *ImageParams
	LLM   *LLMParams
	STT   *AudioSTTParams
	TTS   *AudioTTSParams
	Video *VideoParams
}

// ImageParams are the parameters of an `image` task. Zero values mean "not
// given"; the defaults of the protocol (512x512, 20 steps, webp) are applied
// by Defaults so that cliDefaults can sit between them and the task's values.
type ImageParams struct {
	Prompt         string   `json:"prompt"`
	NegativePrompt string   `json:"negativePrompt,omitempty"`
	InitImageURL   string   `json:"initImageUrl,omitempty"`
	MaskURL        string   `json:"maskUrl,omitempty"`
	RefImageURL    string   `json:"refImageUrl,omitempty"`
	Denoise        *float64 `json:"denoise,omitempty"`
	CfgScale       *float64 `json:"cfgScale,omitempty"`
	SamplingMethod string   `json:"samplingMethod,omitempty"`
	Width          int      `json:"width,omitempty"`
	Height         int      `json:"height,omitempty"`
	Steps          int      `json:"steps,omitempty"`
	Seed           *uint64  `json:"seed,omitempty"`
	Ext            string   `json:"ext,omitempty"`
}

// ChatMessage is one turn of a chat. Content is a plain string; on the wire
// it may also come in the OpenAI content-part form
// (`[{"type":"text","text":"…"}, …]`), whose text parts are joined with
// "\n" when decoded (see decodeContent). It is always encoded as a string.
type ChatMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// LLMParams are the parameters of an `llm` task.
type LLMParams struct {
	Messages           []ChatMessage   `json:"messages"`
	System             string          `json:"system,omitempty"`
	MaxTokens          *int            `json:"maxTokens,omitempty"` // nil: the default 512; 0 or less is refused
	Temperature        *float64        `json:"temperature,omitempty"`
	TopP               *float64        `json:"topP,omitempty"`
	Stop               []string        `json:"stop,omitempty"`
	Seed               *uint64         `json:"seed,omitempty"`
	JSONSchema         json.RawMessage `json:"jsonSchema,omitempty"`
	Reasoning          string          `json:"reasoning,omitempty"`
	ChatTemplateKwargs json.RawMessage `json:"chatTemplateKwargs,omitempty"`
}

// AudioSTTParams are decoded so that the offer parses, then refused.
type AudioSTTParams struct {
	InputURL   string `json:"inputUrl"`
	Language   string `json:"language,omitempty"`
	Translate  *bool  `json:"translate,omitempty"`
	Prompt     string `json:"prompt,omitempty"`
	VAD        *bool  `json:"vad,omitempty"`
	Timestamps string `json:"timestamps,omitempty"`
}

// AudioTTSParams are decoded so that the offer parses, then refused.
type AudioTTSParams struct {
	Text     string   `json:"text"`
	Voice    string   `json:"voice,omitempty"`
	Speed    *float64 `json:"speed,omitempty"`
	Language string   `json:"language,omitempty"`
	Ext      string   `json:"ext,omitempty"`
}

// VideoParams are decoded so that the offer parses, then refused.
type VideoParams struct {
	Prompt         string   `json:"prompt"`
	NegativePrompt string   `json:"negativePrompt,omitempty"`
	InitImageURL   string   `json:"initImageUrl,omitempty"`
	Seconds        *float64 `json:"seconds,omitempty"`
	FPS            *float64 `json:"fps,omitempty"`
	Width          int      `json:"width,omitempty"`
	Height         int      `json:"height,omitempty"`
	Ext            string   `json:"ext,omitempty"`
}

// Protocol defaults (studio-protocol.md §4.3).
const (
	DefaultImageSize   = 512
	DefaultImageSteps  = 20
	DefaultImageExt    = "webp"
	DefaultMaxTokens   = 512
	DefaultTemperature = 0.7
	DefaultContextSize = 8192
)

// MarshalJSON writes `kind` first, then the parameters of that kind flat.
func (t Task) MarshalJSON() ([]byte, error) {
	var params any
	switch t.Kind {
	case KindImage:
		params = t.Image
	case KindLLM:
		params = t.LLM
	case KindAudioSTT:
		params = t.STT
	case KindAudioTTS:
		params = t.TTS
	case KindVideo:
		params = t.Video
	default:
		return nil, fmt.Errorf("task: unknown kind %q", t.Kind)
	}
	if params == nil || isNilPtr(params) {
		return nil, fmt.Errorf("task: kind %q without parameters", t.Kind)
	}
	body, err := json.Marshal(params)
	if err != nil {
		return nil, err
	}
	kind, _ := json.Marshal(string(t.Kind))
	var buf bytes.Buffer
	buf.WriteString(`{"kind":`)
	buf.Write(kind)
	if len(body) > 2 { // more than "{}"
		buf.WriteByte(',')
		buf.Write(body[1:])
	} else {
		buf.WriteByte('}')
	}
	return buf.Bytes(), nil
}

func isNilPtr(v any) bool {
	switch p := v.(type) {
	case *ImageParams:
		return p == nil
	case *LLMParams:
		return p == nil
	case *AudioSTTParams:
		return p == nil
	case *AudioTTSParams:
		return p == nil
	case *VideoParams:
		return p == nil
	}
	return false
}

// UnmarshalJSON decodes by `kind`. Every failure is a *JobError naming the
// field at fault (wrapped with the kind), so that a caller holding the rest
// of the offer can fail that job alone: an unknown or missing kind, a missing
// required field, a value of the wrong JSON type, a content part that is not
// text.
func (t *Task) UnmarshalJSON(data []byte) error {
	var head struct {
		Kind *TaskKind `json:"kind"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return fmt.Errorf("task: %w", wireError("", err))
	}
	if head.Kind == nil {
		return fmt.Errorf("task: %w", Invalid("kind", "missing"))
	}
	out := Task{Kind: *head.Kind}
	var err error
	switch out.Kind {
	case KindImage:
		out.Image = new(ImageParams)
		if err = json.Unmarshal(data, out.Image); err == nil {
			err = requireField(data, "prompt")
		}
	case KindLLM:
		out.LLM, err = decodeLLM(data)
	case KindAudioSTT:
		out.STT = new(AudioSTTParams)
		if err = json.Unmarshal(data, out.STT); err == nil {
			err = requireField(data, "inputUrl")
		}
	case KindAudioTTS:
		out.TTS = new(AudioTTSParams)
		if err = json.Unmarshal(data, out.TTS); err == nil {
			err = requireField(data, "text")
		}
	case KindVideo:
		out.Video = new(VideoParams)
		if err = json.Unmarshal(data, out.Video); err == nil {
			err = requireField(data, "prompt")
		}
	default:
		return fmt.Errorf("task: %w", Invalid("kind", "unknown kind %q (this worker knows %s)", out.Kind, kindList()))
	}
	if err != nil {
		return fmt.Errorf("task %s: %w", out.Kind, wireError("", err))
	}
	*t = out
	return nil
}

func kindList() string {
	names := make([]string, len(AllKinds))
	for i, k := range AllKinds {
		names[i] = string(k)
	}
	return strings.Join(names, ", ")
}

// decodeLLM decodes llm parameters with each message on its own, so that an
// error names the message ("messages[2].content[0].type").
func decodeLLM(data []byte) (*LLMParams, error) {
	var shadow struct {
		LLMParams
		Messages []json.RawMessage `json:"messages"`
	}
	if err := json.Unmarshal(data, &shadow); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) { // the path goes through the embedded struct
			te.Field = strings.TrimPrefix(te.Field, "LLMParams.")
		}
		return nil, err
	}
	if shadow.Messages == nil {
		return nil, Invalid("messages", "missing (an llm task needs a list of messages)")
	}
	p := shadow.LLMParams
	p.Messages = make([]ChatMessage, len(shadow.Messages))
	for i, raw := range shadow.Messages {
		if err := decodeMessage(raw, &p.Messages[i]); err != nil {
			return nil, wireError(fmt.Sprintf("messages[%d]", i), err)
		}
	}
	return &p, nil
}

// decodeMessage reads one chat message. A null content is the empty string
// (OpenAI allows it on an assistant turn).
func decodeMessage(raw json.RawMessage, m *ChatMessage) error {
	var w struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	}
	if err := json.Unmarshal(raw, &w); err != nil {
		return err
	}
	content, err := decodeContent(w.Content)
	if err != nil {
		return wireError("content", err)
	}
	*m = ChatMessage{Role: w.Role, Content: content}
	return nil
}

// decodeContent reads a message's content: a string, null, or a list of
// OpenAI content parts. Text parts (`{"type":"text","text":…}`) are joined
// with "\n", as llama.cpp's and vLLM's OpenAI-compatible servers join them
// (OpenAI documents the part list but no joining rule); any other part type
// (image_url, input_audio, file, …) is refused, since this worker's llm
// engine reads text only.
func decodeContent(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	switch {
	case len(raw) == 0 || string(raw) == "null":
		return "", nil
	case raw[0] == '"':
		var s string
		err := json.Unmarshal(raw, &s)
		return s, err
	case raw[0] != '[':
		return "", Invalid("", "must be a string or a list of content parts")
	}
	var parts []json.RawMessage
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", err
	}
	texts := make([]string, 0, len(parts))
	for i, rp := range parts {
		var part struct {
			Type *string `json:"type"`
			Text *string `json:"text"`
		}
		if err := json.Unmarshal(rp, &part); err != nil {
			return "", wireError(fmt.Sprintf("[%d]", i), err)
		}
		switch {
		case part.Type == nil:
			return "", Invalid(fmt.Sprintf("[%d].type", i), "missing")
		case *part.Type != "text":
			return "", Invalid(fmt.Sprintf("[%d].type", i), "content parts of type %q are not supported: this worker's llm engine reads text parts only", *part.Type)
		case part.Text == nil:
			return "", Invalid(fmt.Sprintf("[%d].text", i), "missing")
		}
		texts = append(texts, *part.Text)
	}
	return strings.Join(texts, "\n"), nil
}

// wireError turns a decoding error into a *JobError whose field is prefix
// followed by the field the error names: a JobError's own field, or the
// path of a *json.UnmarshalTypeError. Other errors keep their words.
func wireError(prefix string, err error) error {
	if err == nil {
		return nil
	}
	var je *JobError
	if errors.As(err, &je) {
		return &JobError{Field: joinField(prefix, je.Field), Reason: je.Reason, Err: je.Err}
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return &JobError{Field: joinField(prefix, te.Field),
			Reason: fmt.Sprintf("must be a %s, not a JSON %s", jsonTypeName(te.Type), te.Value), Err: err}
	}
	return &JobError{Field: prefix, Reason: err.Error(), Err: err}
}

func joinField(prefix, field string) string {
	switch {
	case prefix == "":
		return field
	case field == "":
		return prefix
	case strings.HasPrefix(field, "["):
		return prefix + field
	}
	return prefix + "." + field
}

// jsonTypeName says which JSON value a Go type takes.
func jsonTypeName(t reflect.Type) string {
	if t == nil {
		return "value of another type"
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "whole number"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Slice, reflect.Array:
		return "list"
	case reflect.Map, reflect.Struct:
		return "object"
	}
	return t.String()
}

func requireField(data []byte, name string) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return err
	}
	v, ok := m[name]
	if !ok || string(v) == "null" {
		return Invalid(name, "missing (a required field)")
	}
	return nil
}

// Prompt is the full, untruncated prompt the studio stores with a result:
// image/video → prompt; llm → the content of the last message; stt →
// inputUrl; tts → text.
func (t Task) Prompt() string {
	switch {
	case t.Image != nil:
		return t.Image.Prompt
	case t.LLM != nil:
		if n := len(t.LLM.Messages); n > 0 {
			return t.LLM.Messages[n-1].Content
		}
	case t.STT != nil:
		return t.STT.InputURL
	case t.TTS != nil:
		return t.TTS.Text
	case t.Video != nil:
		return t.Video.Prompt
	}
	return ""
}

// Validate refuses a job that can never succeed, before anything is
// downloaded or handed to a native engine: text that a C API cannot take
// (see CheckText) in any field that becomes a C string, and llm parameters
// out of range. Every error is a *JobError naming the field in the wire's
// spelling ("messages[1].content", "modelSource.cliDefaults.contextSize"),
// so the job is failed as not retryable. The runner calls it for every job,
// and engines call it again on what they are handed.
func (j Job) Validate() error {
	if err := j.Task.Validate(); err != nil {
		return err
	}
	cli := j.Source.CliDefaults
	if cli == nil {
		return nil
	}
	const at = "modelSource.cliDefaults."
	if cli.ContextSize < 0 {
		return Invalid(at+"contextSize", "must be positive, got %d", cli.ContextSize)
	}
	if err := CheckText(at+"samplingMethod", cli.SamplingMethod); err != nil {
		return err
	}
	_, err := decodeKwargs(at+"chatTemplateKwargs", cli.ChatTemplateKwargs)
	return err
}

// Validate checks the task's own fields; see Job.Validate.
func (t Task) Validate() error {
	var texts []namedText
	switch {
	case t.Image != nil:
		p := t.Image
		texts = []namedText{{"prompt", p.Prompt}, {"negativePrompt", p.NegativePrompt}, {"samplingMethod", p.SamplingMethod}}
	case t.LLM != nil:
		return t.LLM.validate()
	case t.STT != nil:
		texts = []namedText{{"prompt", t.STT.Prompt}, {"language", t.STT.Language}}
	case t.TTS != nil:
		texts = []namedText{{"text", t.TTS.Text}, {"voice", t.TTS.Voice}, {"language", t.TTS.Language}}
	case t.Video != nil:
		texts = []namedText{{"prompt", t.Video.Prompt}, {"negativePrompt", t.Video.NegativePrompt}}
	default:
		return Invalid("kind", "a %q task without parameters", t.Kind)
	}
	return checkTexts(texts)
}

type namedText struct{ field, text string }

func checkTexts(texts []namedText) error {
	for _, nt := range texts {
		if err := CheckText(nt.field, nt.text); err != nil {
			return err
		}
	}
	return nil
}

// MaxTemperature is the highest temperature an llm task may ask for.
const MaxTemperature = 100

func (p *LLMParams) validate() error {
	if len(p.Messages) == 0 {
		return Invalid("messages", "is empty; an llm task needs at least one message")
	}
	for i, m := range p.Messages {
		if err := CheckText(fmt.Sprintf("messages[%d].role", i), m.Role); err != nil {
			return err
		}
		if err := CheckText(fmt.Sprintf("messages[%d].content", i), m.Content); err != nil {
			return err
		}
	}
	if err := CheckText("system", p.System); err != nil {
		return err
	}
	for i, s := range p.Stop {
		if err := CheckText(fmt.Sprintf("stop[%d]", i), s); err != nil {
			return err
		}
	}
	if p.MaxTokens != nil && *p.MaxTokens < 1 {
		return Invalid("maxTokens", "must be at least 1, got %d", *p.MaxTokens)
	}
	if p.Temperature != nil {
		if t := *p.Temperature; !(t >= 0 && t <= MaxTemperature) {
			return Invalid("temperature", "must be between 0 and %d, got %v", MaxTemperature, t)
		}
	}
	if p.TopP != nil {
		if tp := *p.TopP; !(tp > 0 && tp <= 1) {
			return Invalid("topP", "must be above 0 and at most 1, got %v", tp)
		}
	}
	_, err := decodeKwargs("chatTemplateKwargs", p.ChatTemplateKwargs)
	return err
}

// CheckText refuses text that the native engines cannot take as it is.
// llama.cpp and stable-diffusion.cpp read text as NUL-terminated C strings,
// so a NUL byte (U+0000) would silently cut the text there, or abort the
// process where the binding cannot make a C string of it at all; and their
// tokenizers expect UTF-8. field names the text in the wire's spelling. The
// error is a *JobError.
func CheckText(field, s string) error {
	if i := strings.IndexByte(s, 0); i >= 0 {
		return Invalid(field, "contains a NUL character (U+0000) at byte %d, which the model's native code cannot take (it would end the text there); remove it", i)
	}
	if !utf8.ValidString(s) {
		i := 0
		for i < len(s) {
			r, n := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && n == 1 {
				break
			}
			i += n
		}
		return Invalid(field, "is not valid UTF-8 (the first bad byte, 0x%02X, is at byte %d)", s[i], i)
	}
	return nil
}

// Keys of chatTemplateKwargs that the worker sets itself when it renders a
// chat template.
var reservedKwargs = []string{"messages", "add_generation_prompt"}

// decodeKwargs reads a chatTemplateKwargs value: absent, null or a JSON
// object whose keys and strings are text a template can take. Numbers stay
// json.Number, so an integer stays an integer.
func decodeKwargs(field string, raw json.RawMessage) (map[string]any, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	if raw[0] != '{' {
		return nil, Invalid(field, "must be a JSON object of template arguments, such as {\"enable_thinking\": false}")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, Invalid(field, "is not a valid JSON object: %v", err)
	}
	for _, k := range reservedKwargs {
		if _, ok := m[k]; ok {
			return nil, Invalid(field+"."+k, "is set by the worker when it renders the chat template and cannot be given")
		}
	}
	if err := checkValueText(field, m); err != nil {
		return nil, err
	}
	return m, nil
}

// checkValueText applies CheckText to every key and string in a decoded
// JSON value.
func checkValueText(field string, v any) error {
	switch x := v.(type) {
	case string:
		return CheckText(field, x)
	case []any:
		for i, e := range x {
			if err := checkValueText(fmt.Sprintf("%s[%d]", field, i), e); err != nil {
				return err
			}
		}
	case map[string]any:
		for k, e := range x {
			if err := CheckText(field+" key", k); err != nil {
				return err
			}
			if err := checkValueText(field+"."+k, e); err != nil {
				return err
			}
		}
	}
	return nil
}

// TemplateKwargs are the chat template arguments of an llm job: the
// model's cliDefaults.chatTemplateKwargs, with the task's
// chatTemplateKwargs over them key by key (studio-protocol.md §4.3: the
// task's override the model defaults). Nil when neither gives any. Errors
// are those of Job.Validate.
func TemplateKwargs(cli *CliDefaults, p *LLMParams) (map[string]any, error) {
	var out map[string]any
	if cli != nil {
		m, err := decodeKwargs("modelSource.cliDefaults.chatTemplateKwargs", cli.ChatTemplateKwargs)
		if err != nil {
			return nil, err
		}
		out = m
	}
	if p == nil {
		return out, nil
	}
	m, err := decodeKwargs("chatTemplateKwargs", p.ChatTemplateKwargs)
	if err != nil {
		return nil, err
	}
	if len(m) > 0 && out == nil {
		out = make(map[string]any, len(m))
	}
	for k, v := range m {
		out[k] = v
	}
	return out, nil
}
