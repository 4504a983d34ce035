package packs

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/release"
)

// Checker tries an unpacked GPU pack of runtime in a child process (for
// llama.cpp, `studio-worker runtime-check <dir>`: load it, list the GPUs,
// decode a tiny model on them). nil means it works; the error says why not
// in words. A GPU backend that fails inside ggml aborts the process it
// runs in, hence the child.
type Checker func(ctx context.Context, runtime, dir string) error

// Config wires an Installer.
type Config struct {
	// FeedURL is the signed release feed (https; http on loopback only).
	FeedURL string
	// Client fetches the feed and the packs; nil is http.DefaultClient.
	Client *http.Client
	// Trusted are the feed's signing keys; nil is release.TrustedKeys
	// (tests pass their own).
	Trusted []ed25519.PublicKey
	// Dir is where packs are unpacked; "" is engine.PacksDir().
	Dir string
	// Machine is the computer packs are chosen for (DetectMachine).
	Machine Machine
	// Check tries GPU packs before they are used; nil uses them untried.
	Check Checker
	Log   *slog.Logger
}

// Installer fetches runtime packs. Ensure calls for one runtime run one at
// a time; different runtimes may run at once.
type Installer struct {
	cfg Config
	log *slog.Logger
	mu  sync.Mutex
	rt  map[string]*sync.Mutex
}

// NewInstaller returns an Installer for cfg.
func NewInstaller(cfg Config) *Installer {
	if cfg.Client == nil {
		cfg.Client = http.DefaultClient
	}
	if cfg.Trusted == nil {
		cfg.Trusted = release.TrustedKeys
	}
	if cfg.Dir == "" {
		cfg.Dir = engine.PacksDir()
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Installer{cfg: cfg, log: log, rt: map[string]*sync.Mutex{}}
}

// Dir is the folder packs are unpacked in.
func (in *Installer) Dir() string { return in.cfg.Dir }

// Machine is the computer packs are chosen for.
func (in *Installer) Machine() Machine { return in.cfg.Machine }

// Progress is a pack download's progress: Done of Total bytes of Pack.
type Progress struct {
	Pack        release.Pack
	Done, Total int64
}

// Options narrow what Ensure does.
type Options struct {
	// GPUOnly fetches only GPU packs: a CPU runtime is already installed
	// (beside the program) and serves as the fallback.
	GPUOnly bool
}

// ErrNoGPUPack is returned by Ensure with GPUOnly when no GPU pack is
// chosen or none worked: the runtime already installed stays in use.
var ErrNoGPUPack = errors.New("no GPU runtime pack for this computer")

// Ensure makes a pack of runtime ready in the data folder and records it
// as the one in use (engine.WriteCurrentPack): it fetches and verifies the
// feed, chooses the packs this machine can run (Choose), and for each,
// best first, downloads it (size and sha256 checked; progress reported),
// unpacks it atomically, and tries a GPU pack in a child process (Check).
// A pack that fails its check is removed and remembered as refused, with
// the reason, so that it is not fetched again while the machine's GPU facts
// (driver version, Vulkan loader) stay the same; the next pack (in the end
// the CPU pack) is tried, and the record's Problem says why the better one
// was passed over. A pack already unpacked and recorded is reused without
// a download. Nothing half-downloaded or half-unpacked is left behind on
// failure. The error says, in a donor's words, why no pack is usable.
func (in *Installer) Ensure(ctx context.Context, runtime string, opts Options, progress func(Progress)) (engine.PackRecord, error) {
	lock := in.lockFor(runtime)
	lock.Lock()
	defer lock.Unlock()
	if progress == nil {
		progress = func(Progress) {}
	}
	m, err := in.fetchFeed(ctx)
	if err != nil {
		return engine.PackRecord{}, err
	}
	choice, err := Choose(m.Packs, runtime, in.cfg.Machine)
	if err != nil {
		return engine.PackRecord{}, err
	}
	for _, s := range choice.Skipped {
		in.log.Info("runtime pack passed over: "+s, "op", "packs", "runtime", runtime)
	}
	refused := in.readRefused(runtime)
	var problems []string
	for _, p := range choice.Packs {
		if opts.GPUOnly && p.Backend == "cpu" {
			continue
		}
		if why, ok := refused[in.refusalKey(p)]; ok {
			problems = append(problems, why)
			continue
		}
		dir, err := in.install(ctx, p, progress)
		if err != nil {
			// A download or unpack that failed is not a reason to settle
			// for a lesser pack: the next try fetches it again.
			return engine.PackRecord{}, err
		}
		if p.Backend != "cpu" && in.cfg.Check != nil {
			in.log.Info(fmt.Sprintf("trying the %s runtime pack %s in a child process first", engine.BackendName(p.Backend), p.Variant), "op", "packs", "runtime", runtime)
			if cerr := in.cfg.Check(ctx, runtime, dir); cerr != nil {
				if ctx.Err() != nil {
					return engine.PackRecord{}, ctx.Err()
				}
				why := fmt.Sprintf("the %s runtime (%s %s) did not start on this GPU: %v", engine.BackendName(p.Backend), p.Variant, p.Version, cerr)
				if msg := cerr.Error(); strings.Contains(msg, "sees no GPU") {
					// It started, and found nothing to run on (runtime-check
					// --need-gpu).
					why = fmt.Sprintf("the %s runtime (%s %s) found no GPU to run on: %s", engine.BackendName(p.Backend), p.Variant, p.Version, strings.TrimPrefix(msg, "failed its check: "))
				}
				in.log.Warn(why, "op", "packs", "runtime", runtime)
				problems = append(problems, why)
				in.refuse(runtime, p, why)
				_ = os.RemoveAll(dir)
				continue
			}
		}
		rec := engine.PackRecord{Runtime: runtime, Variant: p.Variant, Version: p.Version, Backend: p.Backend, Dir: dir}
		if len(problems) > 0 {
			rec.Problem = strings.Join(problems, "; ") + "; using the " + engine.BackendName(p.Backend) + " runtime"
		}
		if err := engine.WriteCurrentPack(in.cfg.Dir, rec); err != nil {
			return engine.PackRecord{}, fmt.Errorf("the runtime pack %s is unpacked in %s, but could not be recorded: %w", p.Variant, dir, err)
		}
		in.log.Info(fmt.Sprintf("%s runtime: using %s in %s", runtimeName(runtime), rec.Describe(), dir), "op", "packs", "runtime", runtime)
		if rec.Problem != "" {
			in.log.Warn(rec.Problem, "op", "packs", "runtime", runtime)
		}
		return rec, nil
	}
	if opts.GPUOnly {
		msg := ErrNoGPUPack.Error()
		if len(problems) > 0 {
			msg = strings.Join(problems, "; ")
		}
		return engine.PackRecord{}, fmt.Errorf("%w: %s", ErrNoGPUPack, msg)
	}
	return engine.PackRecord{}, fmt.Errorf("no %s runtime pack works on this computer: %s", runtimeName(runtime), strings.Join(problems, "; "))
}

// FeedTimeout bounds reading the feed (a few kilobytes): a network that
// swallows connections must not hold a job, or the start, for long.
const FeedTimeout = time.Minute

// fetchFeed reads and verifies the feed.
func (in *Installer) fetchFeed(ctx context.Context) (*release.Manifest, error) {
	ctx, cancel := context.WithTimeout(ctx, FeedTimeout)
	defer cancel()
	m, err := release.Fetch(ctx, in.cfg.Client, in.cfg.FeedURL, in.cfg.Trusted)
	if err != nil {
		return nil, fmt.Errorf("the release feed %s could not be used: %w", in.cfg.FeedURL, err)
	}
	return m, nil
}

func (in *Installer) lockFor(runtime string) *sync.Mutex {
	in.mu.Lock()
	defer in.mu.Unlock()
	l := in.rt[runtime]
	if l == nil {
		l = &sync.Mutex{}
		in.rt[runtime] = l
	}
	return l
}

// packRecordFile, inside an unpacked pack, is the feed's entry it came
// from: a folder without it (or with another sha256) is not a finished
// install and is replaced.
const packRecordFile = ".studio-worker-pack.json"

// PackDir is where pack p is unpacked: <root>/<runtime>/<variant>/<version>.
func PackDir(root string, p release.Pack) (string, error) {
	for _, part := range []string{p.Runtime, p.Variant, p.Version} {
		if part == "" || part == "." || part == ".." || strings.ContainsAny(part, `/\:`) {
			return "", fmt.Errorf("the runtime pack %q (%s %s) has a name that cannot be a folder", p.Variant, p.Runtime, p.Version)
		}
	}
	return filepath.Join(root, p.Runtime, p.Variant, p.Version), nil
}

// install downloads and unpacks p (or finds it unpacked already) and
// returns its folder.
func (in *Installer) install(ctx context.Context, p release.Pack, progress func(Progress)) (string, error) {
	if err := ForMachine(p, in.cfg.Machine); err != nil {
		return "", err
	}
	dir, err := PackDir(in.cfg.Dir, p)
	if err != nil {
		return "", err
	}
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	if b, err := os.ReadFile(filepath.Join(dir, packRecordFile)); err == nil {
		var have release.Pack
		if json.Unmarshal(b, &have) == nil && have.SHA256 == p.SHA256 {
			return dir, nil
		}
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", fmt.Errorf("no folder for runtime packs: %w", err)
	}
	archive := filepath.Join(filepath.Dir(dir), "."+p.Version+".download."+p.Format)
	defer os.Remove(archive)
	in.log.Info(fmt.Sprintf("downloading the %s runtime pack %s %s (%s)", runtimeName(p.Runtime), p.Variant, p.Version, mb(p.Size)), "op", "packs", "url", p.URL)
	progress(Progress{Pack: p, Total: p.Size})
	err = release.Download(ctx, in.cfg.Client, p.Artifact, archive, func(done, total int64) {
		progress(Progress{Pack: p, Done: done, Total: total})
	})
	if err != nil {
		return "", fmt.Errorf("the %s runtime pack %s could not be downloaded: %w", runtimeName(p.Runtime), p.Variant, err)
	}
	// Unpack extracts into a temporary folder beside dir and renames it
	// into place whole, replacing an older copy (another sha256, or one
	// never marked complete) only then.
	if err := release.Unpack(archive, p.Format, dir); err != nil {
		return "", fmt.Errorf("the %s runtime pack %s could not be unpacked: %w", runtimeName(p.Runtime), p.Variant, err)
	}
	b, _ := json.MarshalIndent(p, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, packRecordFile), b, 0o644); err != nil {
		_ = os.RemoveAll(dir)
		return "", fmt.Errorf("the runtime pack in %s could not be marked complete: %w", dir, err)
	}
	return dir, nil
}

// refusalKey names a pack's refusal on this machine: the pack's bytes and
// the GPU facts it was tried with, so that a new driver or a newly
// installed Vulkan loader gives a refused pack another try.
func (in *Installer) refusalKey(p release.Pack) string {
	m := in.cfg.Machine
	return fmt.Sprintf("%s nvidia=%s vulkan=%t", p.SHA256, m.NVIDIADriver, m.VulkanLoader)
}

// refusedPath is the file that lists, per runtime, the packs (by sha256) that failed their
// check on this computer, with the reason.
func (in *Installer) refusedPath(runtime string) string {
	return filepath.Join(in.cfg.Dir, runtime, "refused.json")
}

func (in *Installer) readRefused(runtime string) map[string]string {
	out := map[string]string{}
	if b, err := os.ReadFile(in.refusedPath(runtime)); err == nil {
		_ = json.Unmarshal(b, &out)
	}
	return out
}

func (in *Installer) refuse(runtime string, p release.Pack, why string) {
	r := in.readRefused(runtime)
	r[in.refusalKey(p)] = why
	b, _ := json.MarshalIndent(r, "", "  ")
	if err := os.WriteFile(in.refusedPath(runtime), b, 0o644); err != nil {
		in.log.Warn("could not remember the refused runtime pack: "+err.Error(), "op", "packs")
	}
}

// mb is a size in a donor's units (binary megabytes, as the window
// prints sizes).
func mb(n int64) string {
	return fmt.Sprintf("%.0f MB", float64(n)/(1<<20))
}
