// Package api is the worker's local API: an HTTP server on 127.0.0.1 that
// serves OpenAI-shaped routes (chat completions, streamed or not, image
// generations, the model list) through the worker's own engines and
// one-job gate, and control routes (status, pause, resume) that the
// `studio-worker status|pause|resume` commands use. The running app and
// `studio-worker run` both start it (app/stack).
//
// Guards, on every request, in this order: the Host header names a
// loopback host (a web page's DNS-rebound name is refused: 403), an Origin
// header, when sent, is this server's own origin (a web page's cross-site
// request is refused: 403), and the Authorization header carries the
// bearer token (401; compared in constant time). Bodies are capped
// (413). The address and the token are in a 0600 file in the config folder
// (InfoFile), which only the donor's account can read.
package api

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/studio"
)

// InfoFileName is the file in the config folder that holds the running
// API's address and token.
const InfoFileName = "local-api.json"

// Defaults of Options.
const (
	DefaultMaxBody  = 1 << 20          // bytes of a request body
	DefaultGateWait = 60 * time.Second // how long a request waits for a busy worker
)

// Info is the content of InfoFile: where the API listens and the token
// every request must carry.
type Info struct {
	URL   string `json:"url"` // http://127.0.0.1:PORT
	Token string `json:"token"`
	PID   int    `json:"pid"`
}

// InfoFile is the path of the info file in a config folder.
func InfoFile(configDir string) string { return filepath.Join(configDir, InfoFileName) }

// Worker is what the API needs of the worker (a *studio.Worker).
type Worker interface {
	Snapshot() studio.Snapshot
	Pause()
	PauseNow()
	Resume()
	RunLocal(ctx context.Context, wait time.Duration, job engine.Job, progress engine.ProgressFunc) (engine.Result, error)
}

// Models is what the API needs of the runner: the models on disk.
type Models interface {
	LocalModels() ([]engine.LocalModel, error)
	LocalModel(id string, kind engine.TaskKind) (engine.LocalModel, error)
}

// Options configure Start.
type Options struct {
	Worker Worker
	Models Models
	Log    *slog.Logger
	// ConfigDir receives InfoFile; empty writes none (tests).
	ConfigDir string
	// Port to listen on at 127.0.0.1; when it is taken (or 0), an
	// ephemeral port is used.
	Port int
	// MaxBody caps a request body in bytes (0: DefaultMaxBody).
	MaxBody int64
	// StartOver forgets the credentials and registers again (POST
	// /register/reset, for `studio-worker register --reset`); nil: the
	// route answers 404.
	StartOver func() error
	// GateWait is how long a request waits for a busy worker before a 503
	// with Retry-After (0: DefaultGateWait; negative: not at all).
	GateWait time.Duration
}

// Server is the running local API.
type Server struct {
	opts  Options
	log   *slog.Logger
	token string
	url   string
	host  string // 127.0.0.1:PORT
	srv   *http.Server
	ln    net.Listener
	done  chan struct{}

	closeOnce sync.Once
}

// Start listens on 127.0.0.1 (the setting's port, else an ephemeral one),
// makes a fresh random token, writes InfoFile (0600) and serves until
// Close.
func Start(opts Options) (*Server, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.MaxBody <= 0 {
		opts.MaxBody = DefaultMaxBody
	}
	if opts.GateWait == 0 {
		opts.GateWait = DefaultGateWait
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(opts.Port)))
	if err != nil && opts.Port != 0 {
		opts.Log.Info(fmt.Sprintf("local API: port %d is taken (%v); using an ephemeral port", opts.Port, err), "op", "api")
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		return nil, fmt.Errorf("the local API cannot listen on 127.0.0.1: %w", err)
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		ln.Close()
		return nil, err
	}
	s := &Server{opts: opts, log: opts.Log, token: hex.EncodeToString(raw[:]), ln: ln,
		host: ln.Addr().String(), done: make(chan struct{})}
	s.url = "http://" + s.host
	if opts.ConfigDir != "" {
		if err := writeInfo(InfoFile(opts.ConfigDir), Info{URL: s.url, Token: s.token, PID: os.Getpid()}); err != nil {
			ln.Close()
			return nil, fmt.Errorf("the local API cannot write its address file: %w", err)
		}
	}
	s.srv = &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Warn("local API stopped: "+err.Error(), "op", "api")
		}
	}()
	s.log.Info("local API listening on "+s.url+" (token in "+InfoFile(opts.ConfigDir)+")", "op", "api")
	return s, nil
}

// URL is where the API listens (http://127.0.0.1:PORT).
func (s *Server) URL() string { return s.url }

// Token is the bearer token requests must carry.
func (s *Server) Token() string { return s.token }

// Close stops the server: open requests get a moment to end (a running
// local job is cancelled with its request), and the info file goes if it
// is still this server's.
func (s *Server) Close() error {
	var err error
	s.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err = s.srv.Shutdown(ctx); err != nil {
			err = s.srv.Close()
		}
		<-s.done
		if s.opts.ConfigDir != "" {
			p := InfoFile(s.opts.ConfigDir)
			if info, rerr := ReadInfo(s.opts.ConfigDir); rerr == nil && info.Token == s.token {
				_ = os.Remove(p)
			}
		}
	})
	return err
}

// writeInfo writes the file with owner-only permissions, whole or not at
// all.
func writeInfo(path string, info Info) error {
	b, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".local-api-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// ReadInfo reads the info file of a config folder; the error wraps
// fs.ErrNotExist when no API wrote one.
func ReadInfo(configDir string) (Info, error) {
	b, err := os.ReadFile(InfoFile(configDir))
	if err != nil {
		return Info{}, err
	}
	var info Info
	if err := json.Unmarshal(b, &info); err != nil || info.URL == "" || info.Token == "" {
		return Info{}, fmt.Errorf("the local API file %s is damaged", InfoFile(configDir))
	}
	return info, nil
}

// Handler is the API with its guards.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", s.handleStatus)
	mux.HandleFunc("POST /pause", s.handlePause)
	mux.HandleFunc("POST /resume", s.handleResume)
	if s.opts.StartOver != nil {
		mux.HandleFunc("POST /register/reset", s.handleReset)
	}
	mux.HandleFunc("GET /v1/models", s.handleModels)
	mux.HandleFunc("POST /v1/chat/completions", s.handleChat)
	mux.HandleFunc("POST /v1/images/generations", s.handleImages)
	return s.guard(mux)
}

// guard applies the checks every request passes (see the package doc).
func (s *Server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !loopbackHost(r.Host) {
			writeError(w, http.StatusForbidden, "permission_error", "the Host "+strconv.Quote(r.Host)+" is not this computer: the local API answers only to 127.0.0.1, localhost or [::1]")
			return
		}
		if o := r.Header.Get("Origin"); o != "" && !s.ownOrigin(o) {
			writeError(w, http.StatusForbidden, "permission_error", "requests from a web page at "+strconv.Quote(o)+" are refused: the local API takes no cross-site requests")
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(s.token)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="studio-worker"`)
			msg := "a bearer token is required: it is in " + InfoFileName + " in the settings folder"
			if ok {
				msg = "the bearer token is wrong: the current one is in " + InfoFileName + " in the settings folder (it changes on every start)"
			}
			writeError(w, http.StatusUnauthorized, "authentication_error", msg)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, s.opts.MaxBody)
		next.ServeHTTP(w, r)
	})
}

// loopbackHost accepts the Host header of a request sent to this computer
// by address or by the name localhost; any other name may be a DNS
// rebinding of a web page's domain to 127.0.0.1.
func loopbackHost(hostport string) bool {
	h := hostport
	if hh, _, err := net.SplitHostPort(hostport); err == nil {
		h = hh
	}
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// ownOrigin accepts an Origin that is this server itself (a page it
// served, which it serves none of, or a tool that sets it so).
func (s *Server) ownOrigin(o string) bool {
	u, err := url.Parse(o)
	if err != nil || u.Scheme != "http" || !loopbackHost(u.Host) {
		return false
	}
	_, port, _ := net.SplitHostPort(u.Host)
	_, own, _ := net.SplitHostPort(s.host)
	return port == own
}

// apiError is OpenAI's error document.
type apiError struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

func errorDoc(typ, msg string) apiError {
	var e apiError
	e.Error.Message, e.Error.Type = msg, typ
	return e
}

func writeError(w http.ResponseWriter, status int, typ, msg string) {
	writeJSON(w, status, errorDoc(typ, msg))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// decodeBody reads a JSON body into v; false when it answered an error
// (413 for a body over the cap, 400 otherwise).
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	err := json.NewDecoder(r.Body).Decode(v)
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		writeError(w, http.StatusRequestEntityTooLarge, "invalid_request_error", fmt.Sprintf("the request body is larger than %d bytes", tooBig.Limit))
		return false
	case err != nil:
		writeError(w, http.StatusBadRequest, "invalid_request_error", "the request body is not a valid JSON object: "+err.Error())
		return false
	}
	return true
}
