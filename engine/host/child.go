package host

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"

	"github.com/minisgg/studio-worker/engine"
)

// Builder makes the engine a child serves from the parent's Init. log
// sends its lines to the parent. The Hello it returns says what the engine
// can run (Serve fills in PID and Engine).
type Builder func(init Init, log *slog.Logger) (engine.Engine, Hello)

// Optional methods of the engine a child serves.
type (
	residentBytes interface{ ResidentBytes() uint64 }
	residentModel interface{ ResidentModel() string }
	threadSetter  interface{ SetThreads(int) }
	deviceLister  interface {
		Devices() ([]engine.GPUDevice, error)
	}
)

// ChildMain is the body of `studio-worker engine-host <name>`: it serves
// the engine that builders[name] makes on the process's stdin and stdout
// until its input ends, which is how the parent says "exit" and how its
// death shows. It returns the exit status; the caller exits with it at once
// (a job still running in native code is abandoned, which is the point).
func ChildMain(args []string, builders map[string]Builder, stderr io.Writer) int {
	if len(args) != 1 || builders[args[0]] == nil {
		fmt.Fprintf(stderr, "engine-host: usage: engine-host <engine> (one of %d known)\n", len(builders))
		return 2
	}
	out, err := protocolStdout()
	if err != nil {
		fmt.Fprintln(stderr, "engine-host: "+err.Error())
		return 1
	}
	if err := Serve(os.Stdin, out, builders[args[0]]); err != nil {
		fmt.Fprintln(stderr, "engine-host: "+err.Error())
		return 1
	}
	return 0
}

// exitTainted is the child's exit status after an engine error that left
// work running it could not stop (engine.ErrProcessTainted).
const exitTainted = 3

// server is the child's side of one connection.
type server struct {
	eng engine.Engine
	out io.Writer
	wmu sync.Mutex // one frame at a time on out

	mu   sync.Mutex
	runs map[uint64]context.CancelFunc
}

func (s *server) send(h header, body []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return writeFrame(s.out, h, body)
}

// Serve speaks the child's side of the protocol on in and out: it reads
// init, builds the engine, says hello, then serves run, cancel, release and
// threads until in ends. It returns nil when in ends between frames (the
// parent closed it, or died); jobs still running are abandoned.
func Serve(in io.Reader, out io.Writer, build Builder) error {
	first, err := readFrame(in)
	if err != nil {
		return fmt.Errorf("reading init: %w", err)
	}
	if first.h.T != msgInit || first.h.Init == nil {
		return fmt.Errorf("the first frame is %q, not init", first.h.T)
	}
	s := &server{out: out, runs: map[uint64]context.CancelFunc{}}
	log := slog.New(&frameLog{s: s, min: first.h.Init.LogLevel})
	eng, hello := build(*first.h.Init, log)
	hello.PID = os.Getpid()
	hello.Engine = eng.Name()
	s.eng = eng
	if err := s.send(header{T: msgHello, Hello: &hello}, nil); err != nil {
		return err
	}
	for {
		f, err := readFrame(in)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		switch f.h.T {
		case msgRun:
			if f.h.Job == nil {
				return errors.New("a run frame without a job")
			}
			ctx, cancel := context.WithCancel(context.Background())
			s.mu.Lock()
			s.runs[f.h.ID] = cancel
			s.mu.Unlock()
			go s.run(ctx, f.h.ID, *f.h.Job)
		case msgCancel:
			s.mu.Lock()
			if cancel := s.runs[f.h.ID]; cancel != nil {
				cancel()
			}
			s.mu.Unlock()
		case msgRelease:
			go func(id uint64) {
				err := s.eng.Release()
				s.sendStats()
				if err != nil {
					s.send(header{T: msgError, ID: id, Err: encodeError(err)}, nil)
				} else {
					s.send(header{T: msgReleased, ID: id}, nil)
				}
			}(f.h.ID)
		case msgDevices:
			go func(id uint64) {
				dl, ok := s.eng.(deviceLister)
				if !ok {
					s.send(header{T: msgError, ID: id, Err: &wireError{Msg: "this engine lists no devices"}}, nil)
					return
				}
				devs, err := dl.Devices()
				if err != nil {
					s.send(header{T: msgError, ID: id, Err: encodeError(err)}, nil)
					return
				}
				s.send(header{T: msgDevices, ID: id, Devices: devs}, nil)
			}(f.h.ID)
		case msgThreads:
			if ts, ok := s.eng.(threadSetter); ok {
				ts.SetThreads(f.h.Threads)
			}
		default:
			return fmt.Errorf("unknown frame %q", f.h.T)
		}
	}
}

func (s *server) run(ctx context.Context, id uint64, job engine.Job) {
	res, err := s.eng.Run(ctx, job, func(p engine.Progress) {
		s.send(header{T: msgProgress, ID: id, Progress: &p}, nil)
	})
	s.mu.Lock()
	if ctx.Err() != nil && err != nil {
		err = fmt.Errorf("%w: %v", errCanceled, err)
	}
	s.runs[id]()
	delete(s.runs, id)
	s.mu.Unlock()
	// Stats first: the parent's Run returns on the answer, and what it
	// reports as held must already be true then.
	s.sendStats()
	if err != nil {
		s.send(header{T: msgError, ID: id, Err: encodeError(err)}, nil)
		if errors.Is(err, engine.ErrProcessTainted) {
			// Work the engine could not stop (a runaway chat template)
			// still runs here: end the process, the one way to get its
			// core and memory back. The parent has the job's answer; its
			// next job starts a fresh child.
			fmt.Fprintln(os.Stderr, "engine-host: exiting: "+err.Error()+" ("+engine.ErrProcessTainted.Error()+")")
			os.Exit(exitTainted)
		}
		return
	}
	head := &resultHead{Ext: res.Ext, Stats: res.Stats}
	body := res.Bytes
	if len(res.JSON) > 0 {
		head.JSON, body = true, res.JSON
	}
	if err := s.send(header{T: msgResult, ID: id, Result: head}, body); err != nil {
		// Too large, most likely: say so instead of leaving the parent waiting.
		s.send(header{T: msgError, ID: id, Err: encodeError(err)}, nil)
	}
}

func (s *server) sendStats() {
	st := Stats{ResidentVRAMBytes: s.eng.ResidentVRAMBytes()}
	if rb, ok := s.eng.(residentBytes); ok {
		st.ResidentBytes = rb.ResidentBytes()
	} else {
		st.ResidentBytes = st.ResidentVRAMBytes
	}
	if rm, ok := s.eng.(residentModel); ok {
		st.Model = rm.ResidentModel()
	}
	s.send(header{T: msgStats, Stats: &st}, nil)
}

// frameLog is the child's slog handler: each record goes to the parent as
// a log frame, which logs it as its own.
type frameLog struct {
	s     *server
	min   slog.Level
	attrs []slog.Attr
}

func (h *frameLog) Enabled(_ context.Context, l slog.Level) bool { return l >= h.min }

func (h *frameLog) Handle(_ context.Context, r slog.Record) error {
	rec := &logRecord{Level: r.Level, Msg: r.Message}
	add := func(a slog.Attr) bool {
		if rec.Attrs == nil {
			rec.Attrs = map[string]string{}
		}
		rec.Attrs[a.Key] = a.Value.String()
		return true
	}
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(add)
	return h.s.send(header{T: msgLog, Log: rec}, nil)
}

func (h *frameLog) WithAttrs(as []slog.Attr) slog.Handler {
	return &frameLog{s: h.s, min: h.min, attrs: append(append([]slog.Attr(nil), h.attrs...), as...)}
}

func (h *frameLog) WithGroup(string) slog.Handler { return h }
