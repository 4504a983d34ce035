package llama

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/ebitengine/purego"
	yz "github.com/hybridgroup/yzma/pkg/llama"

	"github.com/minisgg/studio-worker/engine"
)

// LibEnv names the environment variable that points at the folder holding
// the llama.cpp libraries.
const LibEnv = "STUDIO_WORKER_LLAMA_LIB"

// libFile is the file yzma opens first in a library folder.
func libFile() string {
	switch runtime.GOOS {
	case "windows":
		return "llama.dll"
	case "darwin":
		return "libllama.dylib"
	}
	return "libllama.so"
}

// LibNotFoundError lists every folder that was searched and why each failed.
type LibNotFoundError struct {
	Looked []string // "folder (reason)"
	// SourceTree is the source checkout the program was built in (a go.mod
	// one folder above the program's), "" for an installed program: only
	// a developer gets the developer's hint.
	SourceTree string
}

func (e *LibNotFoundError) Error() string {
	if len(e.Looked) == 0 {
		return "llama.cpp libraries not found: no folder to look in (choose the llama library folder in settings)"
	}
	if e.SourceTree != "" {
		return fmt.Sprintf("llama.cpp libraries (%s) not found; looked in: %s. Run `make runtime` in %s, set %s, or choose the llama library folder in settings",
			libFile(), strings.Join(e.Looked, "; "), e.SourceTree, LibEnv)
	}
	return fmt.Sprintf("the llama.cpp runtime (%s) is missing from this installation; looked in: %s. Reinstall Studio Worker, or choose a llama library folder in settings",
		libFile(), strings.Join(e.Looked, "; "))
}

// sourceTree returns the source checkout holding the program (bin/ of a
// tree with go.mod, as `make build` makes it), "" otherwise.
func sourceTree(exeDir string) string {
	root := filepath.Dir(exeDir)
	if st, err := os.Stat(filepath.Join(root, "go.mod")); err == nil && !st.IsDir() {
		return root
	}
	return ""
}

// executable is os.Executable; tests move the program elsewhere.
var executable = os.Executable

// libCandidate is a folder to look in and where it came from.
type libCandidate struct {
	dir, from string
	// problem is a runtime pack's record of why a better pack was passed
	// over on this computer ("" for the other places).
	problem string
	// pack is set for the runtime pack fetched for this computer.
	pack *engine.PackRecord
}

// fromBeside are the places an installed program's own runtime is found.
func fromBeside(from string) bool {
	return from == "next to the program" || from == "the source tree's runtime folder"
}

// packCandidate is the llama.cpp runtime pack fetched for this computer
// from the release feed (engine/packs), when one is recorded and present.
func packCandidate() (libCandidate, bool) {
	rec, err := engine.CurrentPack("", engine.RuntimeLlama)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			currentLog().Warn(err.Error(), "op", "llama.load")
		}
		return libCandidate{}, false
	}
	return libCandidate{dir: rec.Dir, from: rec.Describe(), problem: rec.Problem, pack: &rec}, true
}

// libCandidates lists the folders FindLibDir tries, in order.
func libCandidates(explicit string) (cands []libCandidate, tree string) {
	if explicit != "" {
		cands = append(cands, libCandidate{dir: explicit, from: "setting"})
	}
	if env := os.Getenv(LibEnv); env != "" {
		cands = append(cands, libCandidate{dir: env, from: LibEnv})
	}
	if exe, err := executable(); err == nil {
		if real, err := filepath.EvalSymlinks(exe); err == nil {
			exe = real
		}
		dir := filepath.Dir(exe)
		tree = sourceTree(dir)
		cands = append(cands,
			libCandidate{dir: filepath.Join(dir, "lib"), from: "next to the program"},
			libCandidate{dir: filepath.Join(dir, "runtime", "llama", engine.PlatformVariant()), from: "next to the program"},
			// bin/studio-worker from `make build` in a source tree, whose
			// runtime/ was filled by `make runtime`.
			libCandidate{dir: filepath.Join(filepath.Dir(dir), "runtime", "llama", engine.PlatformVariant()), from: "the source tree's runtime folder"})
	}
	// After the runtimes beside the program (the packages carry them and
	// keep working offline): the pack fetched for this computer.
	if pc, ok := packCandidate(); ok {
		cands = append(cands, pc)
	}
	return cands, tree
}

// hasLib says why dir cannot be a runtime folder ("" when it can).
func hasLib(dir string) string {
	st, err := os.Stat(dir)
	switch {
	case err != nil:
		return "no such folder"
	case !st.IsDir():
		return "not a folder"
	}
	if _, err := os.Stat(filepath.Join(dir, libFile())); err != nil {
		return "no " + libFile()
	}
	return ""
}

// FindLibDir returns the folder holding the llama.cpp libraries. It looks,
// in order, in explicit (the donor's setting), in $STUDIO_WORKER_LLAMA_LIB,
// next to the executable (lib/, then runtime/llama/<variant>/), and in
// ../runtime/llama/<variant>/ beside a source tree's bin/. When none
// has them the error names each folder it tried.
func FindLibDir(explicit string) (string, error) {
	c, err := findLib(explicit)
	return c.dir, err
}

func findLib(explicit string) (libCandidate, error) {
	cands, tree := libCandidates(explicit)
	nf := &LibNotFoundError{SourceTree: tree}
	for _, c := range cands {
		if why := hasLib(c.dir); why != "" {
			nf.Looked = append(nf.Looked, fmt.Sprintf("%s (%s: %s)", c.dir, c.from, why))
			continue
		}
		if abs, err := filepath.Abs(c.dir); err == nil {
			c.dir = abs
		}
		// A GPU pack fetched for this computer beats a CPU build beside
		// the program (a Windows install ships the CPU runtime alone and
		// fetches the GPU one); the CPU build stays the fallback should
		// the pack fail its check.
		if fromBeside(c.from) {
			if pc := cands[len(cands)-1]; pc.pack != nil && pc.pack.GPU() && hasLib(pc.dir) == "" {
				if info, err := ReadRuntimeInfo(c.dir); err == nil && !info.GPU() {
					pc.from += ", preferred to the CPU build " + c.from
					return pc, nil
				}
			}
		}
		return c, nil
	}
	return libCandidate{}, nf
}

// The libraries are process-wide: loaded once, with one log callback.
var runtimeState struct {
	mu     sync.Mutex
	loaded bool
	dir    string
	info   RuntimeInfo
	// refused is the GPU runtime that failed its check, with the reason.
	refused *refusal
}

type refusal struct {
	dir string
	err error
}

// LoadRuntime loads the llama.cpp libraries once per process from the
// folder FindLibDir(dir) finds, initialises the backends found there, and
// routes llama.cpp's log into slog. A GPU runtime is first tried in a child
// process (see SetRuntimeChecker); when that fails, a CPU runtime found
// beside it is loaded instead, or none, and RuntimeInfo.Problem says why.
// A later call with another folder keeps the first one (the libraries
// cannot be swapped in a running process) and says so in the log.
func LoadRuntime(dir string, log *slog.Logger) (string, error) {
	if log != nil {
		setLogTarget(log)
	}
	runtimeState.mu.Lock()
	defer runtimeState.mu.Unlock()
	if runtimeState.loaded {
		if dir != "" && !sameDir(dir, runtimeState.dir) {
			currentLog().Warn("llama.cpp libraries already loaded from another folder; restart to use the new one",
				"op", "llama.load", "loaded", runtimeState.dir, "wanted", dir)
		}
		return runtimeState.dir, nil
	}
	found, err := findLib(dir)
	if err != nil {
		return "", err
	}
	if dir != "" && !sameDir(dir, found.dir) {
		currentLog().Warn("the llama library folder in settings has no libraries; using another",
			"op", "llama.load", "setting", dir, "using", found.dir)
	}
	if r := runtimeState.refused; r != nil && r.dir == found.dir {
		// Checked in a child already and refused: the same folder will
		// not do better a second time in this process.
		return "", r.err
	}
	info, err := chooseRuntime(context.Background(), found, dir, currentChecker())
	if err != nil {
		currentLog().Error(err.Error(), "op", "llama.load")
		runtimeState.info = info
		runtimeState.refused = &refusal{dir: found.dir, err: err}
		return "", err
	}
	if info.Problem != "" {
		currentLog().Warn(info.Problem, "op", "llama.load")
	}
	dir = info.Dir
	if err := loadLibs(dir); err != nil {
		return "", err
	}
	info.Loaded = true
	runtimeState.loaded, runtimeState.dir = true, dir
	if info.Devices, err = devicesLocked(); err != nil {
		currentLog().Warn("cannot list the GPUs ggml sees: "+err.Error(), "op", "llama.load")
	}
	info.MachineGPUs = machineGPUs(context.Background())
	info.Advice = advise(thisOS(), info)
	runtimeState.info = info
	currentLog().Info(info.Summary(), "op", "llama.load", "dir", dir,
		"gpu_offload", yz.SupportsGpuOffload())
	if info.Advice != "" {
		currentLog().Warn(info.Advice, "op", "llama.load")
	}
	return dir, nil
}

// loadLibs loads the libraries in dir into the process and initialises
// every backend in that folder.
func loadLibs(dir string) error {
	if err := preloadDeps(dir); err != nil {
		return fmt.Errorf("cannot load the llama.cpp libraries from %s: %w", dir, err)
	}
	if err := yz.Load(dir); err != nil {
		return fmt.Errorf("cannot load the llama.cpp libraries from %s (they may be for another platform or version; llama.cpp %s is expected): %w", dir, LlamaCppRelease, err)
	}
	installLogCallback()
	yz.Init()
	return nil
}

// LlamaCppRelease is the llama.cpp build yzma v1.28.0 is bound to.
const LlamaCppRelease = "v0.5.0"

func sameDir(a, b string) bool {
	aa, err1 := filepath.Abs(a)
	bb, err2 := filepath.Abs(b)
	return err1 == nil && err2 == nil && filepath.Clean(aa) == filepath.Clean(bb)
}

// --- llama.cpp log routing ---------------------------------------------

var logTarget atomic.Pointer[slog.Logger]

func setLogTarget(l *slog.Logger) { logTarget.Store(l) }

func currentLog() *slog.Logger {
	if l := logTarget.Load(); l != nil {
		return l
	}
	return slog.Default()
}

// ggml log levels (enum ggml_log_level).
const (
	ggmlLogDebug = 1
	ggmlLogInfo  = 2
	ggmlLogWarn  = 3
	ggmlLogError = 4
	ggmlLogCont  = 5
)

// logLines assembles llama.cpp's log fragments into lines. llama.cpp sends
// a line in pieces (the later ones at level CONT) and ends it with "\n".
type logLines struct {
	mu     sync.Mutex
	level  int32
	buf    strings.Builder
	errors []string // error lines since the last mark (the first few)
}

var llamaLog logLines

// mark forgets earlier error lines, before a call whose failure we explain.
func (l *logLines) mark() {
	l.mu.Lock()
	l.errors = nil
	l.mu.Unlock()
}

// firstError is the first error llama.cpp logged since the mark — the cause;
// the lines after it only say that the call failed. The function-name prefix
// llama.cpp puts on each line is dropped.
func (l *logLines) firstError() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.errors) == 0 {
		return ""
	}
	line := l.errors[0]
	if i := strings.LastIndex(line, "error loading model: "); i >= 0 {
		return line[i+len("error loading model: "):]
	}
	if i := strings.Index(line, ": "); i > 0 && !strings.ContainsAny(line[:i], " '") {
		return line[i+2:]
	}
	return line
}

func (l *logLines) write(level int32, text string) {
	l.mu.Lock()
	if level != ggmlLogCont {
		if l.buf.Len() > 0 { // a line that never got its newline
			l.emitLocked()
		}
		l.level = level
	}
	l.buf.WriteString(text)
	if strings.HasSuffix(text, "\n") {
		l.emitLocked()
	}
	l.mu.Unlock()
}

func (l *logLines) emitLocked() {
	line := strings.TrimRight(l.buf.String(), "\n")
	l.buf.Reset()
	if strings.TrimSpace(line) == "" {
		return
	}
	var lvl slog.Level
	switch l.level {
	case ggmlLogWarn:
		lvl = slog.LevelWarn
	case ggmlLogError:
		lvl = slog.LevelError
		if len(l.errors) < 8 {
			l.errors = append(l.errors, line)
		}
	default: // debug and info are llama.cpp's chatter
		lvl = slog.LevelDebug
	}
	currentLog().Log(context.Background(), lvl, line, "op", "llama.cpp")
}

var logCallbackOnce sync.Once

func installLogCallback() {
	logCallbackOnce.Do(func() {
		// Callbacks are never freed and limited in number: make exactly one.
		yz.LogSet(purego.NewCallback(logCallback))
	})
}

// logCallback is llama.cpp's ggml_log_callback,
// void (*)(enum ggml_log_level level, const char *text, void *user_data),
// in the one shape that is a valid purego callback on Windows x64, System V
// and Apple arm64 (see internal/ccallback): the result is for Windows, whose
// callbacks must return exactly one uintptr (a C caller expecting void
// ignores it), and user_data is left out (the caller owns the arguments).
func logCallback(level int32, text *byte) uintptr {
	if text != nil {
		llamaLog.write(level, cString(text))
	}
	return 0
}

func cString(p *byte) string {
	n := 0
	for *(*byte)(unsafe.Add(unsafe.Pointer(p), n)) != 0 {
		n++
	}
	return string(unsafe.Slice(p, n))
}

// errLibsMissing is wrapped by Run when the libraries are not loaded.
var errLibsMissing = errors.New("llama.cpp libraries are not loaded")
