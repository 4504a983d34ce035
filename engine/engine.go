package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
)

// Job is one unit of work handed to an engine.
type Job struct {
	ID     string
	Model  string
	Task   Task
	Source ModelSource
	// Files maps each file of Source to its verified local path, filled in
	// by the model store before the engine runs.
	Files map[FileRole]string
	// VRAMGB is the studio's estimate (claim.vramGbEstimate); the runner
	// uses it to decide which resident models to release first.
	VRAMGB float64
}

// Result is what an engine produced: either bytes with an extension (image,
// audio, video; delivered by multipart upload) or a JSON document (llm, stt;
// delivered by completeJson).
type Result struct {
	Bytes []byte
	Ext   string
	JSON  json.RawMessage
	// Stats for the UI: tokens generated, tokens per second, images made.
	Stats Stats
}

// Stats are the figures a donor sees on the Jobs page.
type Stats struct {
	PromptTokens     int
	CompletionTokens int
	TokensPerSecond  float64
	Images           int
}

// Phase names the stage a running job is in.
type Phase string

const (
	PhaseDownload Phase = "download"
	// PhaseRuntime is fetching the engine's native runtime as a pack from
	// the release feed (engine/packs), part of the job's setup; Done and
	// Total are bytes.
	PhaseRuntime  Phase = "runtime"
	PhaseLoad     Phase = "load"
	PhaseGenerate Phase = "generate"
)

// Progress is reported while a job runs. Total 0 means unknown.
type Progress struct {
	Phase Phase
	Done  int64
	Total int64
	// Note is a state worth showing beside the figures while it lasts, in
	// a donor's words ("no data from the model server for 20 s"); "" when
	// all is well.
	Note string
	// Text is reply text generated since the last report (llm jobs, in the
	// generate phase): the reports' Text, joined in order, is the whole
	// reply the result holds, so that a caller can stream it. A text
	// report is never dropped on its way (engine/host keeps them all).
	Text string `json:",omitempty"`
}

// ProgressFunc receives progress; it must be cheap and must not block.
type ProgressFunc func(Progress)

// Engine runs jobs of some kinds. The interface is deliberately narrow so
// that an engine can later live in a supervised child process without its
// callers changing.
type Engine interface {
	// Name is the modelSource.engine value this engine serves.
	Name() EngineName
	// Kinds lists the task kinds it can run right now (empty when its native
	// library did not load).
	Kinds() []TaskKind
	// Run executes the job. It honours ctx cancellation and reports progress.
	Run(ctx context.Context, job Job, progress ProgressFunc) (Result, error)
	// Release frees whatever the engine keeps resident (a loaded model).
	Release() error
	// ResidentVRAMBytes is what releasing would give back (0 when nothing
	// is loaded or unknown).
	ResidentVRAMBytes() uint64
}

// CannotServeError says this worker can never run the job: a retry on the
// same machine cannot succeed, so the studio must not send it back here.
type CannotServeError struct {
	Engine string
	Kind   TaskKind
	Reason string // optional extra words
}

func (e *CannotServeError) Error() string {
	msg := fmt.Sprintf("%s engine cannot serve %s tasks", e.Engine, e.Kind)
	if e.Reason != "" {
		msg += ": " + e.Reason
	}
	return msg
}

// JobError is a failure that belongs to the job itself, not to this machine
// or the network: invalid or unsupported parameters, a prompt that does not
// fit the model's context, a file that is not a model, a bad input image.
// Running the same job again, here or elsewhere, cannot succeed, so it is
// failed with retryable=false (studio-protocol.md §5.1 leaves the choice to
// the worker; the reference worker retried these and ran them three times).
type JobError struct {
	// Field names the task or file field at fault, in the wire's spelling
	// ("messages[1].content", "width", "initImageUrl"); empty when the job
	// as a whole is at fault.
	Field string
	// Reason is the donor-readable cause, whole (it already says what Err
	// says, if anything).
	Reason string
	// Err is an underlying error, if any, for errors.Is and errors.As.
	Err error
}

func (e *JobError) Error() string {
	msg := e.Reason
	if e.Field != "" {
		msg = e.Field + ": " + msg
	}
	return msg
}

func (e *JobError) Unwrap() error { return e.Err }

// Invalid builds a JobError for field with a formatted reason. A %w verb in
// format wraps its operand as Err.
func Invalid(field, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return &JobError{Field: field, Reason: err.Error(), Err: errors.Unwrap(err)}
}

// ModelFileError is an engine's report that a model file failed to load as
// a model (its native library refused it). It is a failure of the job (the
// offer's file is not a usable model), and the runner removes the file from
// the store (Store.Discard) so that the next offer downloads it again.
type ModelFileError struct {
	Path   string // the local file
	Reason string // why, in words (the library's own message when it gave one)
}

func (e *ModelFileError) Error() string {
	return filepath.Base(e.Path) + " could not be loaded as a model: " + e.Reason
}

// Unwrap makes a ModelFileError a JobError for IsRetryable.
func (e *ModelFileError) Unwrap() error {
	return &JobError{Field: filepath.Base(e.Path), Reason: "could not be loaded as a model: " + e.Reason}
}

// ErrProcessTainted marks an engine's error after which work the engine
// could not stop is still running in this process: a model's chat template
// that ran past its limits, in a goroutine Go cannot end. A process that
// serves the engine (engine/host) ends itself after reporting such an
// error, which is how the core and the memory come back; the job's own
// error says what happened (it is usually a JobError).
var ErrProcessTainted = errors.New("work that could not be stopped is still running in this process")

// IsRetryable is the one classification the worker uses for fail frames:
// false when the failure is a property of the job (a JobError or a
// CannotServeError anywhere in the chain), true for everything else (this
// machine, its engines, the network), which another try may get past.
func IsRetryable(err error) bool {
	if err == nil {
		return false
	}
	var je *JobError
	return !errors.As(err, &je) && !IsCannotServe(err)
}

// IsCannotServe applies the protocol's rule: the typed error anywhere in the
// chain, or the words "cannot serve" in the message.
func IsCannotServe(err error) bool {
	if err == nil {
		return false
	}
	var cs *CannotServeError
	return errors.As(err, &cs) || strings.Contains(err.Error(), "cannot serve")
}
