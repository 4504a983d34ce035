// Package host runs a native engine (llama.cpp, stable-diffusion.cpp) in a
// supervised child process, so that a crash inside native code fails one
// job instead of ending the worker. Both sides import it: the child serves
// an engine.Engine with Serve (the hidden `studio-worker engine-host
// llama|sd` command), and the parent's Client implements engine.Engine by
// talking to that child.
//
// The two speak in frames over the child's stdin (parent to child) and
// stdout (child to parent). A frame is two unsigned 32-bit big-endian
// lengths, a JSON header of the first length and a raw body of the second
// (a result's bytes or JSON document, whole; empty for every other frame):
//
//	[header length][body length][header JSON][body]
//
// The parent sends init first; the child answers hello, saying whether its
// library loaded and which task kinds it serves. Then the parent sends run,
// cancel, release and threads; the child sends progress, result, error,
// released, stats and log frames. Runs are answered by id. The child's
// stderr is not part of the protocol: it carries what native code prints,
// and the parent keeps its last lines to say why a child died.
package host

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/minisgg/studio-worker/engine"
)

// Frame size limits: a header is a few kilobytes (a job's prompt and
// parameters); a body is a result (an image, a chat document).
const (
	maxHeader = 16 << 20
	maxBody   = 1 << 30
)

// Message types, in the header's "t" field.
const (
	msgInit     = "init"     // parent -> child, first: Init
	msgHello    = "hello"    // child -> parent, first: Hello
	msgRun      = "run"      // parent -> child: ID, Job
	msgCancel   = "cancel"   // parent -> child: ID of the run to cancel
	msgRelease  = "release"  // parent -> child: ID; answered by released
	msgThreads  = "threads"  // parent -> child: Threads for the next jobs
	msgDevices  = "devices"  // parent -> child: ID; answered in kind with Devices, or error
	msgProgress = "progress" // child -> parent: ID, Progress
	msgResult   = "result"   // child -> parent: ID, Result; body = bytes or JSON
	msgError    = "error"    // child -> parent: ID, Err
	msgReleased = "released" // child -> parent: ID
	msgStats    = "stats"    // child -> parent: Stats, after each change
	msgLog      = "log"      // child -> parent: Log
)

// Init is the parent's first frame: which engine to build, and how.
type Init struct {
	Engine engine.EngineName `json:"engine"`
	// LibPath is the donor's library setting: llama.cpp's library folder,
	// or stable-diffusion.cpp's library file. Empty: the engine's own
	// search (environment variable, beside the program).
	LibPath string `json:"libPath,omitempty"`
	// Threads for generation; 0 is the engine's default.
	Threads int `json:"threads,omitempty"`
	// LogLevel is the lowest level the child sends as log frames.
	LogLevel slog.Level `json:"logLevel"`
}

// Hello is the child's first frame: what it can run.
type Hello struct {
	PID    int               `json:"pid"`
	Engine engine.EngineName `json:"engine"`
	Kinds  []engine.TaskKind `json:"kinds,omitempty"`
	// LoadError says why the library did not load ("" when it did).
	LoadError string `json:"loadError,omitempty"`
	// Runtime is a one-line description of the loaded library.
	Runtime string `json:"runtime,omitempty"`
	// Notices are problems the donor should read (a GPU runtime that
	// failed its check, a GPU left unused and what to install).
	Notices []string `json:"notices,omitempty"`
}

// Stats is what the child holds in memory, sent after every load, run and
// release.
type Stats struct {
	// Model is the path of the model file held, "" when none.
	Model string `json:"model,omitempty"`
	// ResidentBytes is the memory the held model takes, wherever it lives;
	// ResidentVRAMBytes the part of it in GPU memory.
	ResidentBytes     uint64 `json:"residentBytes,omitempty"`
	ResidentVRAMBytes uint64 `json:"residentVramBytes,omitempty"`
}

// resultHead is a result without its payload (the frame's body).
type resultHead struct {
	Ext   string       `json:"ext,omitempty"`
	JSON  bool         `json:"json,omitempty"` // the body is Result.JSON, not Result.Bytes
	Stats engine.Stats `json:"stats"`
}

// logRecord is one of the child's log lines.
type logRecord struct {
	Level slog.Level        `json:"level"`
	Msg   string            `json:"msg"`
	Attrs map[string]string `json:"attrs,omitempty"`
}

// header is every frame's JSON part; which fields are set depends on T.
type header struct {
	T        string             `json:"t"`
	ID       uint64             `json:"id,omitempty"`
	Init     *Init              `json:"init,omitempty"`
	Hello    *Hello             `json:"hello,omitempty"`
	Job      *engine.Job        `json:"job,omitempty"`
	Progress *engine.Progress   `json:"progress,omitempty"`
	Result   *resultHead        `json:"result,omitempty"`
	Err      *wireError         `json:"err,omitempty"`
	Stats    *Stats             `json:"stats,omitempty"`
	Log      *logRecord         `json:"log,omitempty"`
	Threads  int                `json:"threads,omitempty"`
	Devices  []engine.GPUDevice `json:"devices,omitempty"`
}

// frame is one decoded frame.
type frame struct {
	h    header
	body []byte
}

// writeFrame writes one frame. Callers serialise writes to w.
func writeFrame(w io.Writer, h header, body []byte) error {
	hj, err := json.Marshal(h)
	if err != nil {
		return fmt.Errorf("encoding a %s frame: %w", h.T, err)
	}
	if len(hj) > maxHeader || len(body) > maxBody {
		return fmt.Errorf("a %s frame is too large (%d + %d bytes)", h.T, len(hj), len(body))
	}
	buf := make([]byte, 8, 8+len(hj)+len(body))
	binary.BigEndian.PutUint32(buf[0:4], uint32(len(hj)))
	binary.BigEndian.PutUint32(buf[4:8], uint32(len(body)))
	buf = append(append(buf, hj...), body...)
	_, err = w.Write(buf)
	return err
}

// readFrame reads one frame; io.EOF when the stream ended between frames.
func readFrame(r io.Reader) (frame, error) {
	var lens [8]byte
	if _, err := io.ReadFull(r, lens[:]); err != nil {
		return frame{}, err
	}
	hn, bn := binary.BigEndian.Uint32(lens[0:4]), binary.BigEndian.Uint32(lens[4:8])
	if hn > maxHeader || bn > maxBody {
		return frame{}, fmt.Errorf("a frame claims %d + %d bytes, more than the protocol allows", hn, bn)
	}
	buf := make([]byte, int(hn)+int(bn))
	if _, err := io.ReadFull(r, buf); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return frame{}, err
	}
	var f frame
	if err := json.Unmarshal(buf[:hn], &f.h); err != nil {
		return frame{}, fmt.Errorf("a frame's header is not valid: %w", err)
	}
	if bn > 0 {
		f.body = buf[hn:]
	}
	return f, nil
}

// wireError carries an engine's error across the pipe with its
// classification, so that engine.IsRetryable answers the same on both
// sides: a *engine.JobError stays one (retryable=false survives), and so
// does a *engine.CannotServeError.
type wireError struct {
	Msg  string `json:"msg"`
	Kind string `json:"kind,omitempty"` // "job", "model-file", "cannot-serve", "canceled" or ""
	// ModelFileError's path (its Reason goes in Reason).
	Path string `json:"path,omitempty"`
	// JobError's fields.
	Field  string `json:"field,omitempty"`
	Reason string `json:"reason,omitempty"`
	// CannotServeError's fields.
	Engine   string          `json:"engine,omitempty"`
	TaskKind engine.TaskKind `json:"taskKind,omitempty"`
	Why      string          `json:"why,omitempty"`
	// Tainted says the child is left running work it cannot stop
	// (engine.ErrProcessTainted) and exits after this answer.
	Tainted bool `json:"tainted,omitempty"`
}

// errCanceled is the parent's view of a run the child stopped on request.
var errCanceled = errors.New("the job was cancelled")

func encodeError(err error) *wireError {
	w := &wireError{Msg: err.Error()}
	var je *engine.JobError
	var cs *engine.CannotServeError
	var mf *engine.ModelFileError
	switch {
	case errors.As(err, &mf):
		w.Kind, w.Path, w.Reason = "model-file", mf.Path, mf.Reason
		if errors.As(err, &je) && je.Err == error(mf) {
			w.Field, w.Why = je.Field, je.Reason
		}
	case errors.As(err, &je):
		w.Kind, w.Field, w.Reason = "job", je.Field, je.Reason
	case errors.As(err, &cs):
		w.Kind, w.Engine, w.TaskKind, w.Why = "cannot-serve", cs.Engine, cs.Kind, cs.Reason
	case errors.Is(err, errCanceled):
		w.Kind = "canceled"
	}
	w.Tainted = errors.Is(err, engine.ErrProcessTainted)
	return w
}

func (w *wireError) decode() error {
	switch w.Kind {
	case "job":
		return &engine.JobError{Field: w.Field, Reason: w.Reason}
	case "model-file":
		mf := &engine.ModelFileError{Path: w.Path, Reason: w.Reason}
		if w.Field != "" {
			return &engine.JobError{Field: w.Field, Reason: w.Why, Err: mf}
		}
		return mf
	case "cannot-serve":
		return &engine.CannotServeError{Engine: w.Engine, Kind: w.TaskKind, Reason: w.Why}
	case "canceled":
		return errCanceled
	}
	return errors.New(w.Msg)
}
