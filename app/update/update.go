package update

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/Masterminds/semver/v3"

	"github.com/minisgg/studio-worker/release"
	"github.com/minisgg/studio-worker/studio"
)

// UpdatedFromEnv is set, for the restarted program only, to the version
// an update replaced (TakeUpdatedFrom reads it).
const UpdatedFromEnv = "STUDIO_WORKER_UPDATED_FROM"

// DefaultSelfCheckTimeout bounds the new version's `version --verbose`
// (it loads the native runtimes, and may try a GPU one in a child).
const DefaultSelfCheckTimeout = 2 * time.Minute

// Config wires an Updater.
type Config struct {
	// FeedURL is the signed feed; "" is release.DefaultFeedURL.
	FeedURL string
	// Trusted are the keys a feed must be signed by; nil is
	// release.TrustedKeys (compiled in).
	Trusted []ed25519.PublicKey
	// HTTP fetches the feed and the downloads; nil is a client with a
	// 30-minute overall timeout.
	HTTP *http.Client
	// Current is the running version; "" is studio.Version.
	Current string
	// Install is where this program lives (Detect).
	Install Install
	// GOOS and GOARCH choose the release; "" is this program's.
	GOOS, GOARCH string
	// WorkDir keeps downloads (the user's cache folder/updates).
	WorkDir string
	// SelfCheckTimeout bounds the new version's self-check; 0 is
	// DefaultSelfCheckTimeout.
	SelfCheckTimeout time.Duration
	// SelfCheckEnv is the environment of the self-check and of the
	// restarted program; nil is this process's.
	SelfCheckEnv []string
	// Log gets one line per step; nil discards.
	Log *slog.Logger
}

// Updater checks the feed and applies a release. Its methods are safe
// for one caller at a time (Service serialises them).
type Updater struct {
	cfg Config
}

// New makes an Updater, filling Config's defaults.
func New(cfg Config) *Updater {
	cfg.FeedURL = release.FeedURL(cfg.FeedURL)
	if cfg.Trusted == nil {
		cfg.Trusted = release.TrustedKeys
	}
	if cfg.HTTP == nil {
		cfg.HTTP = &http.Client{Timeout: 30 * time.Minute}
	}
	if cfg.Current == "" {
		cfg.Current = studio.Version
	}
	if cfg.GOOS == "" {
		cfg.GOOS = runtime.GOOS
	}
	if cfg.GOARCH == "" {
		cfg.GOARCH = runtime.GOARCH
	}
	if cfg.SelfCheckTimeout <= 0 {
		cfg.SelfCheckTimeout = DefaultSelfCheckTimeout
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Updater{cfg: cfg}
}

// Install is where the running program lives.
func (u *Updater) Install() Install { return u.cfg.Install }

// Offer is what a check found.
type Offer struct {
	// Current is the running version.
	Current string
	// Release is the release to install: newer than Current, or the one
	// the donor named; nil when there is none.
	Release *release.Release
	// Downgrade says Release is older than Current (the donor asked).
	Downgrade bool
	// Install is how this copy was installed.
	Install Install
}

// Line says what the check found in a donor's words.
func (o Offer) Line() string {
	switch {
	case o.Release == nil:
		return "Studio Worker " + o.Current + " is the newest version."
	case o.Install.Kind == KindSource:
		return fmt.Sprintf("Studio Worker %s is out (this is %s, run from %s, not an installed copy): nothing is replaced here; install the new version from its package.",
			o.Release.Version, o.Current, o.Install.Dir)
	case o.Downgrade:
		return fmt.Sprintf("Studio Worker %s (older than %s, as asked) is available.", o.Release.Version, o.Current)
	}
	return fmt.Sprintf("Studio Worker %s is available (this is %s).", o.Release.Version, o.Current)
}

// ErrNoRelease says the feed lists no release for this OS, architecture
// and kind of install.
var ErrNoRelease = errors.New("no release for this computer")

// ErrNoKeys says this build has no release key compiled in, so no feed
// can be trusted and nothing is fetched.
var ErrNoKeys = errors.New("this build of Studio Worker trusts no release key, so it cannot check for updates; install new versions by hand")

// DowngradeError refuses a feed whose newest release for this computer is
// older than the running version: an update never goes back unless the
// donor names the version (an old feed served again must not roll
// computers back).
type DowngradeError struct{ Offered, Current string }

func (e *DowngradeError) Error() string {
	return fmt.Sprintf("the update feed offers %s, older than this %s: not installed (to go back on purpose, run `studio-worker update --to %s`)",
		e.Offered, e.Current, e.Offered)
}

// FeedError says the feed could not be fetched or trusted; Err is the
// release package's error (ErrBadSignature, ErrNotJSON, ...).
type FeedError struct {
	URL string
	Err error
}

func (e *FeedError) Error() string {
	return "the update feed was not used: " + e.Err.Error() + "; nothing was installed"
}

func (e *FeedError) Unwrap() error { return e.Err }

// Check reads the signed feed and picks the release for this computer:
// the newest, when it is newer than the running version; with to set,
// exactly that version (older ones included: the donor asked). It
// returns a *FeedError when the feed cannot be fetched or verified,
// ErrNoRelease (wrapped, naming the platform) when the feed has nothing
// for this OS, architecture and format, and a *DowngradeError when the
// newest it has is older than the running version.
func (u *Updater) Check(ctx context.Context, to string) (Offer, error) {
	offer := Offer{Current: u.cfg.Current, Install: u.cfg.Install}
	if len(u.cfg.Trusted) == 0 {
		return offer, ErrNoKeys
	}
	cur, err := release.ParseVersion(u.cfg.Current)
	if err != nil {
		return offer, fmt.Errorf("this program's version %q is not a release version, so it cannot be compared", u.cfg.Current)
	}
	var want *semver.Version
	if to != "" {
		if want, err = release.ParseVersion(strings.TrimPrefix(to, "v")); err != nil {
			return offer, fmt.Errorf("%q is not a version such as 0.2.0", to)
		}
	}
	m, err := release.Fetch(ctx, u.cfg.HTTP, u.cfg.FeedURL, u.cfg.Trusted)
	if err != nil {
		return offer, &FeedError{URL: u.cfg.FeedURL, Err: err}
	}
	if u.cfg.WorkDir != "" {
		// An old, validly signed feed served again must not hide a newer
		// release (release.ErrStaleFeed says why).
		if err := (release.Watermark{Path: filepath.Join(u.cfg.WorkDir, "feed-seen.json")}).Check(u.cfg.FeedURL, m); err != nil {
			return offer, &FeedError{URL: u.cfg.FeedURL, Err: err}
		}
	}
	format := u.cfg.Install.Kind.Format()
	var best *release.Release
	var bestV *semver.Version
	var listed []string
	for i := range m.Releases {
		r := &m.Releases[i]
		if r.OS != u.cfg.GOOS || r.Arch != u.cfg.GOARCH || (format != "" && r.Format != format) {
			continue
		}
		v, err := release.ParseVersion(r.Version)
		if err != nil {
			u.cfg.Log.Warn(fmt.Sprintf("the update feed lists a release with the version %q, which is not a version; skipped", r.Version), "op", "update")
			continue
		}
		listed = append(listed, r.Version)
		if want != nil {
			if v.Equal(want) {
				best, bestV = r, v
			}
			continue
		}
		if bestV == nil || v.GreaterThan(bestV) {
			best, bestV = r, v
		}
	}
	platform := u.cfg.GOOS + "/" + u.cfg.GOARCH
	if format != "" {
		platform += " (" + format + ")"
	}
	switch {
	case best == nil && want != nil:
		if len(listed) == 0 {
			return offer, fmt.Errorf("%w: the update feed has no Studio Worker release for %s", ErrNoRelease, platform)
		}
		return offer, fmt.Errorf("%w: the update feed has no Studio Worker %s for %s (it has %s)", ErrNoRelease, want, platform, strings.Join(listed, ", "))
	case best == nil:
		return offer, fmt.Errorf("%w: the update feed has no Studio Worker release for %s", ErrNoRelease, platform)
	case bestV.Equal(cur):
		return offer, nil
	case bestV.LessThan(cur) && want == nil:
		return offer, &DowngradeError{Offered: best.Version, Current: u.cfg.Current}
	}
	offer.Release = best
	offer.Downgrade = bestV.LessThan(cur)
	return offer, nil
}

// DownloadError says the download of a release failed its checks (or the
// network); nothing was installed.
type DownloadError struct {
	Version string
	Err     error
}

func (e *DownloadError) Error() string {
	return "the download of Studio Worker " + e.Version + " was refused: " + e.Err.Error() + "; nothing was installed"
}

func (e *DownloadError) Unwrap() error { return e.Err }

// Download fetches the offer's file into WorkDir with its size and sha256
// checked (release.Download), reporting progress(done, total bytes), and
// returns its path. A source build downloads nothing.
func (u *Updater) Download(ctx context.Context, o Offer, progress func(done, total int64)) (string, error) {
	if o.Release == nil || o.Install.Kind == KindSource {
		return "", nil
	}
	if err := os.MkdirAll(u.cfg.WorkDir, 0o700); err != nil {
		return "", &DownloadError{Version: o.Release.Version, Err: fmt.Errorf("cannot make the folder %s: %w", u.cfg.WorkDir, err)}
	}
	dst := filepath.Join(u.cfg.WorkDir, fileName(*o.Release))
	u.cfg.Log.Info(fmt.Sprintf("downloading Studio Worker %s (%d bytes) from %s", o.Release.Version, o.Release.Size, o.Release.URL), "op", "update")
	if err := release.Download(ctx, u.cfg.HTTP, o.Release.Artifact, dst, progress); err != nil {
		return "", &DownloadError{Version: o.Release.Version, Err: err}
	}
	return dst, nil
}

// fileName is the downloaded file's name: the URL's last element when it
// is a plain name, else one made of the version and platform.
func fileName(r release.Release) string {
	if u, err := url.Parse(r.URL); err == nil {
		if b := path.Base(u.Path); b != "" && b != "." && b != "/" && !strings.ContainsAny(b, `\:`) && !strings.HasPrefix(b, ".") {
			return b
		}
	}
	ext := "." + r.Format
	if r.Format == "nsis" {
		ext = ".exe"
	}
	return fmt.Sprintf("studio-worker-%s-%s-%s%s", r.Version, r.OS, r.Arch, ext)
}

// Applied is what Apply did.
type Applied struct {
	Version string
	// Line says it in a donor's words: installed, or what to run.
	Line string
	// Restart, when set, starts the new version: the caller shuts the
	// app down (keeping the job gate), then calls Restart.Do.
	Restart *Restart
}

// SelfCheckError says the new version failed `version --verbose` in its
// installed place; the old version was put back.
type SelfCheckError struct {
	Version string
	Detail  string
	Restore error // why putting the old one back failed; nil when it worked
}

func (e *SelfCheckError) Error() string {
	s := "Studio Worker " + e.Version + " failed its self-check (" + e.Detail + ")"
	if e.Restore != nil {
		return s + " and the old version could not be put back: " + e.Restore.Error()
	}
	return s + "; it was rolled back and the old version stays"
}

// Apply installs a downloaded release the way this copy was installed.
// args are the arguments the program restarts with. A *SelfCheckError
// means the new version was rolled back; any other error means nothing
// was replaced.
func (u *Updater) Apply(ctx context.Context, o Offer, archive string, args []string) (Applied, error) {
	r := o.Release
	if r == nil {
		return Applied{}, errors.New("nothing to install")
	}
	a := Applied{Version: r.Version}
	in := o.Install
	switch in.Kind {
	case KindSource:
		a.Line = o.Line()
		return a, nil
	case KindDeb:
		a.Line = fmt.Sprintf("Studio Worker %s is downloaded and verified: install it with `sudo apt install %s`, then restart the app.", r.Version, archive)
		return a, nil
	case KindRPM:
		a.Line = fmt.Sprintf("Studio Worker %s is downloaded and verified: install it with `sudo dnf install %s`, then restart the app.", r.Version, archive)
		return a, nil
	case KindSystemTarball:
		a.Line = fmt.Sprintf("Studio Worker %s is downloaded and verified; it is installed for everyone in %s, which needs root: run `tar -xJf %s -C /tmp && sudo /tmp/studio-worker-%s/install.sh --system`, then restart the app.",
			r.Version, in.Dir, archive, r.Version)
		return a, nil
	case KindMac:
		a.Line = fmt.Sprintf("Studio Worker %s is downloaded and verified: open %s and drag Studio Worker into Applications.", r.Version, archive)
		return a, nil
	case KindWindows:
		rs, err := u.windowsRestart(r.Version, archive, args)
		if err != nil {
			return a, err
		}
		a.Restart = rs
		a.Line = fmt.Sprintf("Studio Worker %s is downloaded and verified: the app closes, its installer runs and starts it again.", r.Version)
		return a, nil
	case KindTarball:
		rs, err := u.applyTarball(ctx, r.Version, archive, args)
		if err != nil {
			return a, err
		}
		a.Restart = rs
		a.Line = fmt.Sprintf("Studio Worker %s is installed in %s (the previous version is kept in %s); restarting.", r.Version, in.Dir, rs.backup)
		return a, nil
	}
	return a, fmt.Errorf("updates are not applied to an install of kind %q", in.Kind)
}

// Prefixes of the folders beside the installed one.
const (
	stagePrefix = ".studio-worker-update-"
	backupName  = ".studio-worker-previous"
)

// applyTarball unpacks the new tarball beside the installed folder,
// swaps the two folders (the old one kept as backupName), and runs the new
// program's self-check in its real place; a failed check swaps back.
func (u *Updater) applyTarball(ctx context.Context, version, archive string, args []string) (*Restart, error) {
	app := u.cfg.Install.Dir
	parent := filepath.Dir(app)
	stage := filepath.Join(parent, stagePrefix+version)
	if err := os.RemoveAll(stage); err != nil {
		return nil, fmt.Errorf("cannot clear %s: %w; nothing was replaced", stage, err)
	}
	if err := release.Unpack(archive, "tar.xz", stage); err != nil {
		_ = os.RemoveAll(stage)
		if errors.Is(err, syscall.ENOSPC) {
			return nil, fmt.Errorf("Studio Worker %s could not be unpacked in %s: the disk is full (%w); nothing was replaced", version, parent, err)
		}
		return nil, fmt.Errorf("Studio Worker %s could not be unpacked in %s: %w; nothing was replaced", version, parent, err)
	}
	tree, err := programTree(stage)
	if err != nil {
		_ = os.RemoveAll(stage)
		return nil, fmt.Errorf("the Studio Worker %s tarball is not an install: %v; nothing was replaced", version, err)
	}
	backup := filepath.Join(parent, backupName)
	if err := os.RemoveAll(backup); err != nil {
		_ = os.RemoveAll(stage)
		return nil, fmt.Errorf("cannot clear the old backup %s: %w; nothing was replaced", backup, err)
	}
	if err := swapIn(app, tree, backup); err != nil {
		_ = os.RemoveAll(stage)
		return nil, fmt.Errorf("cannot put Studio Worker %s in place of %s: %w; nothing was replaced", version, app, err)
	}
	_ = os.RemoveAll(stage)
	u.cfg.Log.Info("Studio Worker "+version+" is in "+app+"; the previous version is in "+backup, "op", "update")
	rollback := func() error {
		if err := swapBack(app, backup); err != nil {
			return err
		}
		u.cfg.Log.Warn("Studio Worker "+version+" was rolled back; "+app+" holds the previous version again", "op", "update")
		return nil
	}
	exe := filepath.Join(app, filepath.Base(u.cfg.Install.Exe))
	if detail := u.selfCheck(ctx, exe, version); detail != "" {
		return nil, &SelfCheckError{Version: version, Detail: detail, Restore: rollback()}
	}
	env := u.env()
	env = append(env, UpdatedFromEnv+"="+u.cfg.Current)
	return &Restart{Exe: exe, Args: args, Env: env, rollback: rollback, backup: backup, version: version,
		pending: &pendingUpdate{From: u.cfg.Current, To: version, App: app, Backup: backup}}, nil
}

// programTree finds the unpacked program folder: stage itself or its one
// subfolder (studio-worker-<version>/), holding studio-worker and lib/.
func programTree(stage string) (string, error) {
	cand := stage
	if entries, err := os.ReadDir(stage); err == nil && len(entries) == 1 && entries[0].IsDir() {
		cand = filepath.Join(stage, entries[0].Name())
	}
	if !fileExists(filepath.Join(cand, "studio-worker")) {
		return "", errors.New("it has no studio-worker program")
	}
	if !dirExists(filepath.Join(cand, "lib")) {
		return "", errors.New("it has no lib folder")
	}
	return cand, nil
}

// env is the environment of the new program: this one's, without
// UpdatedFromEnv.
func (u *Updater) env() []string {
	src := u.cfg.SelfCheckEnv
	if src == nil {
		src = os.Environ()
	}
	out := make([]string, 0, len(src)+1)
	for _, kv := range src {
		if !strings.HasPrefix(kv, UpdatedFromEnv+"=") {
			out = append(out, kv)
		}
	}
	return out
}

// selfCheck runs `exe version --verbose`: it must exit 0 within the
// timeout and its first line must be "studio-worker <version>". It
// returns "" when it passed, else what went wrong in words.
func (u *Updater) selfCheck(ctx context.Context, exe, version string) string {
	ctx, cancel := context.WithTimeout(ctx, u.cfg.SelfCheckTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, "version", "--verbose")
	cmd.Env = u.env()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	first, _, _ := strings.Cut(out.String(), "\n")
	first = strings.TrimSpace(first)
	switch {
	case ctx.Err() != nil:
		return fmt.Sprintf("`version --verbose` did not finish within %s", u.cfg.SelfCheckTimeout)
	case err != nil:
		var pe *fs.PathError
		if errors.As(err, &pe) || errors.Is(err, exec.ErrNotFound) {
			return "it does not start: " + err.Error()
		}
		return "`version --verbose` failed: " + err.Error() + lastLine(out.String())
	case first != "studio-worker "+version:
		return fmt.Sprintf("it says %q, not \"studio-worker %s\"", first, version)
	}
	u.cfg.Log.Info("Studio Worker "+version+" passed its self-check", "op", "update")
	return ""
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	if s == "" {
		return ""
	}
	if len(s) > 200 {
		s = s[:200]
	}
	return ": " + s
}

// Restart starts the installed new version.
type Restart struct {
	Exe  string
	Args []string
	Env  []string
	// rollback puts the old version back (tarball); start runs the
	// Windows installer's script instead of Exe.
	rollback func() error
	start    func() error
	backup   string
	version  string
	// pending is written just before the exec: the new version removes
	// it once it runs (ConfirmStarted), or the next start rolls back.
	pending *pendingUpdate
}

// Version is the version the restart starts.
func (r *Restart) Version() string { return r.version }

// Do starts the new version in place of this process: on Unix it
// replaces this process (exec) and returns only on failure, after putting
// the old version back and trying to start that instead; on Windows it
// starts the installer's script detached and returns nil, and the caller
// exits so that the installer can replace the program.
func (r *Restart) Do() error {
	if r.start != nil {
		return r.start()
	}
	if r.pending != nil {
		if err := writePending(*r.pending); err != nil {
			return fmt.Errorf("Studio Worker %s was not started: cannot write %s: %w", r.version, pendingPath(r.pending.App), err)
		}
	}
	err := execProgram(r.Exe, r.Args, r.Env)
	if r.pending != nil {
		_ = os.Remove(pendingPath(r.pending.App))
	}
	if r.rollback == nil {
		return fmt.Errorf("Studio Worker %s did not start: %w", r.version, err)
	}
	if rerr := r.rollback(); rerr != nil {
		return fmt.Errorf("Studio Worker %s did not start (%v), and the old version could not be put back: %w", r.version, err, rerr)
	}
	env := make([]string, 0, len(r.Env))
	for _, kv := range r.Env {
		if !strings.HasPrefix(kv, UpdatedFromEnv+"=") {
			env = append(env, kv)
		}
	}
	err2 := execProgram(r.Exe, r.Args, env)
	return fmt.Errorf("Studio Worker %s did not start (%v) and was rolled back; the old version did not start either: %w", r.version, err, err2)
}

// TakeUpdatedFrom returns the version an update replaced when this
// process is the restarted new version, and clears it so that its own
// children do not see it; "" otherwise.
func TakeUpdatedFrom() string {
	v := os.Getenv(UpdatedFromEnv)
	if v != "" {
		_ = os.Unsetenv(UpdatedFromEnv)
	}
	return v
}
