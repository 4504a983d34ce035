package settings

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	"github.com/zalando/go-keyring"
)

// KeyringService is the service name of the keychain entries.
const KeyringService = "studio-worker"

// CredentialsFileName is the 0600 file used where no keychain works.
const CredentialsFileName = "credentials.json"

// Credentials are what registration produces. AuthToken and
// RegistrationSecret are secrets: they are never logged (String and
// LogValue redact them).
type Credentials struct {
	WorkerID           string `json:"workerId,omitempty"`
	AuthToken          string `json:"authToken,omitempty"`
	RequestID          string `json:"requestId,omitempty"`
	RegistrationSecret string `json:"registrationSecret,omitempty"`
}

// Registered reports whether the worker may connect (both credentials set).
func (c Credentials) Registered() bool { return c.WorkerID != "" && c.AuthToken != "" }

func redact(s string) string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}

// String keeps secrets out of fmt output.
func (c Credentials) String() string {
	return fmt.Sprintf("Credentials{WorkerID:%q AuthToken:%q RequestID:%q RegistrationSecret:%q}",
		c.WorkerID, redact(c.AuthToken), c.RequestID, redact(c.RegistrationSecret))
}

// GoString keeps secrets out of %#v.
func (c Credentials) GoString() string { return c.String() }

// LogValue keeps secrets out of slog output.
func (c Credentials) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("workerId", c.WorkerID),
		slog.String("requestId", c.RequestID),
		slog.Bool("hasAuthToken", c.AuthToken != ""),
		slog.Bool("hasRegistrationSecret", c.RegistrationSecret != ""),
	)
}

// CredentialStore keeps the credentials between runs. Load of a store that
// holds nothing returns zero Credentials and no error.
type CredentialStore interface {
	Load() (Credentials, error)
	Save(Credentials) error
	Clear() error
}

// ResetAdvice is how a donor starts over when the stored credentials are
// unusable: with the window, or with the command line (headless `run` has
// no window).
const ResetAdvice = "log out (Settings page, \"Log out / reset…\") or run `studio-worker register --reset`"

// NewCredentialStore uses the OS keychain when one answers (probed once per
// process with a throw-away entry), otherwise a 0600 file in dir. On Linux
// without a Secret Service the keychain fails and the file is used; without
// a session bus the keychain is not even asked (sessionBusUsable), so no
// probe ever starts a bus. log (may be nil) hears about the choice and about
// a credentials file others could read.
func NewCredentialStore(dir string, log *slog.Logger) CredentialStore {
	file := NewFileCredentialStore(dir)
	file.SetLog(log)
	if ok, why := sessionBusUsable(); !ok {
		file.log.Debug("the keychain is not used ("+why+"); credentials are kept in "+file.path+" (mode 0600)", "op", "credentials")
		return file
	}
	if keyringWorks() {
		return &keyringStore{user: keyringUser(dir), file: file}
	}
	return file
}

var (
	probeOnce sync.Once
	probeOK   bool
)

func keyringWorks() bool {
	probeOnce.Do(func() { probeOK = probeKeyring() })
	return probeOK
}

func probeKeyring() bool {
	const user, val = "probe", "ok"
	if err := keyring.Set(KeyringService, user, val); err != nil {
		return false
	}
	got, err := keyring.Get(KeyringService, user)
	_ = keyring.Delete(KeyringService, user)
	return err == nil && got == val
}

// keyringUser ties the entry to the settings folder, so two configurations
// (say the dev studio demo and the real one) keep separate credentials.
func keyringUser(dir string) string {
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	return "credentials:" + dir
}

type keyringStore struct {
	user string
	// file holds credentials written before a keychain was available; they
	// are moved into the keychain on the first Save.
	file *FileCredentialStore
}

func (k *keyringStore) Load() (Credentials, error) {
	raw, err := keyring.Get(KeyringService, k.user)
	if errors.Is(err, keyring.ErrNotFound) {
		return k.file.Load()
	}
	if err != nil {
		return Credentials{}, fmt.Errorf("credentials: the keychain did not answer: %w", err)
	}
	var c Credentials
	if err := json.Unmarshal([]byte(raw), &c); err != nil {
		return Credentials{}, fmt.Errorf("credentials: the keychain entry is unreadable: %w", err)
	}
	return c, nil
}

func (k *keyringStore) Save(c Credentials) error {
	raw, err := json.Marshal(c)
	if err != nil {
		return err
	}
	if err := keyring.Set(KeyringService, k.user, string(raw)); err != nil {
		return fmt.Errorf("credentials: cannot write to the keychain: %w", err)
	}
	// Once the keychain holds them, no copy should stay on disk.
	return k.file.Clear()
}

func (k *keyringStore) Clear() error {
	err := keyring.Delete(KeyringService, k.user)
	if errors.Is(err, keyring.ErrNotFound) {
		err = nil
	}
	if err != nil {
		err = fmt.Errorf("credentials: cannot remove the keychain entry: %w", err)
	}
	return errors.Join(err, k.file.Clear())
}

// FileCredentialStore keeps the credentials in credentials.json (mode 0600)
// in a folder.
type FileCredentialStore struct {
	path string
	mu   sync.Mutex
	log  *slog.Logger
}

// NewFileCredentialStore returns the file store for dir.
func NewFileCredentialStore(dir string) *FileCredentialStore {
	return &FileCredentialStore{path: filepath.Join(dir, CredentialsFileName), log: slog.New(slog.DiscardHandler)}
}

// SetLog sets where the store says what it did on its own (a mode it
// tightened); nil discards.
func (f *FileCredentialStore) SetLog(log *slog.Logger) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f.mu.Lock()
	f.log = log
	f.mu.Unlock()
}

// Path is the credentials file.
func (f *FileCredentialStore) Path() string { return f.path }

func (f *FileCredentialStore) Load() (Credentials, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	data, err := os.ReadFile(f.path)
	if errors.Is(err, fs.ErrNotExist) {
		return Credentials{}, nil
	}
	if err != nil {
		return Credentials{}, fmt.Errorf("credentials: cannot read %s (%w); check its owner and permissions, or %s to start over",
			f.path, err, ResetAdvice)
	}
	f.tightenLocked()
	var c Credentials
	if err := json.Unmarshal(data, &c); err != nil {
		return Credentials{}, fmt.Errorf("credentials: %s is unreadable (%v); %s to start over", f.path, err, ResetAdvice)
	}
	return c, nil
}

// tightenLocked makes a credentials file that others may read (a copy
// restored from a backup, a hand edit) private again, and says so. Windows
// has no such mode bits.
func (f *FileCredentialStore) tightenLocked() {
	if runtime.GOOS == "windows" {
		return
	}
	fi, err := os.Stat(f.path)
	if err != nil || fi.Mode().Perm()&0o077 == 0 {
		return
	}
	if err := os.Chmod(f.path, 0o600); err != nil {
		f.log.Warn(fmt.Sprintf("the credentials file %s can be read by other users (mode %04o) and could not be made private: %v",
			f.path, fi.Mode().Perm(), err), "op", "credentials")
		return
	}
	f.log.Warn(fmt.Sprintf("the credentials file %s could be read by other users (mode %04o); it is now private (0600)",
		f.path, fi.Mode().Perm()), "op", "credentials")
}

func (f *FileCredentialStore) Save(c Credentials) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c == (Credentials{}) {
		return f.clear()
	}
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(f.path, append(data, '\n'))
}

func (f *FileCredentialStore) Clear() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.clear()
}

func (f *FileCredentialStore) clear() error {
	if err := os.Remove(f.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("credentials: cannot remove %s: %w", f.path, err)
	}
	return nil
}
