// Package studio speaks the studio contract (studio-protocol.md v1): wire
// frames, registration, the WebSocket session and the worker loop that turns
// offers into engine runs and results. It knows nothing of Fyne.
package studio

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/minisgg/studio-worker/engine"
)

// Subprotocol is the WebSocket subprotocol of the v1 session.
const Subprotocol = "studio-worker-v1"

// Close codes of the session (§3.5).
const (
	CloseNormal            = 1000
	CloseAuthFailed        = 4001
	CloseProtocolViolation = 4002
	CloseDuplicateWorker   = 4003
	CloseWorkerDeleted     = 4004
)

// Error codes carried by the studio's `error` frame.
const (
	ErrCodeAuthFailed        = "auth_failed"
	ErrCodeProtocolViolation = "protocol_violation"
	ErrCodeDuplicateWorker   = "duplicate_worker"
	ErrCodeWorkerDeleted     = "worker_deleted"
	ErrCodeInternalError     = "internal_error"
)

// CloseCodeFor maps an error code to the close code the studio pairs it with.
func CloseCodeFor(code string) int {
	switch code {
	case ErrCodeAuthFailed:
		return CloseAuthFailed
	case ErrCodeProtocolViolation:
		return CloseProtocolViolation
	case ErrCodeDuplicateWorker:
		return CloseDuplicateWorker
	case ErrCodeWorkerDeleted:
		return CloseWorkerDeleted
	}
	return CloseNormal // internal_error and anything unknown
}

// Reject codes.
const (
	RejectBusy   = "busy"
	RejectPaused = "paused"
)

// Exact reject reasons of the reference worker.
const (
	ReasonPaused = "worker paused by operator"
	ReasonBusy   = "worker already has an in-flight job"
)

// Capabilities describe the worker in hello, heartbeat and register-request.
type Capabilities struct {
	MachineName            string                       `json:"machineName"`
	Username               string                       `json:"username"`
	AgentVersion           string                       `json:"agentVersion"`
	Engine                 string                       `json:"engine"`
	VRAMTotalGB            float64                      `json:"vramTotalGb"`
	VRAMThresholdGB        float64                      `json:"vramThresholdGb"`
	AutoEnabled            bool                         `json:"autoEnabled"`
	AutoStart              bool                         `json:"autoStart"`
	AutoUpdate             bool                         `json:"autoUpdate"`
	StartMinimised         bool                         `json:"startMinimised"`
	OnlyWhenIdle           bool                         `json:"onlyWhenIdle"`
	UserPresence           string                       `json:"userPresence,omitempty"`
	SupportedModels        []string                     `json:"supportedModels"`
	TaskKinds              []engine.TaskKind            `json:"taskKinds"`
	SupportedModelsPerKind map[engine.TaskKind][]string `json:"supportedModelsPerKind"`
}

// LogEntry is one line shipped in a logBatch.
type LogEntry struct {
	TS       string `json:"ts"` // RFC 3339 UTC, milliseconds, "Z"
	Level    string `json:"level"`
	Category string `json:"category"`
	Message  string `json:"message"`
	JobID    string `json:"jobId,omitempty"`
}

// JobOfferClaim is the `claim` of an offer. Task and ModelSource are
// required: a claim without them fails to parse.
type JobOfferClaim struct {
	JobID          string              `json:"jobId"`
	GameID         string              `json:"gameId"`
	AssetName      string              `json:"assetName"`
	Model          string              `json:"model"`
	VRAMGBEstimate float64             `json:"vramGbEstimate"`
	Task           *engine.Task        `json:"task"`
	ModelSource    *engine.ModelSource `json:"modelSource"`
}

// ---- worker → studio ----

// Hello is the first frame after the upgrade; capabilities sit flat beside
// `type`.
type Hello struct {
	AuthToken    string `json:"authToken"`
	Capabilities Capabilities
}

// MarshalJSON flattens the capabilities beside authToken.
func (h Hello) MarshalJSON() ([]byte, error) {
	caps, err := json.Marshal(h.Capabilities)
	if err != nil {
		return nil, err
	}
	tok, _ := json.Marshal(h.AuthToken)
	out := append([]byte(`{"authToken":`), tok...)
	out = append(out, ',')
	return append(out, caps[1:]...), nil
}

// UnmarshalJSON reads the flat form.
func (h *Hello) UnmarshalJSON(data []byte) error {
	var tok struct {
		AuthToken string `json:"authToken"`
	}
	if err := json.Unmarshal(data, &tok); err != nil {
		return err
	}
	h.AuthToken = tok.AuthToken
	return json.Unmarshal(data, &h.Capabilities)
}

type Heartbeat struct {
	Capabilities Capabilities `json:"capabilities"`
	CurrentJobID string       `json:"currentJobId,omitempty"`
}

type Accept struct {
	JobID string `json:"jobId"`
}

type Reject struct {
	JobID  string `json:"jobId"`
	Reason string `json:"reason"`
	Code   string `json:"code,omitempty"`
}

type CompleteJSON struct {
	JobID  string          `json:"jobId"`
	Result json.RawMessage `json:"result"`
	Prompt string          `json:"prompt,omitempty"`
}

type Fail struct {
	JobID     string `json:"jobId"`
	Error     string `json:"error"`
	Retryable bool   `json:"retryable"`
}

type LogBatch struct {
	Entries []LogEntry `json:"entries"`
}

// ---- studio → worker ----

type Welcome struct {
	WorkerID   string `json:"workerId"`
	ServerTime string `json:"serverTime"`
}

type Offer struct {
	Claim JobOfferClaim `json:"claim"`
}

type HeartbeatAck struct{}

// UnusableOffer is an `offer` frame whose claim names its job but carries
// a field this worker cannot use: a task or model source of the wrong
// shape, a missing one, or a value the task decoder refuses (for example a
// chat message content part of a type other than text). It is not a frame
// type of its own on the wire: DecodeServerFrame returns it in place of an
// *Offer, so the worker can answer that job alone (a not-retryable fail
// naming the field) and keep the session up.
type UnusableOffer struct {
	JobID string
	Model string // as the claim names it, when it does
	// Field is the claim's field at fault, e.g. "task" or "modelSource",
	// or a path inside it such as "task.messages.content" when the decoder
	// names one.
	Field string
	Err   error // what was wrong with it
}

// Problem is the reason in words: the field, then what is wrong with it.
func (u *UnusableOffer) Problem() string {
	if u.Field == "" {
		return u.Err.Error()
	}
	return u.Field + ": " + u.Err.Error()
}

type CompleteAck struct {
	JobID string `json:"jobId"`
}

type FailAck struct {
	JobID string `json:"jobId"`
}

type ErrorFrame struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// frameType maps each frame struct to its `type` value.
func frameType(f any) (string, error) {
	switch f.(type) {
	case Hello, *Hello:
		return "hello", nil
	case Heartbeat, *Heartbeat:
		return "heartbeat", nil
	case Accept, *Accept:
		return "accept", nil
	case Reject, *Reject:
		return "reject", nil
	case CompleteJSON, *CompleteJSON:
		return "completeJson", nil
	case Fail, *Fail:
		return "fail", nil
	case LogBatch, *LogBatch:
		return "logBatch", nil
	case Welcome, *Welcome:
		return "welcome", nil
	case Offer, *Offer:
		return "offer", nil
	case HeartbeatAck, *HeartbeatAck:
		return "heartbeatAck", nil
	case CompleteAck, *CompleteAck:
		return "completeAck", nil
	case FailAck, *FailAck:
		return "failAck", nil
	case ErrorFrame, *ErrorFrame:
		return "error", nil
	}
	return "", fmt.Errorf("studio: %T is not a frame", f)
}

// Encode writes a frame as the JSON text the wire carries: `type` first,
// then the frame's fields flat.
func Encode(f any) ([]byte, error) {
	typ, err := frameType(f)
	if err != nil {
		return nil, err
	}
	body, err := json.Marshal(f)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(body)+len(typ)+12)
	out = append(out, `{"type":"`...)
	out = append(out, typ...)
	out = append(out, '"')
	if len(body) > 2 {
		out = append(out, ',')
		out = append(out, body[1:]...)
	} else {
		out = append(out, '}')
	}
	return out, nil
}

// ErrUnknownFrame is returned for a frame whose `type` is not in the
// direction's closed set.
var ErrUnknownFrame = errors.New("unknown frame type")

func decodeWith(data []byte, table map[string]func() any) (any, error) {
	var head struct {
		Type *string `json:"type"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return nil, fmt.Errorf("malformed frame: %w", err)
	}
	if head.Type == nil {
		return nil, errors.New("malformed frame: missing type")
	}
	mk, ok := table[*head.Type]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownFrame, *head.Type)
	}
	f := mk()
	err := json.Unmarshal(data, f)
	if o, ok := f.(*Offer); ok {
		if err == nil {
			err = o.Claim.validate()
		}
		if err != nil {
			if u := unusableOffer(data, err); u != nil {
				return u, nil
			}
			return nil, fmt.Errorf("malformed offer frame: %w", err)
		}
		return f, nil
	}
	if err != nil {
		return nil, fmt.Errorf("malformed %s frame: %w", *head.Type, err)
	}
	return f, nil
}

// unusableOffer turns an offer that failed to decode into an
// *UnusableOffer when its claim still names a job to answer, or returns nil
// (then the frame is one the worker cannot read at all). It finds the
// claim's field at fault by decoding each field alone.
func unusableOffer(data []byte, err error) *UnusableOffer {
	var frame struct {
		Claim map[string]json.RawMessage `json:"claim"`
	}
	if json.Unmarshal(data, &frame) != nil || frame.Claim == nil {
		return nil
	}
	var id, model string
	if json.Unmarshal(frame.Claim["jobId"], &id) != nil || id == "" {
		return nil
	}
	_ = json.Unmarshal(frame.Claim["model"], &model)
	u := &UnusableOffer{JobID: id, Model: model, Err: err}
	fields := []struct {
		name string
		into any
	}{
		{"task", new(engine.Task)},
		{"modelSource", new(engine.ModelSource)},
		{"gameId", new(string)},
		{"assetName", new(string)},
		{"model", new(string)},
		{"vramGbEstimate", new(float64)},
	}
	for _, f := range fields {
		raw, ok := frame.Claim[f.name]
		if !ok || string(raw) == "null" {
			if f.name == "task" || f.name == "modelSource" {
				u.Field, u.Err = f.name, errors.New("missing")
				return u
			}
			continue
		}
		if ferr := json.Unmarshal(raw, f.into); ferr != nil {
			u.Field, u.Err = f.name, ferr
			var je *engine.JobError
			var te *json.UnmarshalTypeError
			if errors.As(ferr, &je) && je.Field != "" {
				u.Field, u.Err = f.name+"."+je.Field, errors.New(je.Reason)
			} else if errors.As(ferr, &te) {
				if te.Field != "" && te.Field != f.name {
					u.Field = f.name + "." + te.Field
				}
				u.Err = fmt.Errorf("a JSON %s where this worker expects %s", te.Value, te.Type)
			}
			return u
		}
	}
	return u
}

func (c JobOfferClaim) validate() error {
	switch {
	case c.JobID == "":
		return errors.New("claim without jobId")
	case c.Task == nil:
		return errors.New("claim without task")
	case c.ModelSource == nil:
		return errors.New("claim without modelSource")
	}
	return nil
}

var serverFrames = map[string]func() any{
	"welcome":      func() any { return new(Welcome) },
	"offer":        func() any { return new(Offer) },
	"heartbeatAck": func() any { return new(HeartbeatAck) },
	"completeAck":  func() any { return new(CompleteAck) },
	"failAck":      func() any { return new(FailAck) },
	"error":        func() any { return new(ErrorFrame) },
}

var workerFrames = map[string]func() any{
	"hello":        func() any { return new(Hello) },
	"heartbeat":    func() any { return new(Heartbeat) },
	"accept":       func() any { return new(Accept) },
	"reject":       func() any { return new(Reject) },
	"completeJson": func() any { return new(CompleteJSON) },
	"fail":         func() any { return new(Fail) },
	"logBatch":     func() any { return new(LogBatch) },
	"readyForMore": func() any { return new(readyForMore) },
}

// readyForMore is still in the enum but must never be sent (§3.1.7); the
// dev studio decodes it only to call it a protocol violation.
type readyForMore struct{}

// IsReadyForMore reports whether a decoded worker frame is the legacy
// readyForMore.
func IsReadyForMore(f any) bool { _, ok := f.(*readyForMore); return ok }

// DecodeServerFrame parses a studio → worker frame. It returns a pointer to
// one of Welcome, Offer, HeartbeatAck, CompleteAck, FailAck or ErrorFrame.
func DecodeServerFrame(data []byte) (any, error) { return decodeWith(data, serverFrames) }

// DecodeWorkerFrame parses a worker → studio frame (used by the dev studio).
func DecodeWorkerFrame(data []byte) (any, error) { return decodeWith(data, workerFrames) }

// Sender sends frames on one connected socket. A result is only ever sent on
// the socket its offer came on: once that socket is gone, Send fails.
type Sender interface {
	Send(ctx context.Context, frame any) error
}
