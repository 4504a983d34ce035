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

// ChatMessage is one turn of a chat; content is always a plain string.
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

// UnmarshalJSON decodes by `kind`; an unknown or missing kind is an error,
// and so is a missing required field of the kind.
func (t *Task) UnmarshalJSON(data []byte) error {
	var head struct {
		Kind *TaskKind `json:"kind"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return fmt.Errorf("task: %w", err)
	}
	if head.Kind == nil {
		return errors.New("task: missing kind")
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
		out.LLM = new(LLMParams)
		if err = json.Unmarshal(data, out.LLM); err == nil {
			err = requireField(data, "messages")
		}
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
		return fmt.Errorf("task: unknown kind %q", out.Kind)
	}
	if err != nil {
		return fmt.Errorf("task %s: %w", out.Kind, err)
	}
	*t = out
	return nil
}

func requireField(data []byte, name string) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return err
	}
	v, ok := m[name]
	if !ok || string(v) == "null" {
		return fmt.Errorf("missing required field %q", name)
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
