package settings

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/google/uuid"
)

// FileName is the settings file inside the settings folder.
const FileName = "settings.toml"

// Store reads and writes settings.toml in one folder.
type Store struct {
	dir string
	mu  sync.Mutex
	now func() time.Time // for the name of a corrupt file set aside
}

// NewStore returns a store for dir (see DefaultDir). Nothing is touched
// until Load or Save.
func NewStore(dir string) *Store {
	return &Store{dir: dir, now: time.Now}
}

// Dir is the folder of the store.
func (s *Store) Dir() string { return s.dir }

// Path is the settings file.
func (s *Store) Path() string { return filepath.Join(s.dir, FileName) }

// CorruptError says the settings file could not be read and was set aside.
// Load still returns usable (default) settings with it.
type CorruptError struct {
	Path    string // the settings file
	MovedTo string // where the unreadable file now is; empty if it could not be moved
	Err     error  // why it could not be read
}

func (e *CorruptError) Error() string {
	if e.MovedTo == "" {
		return fmt.Sprintf("the settings file %s could not be read (%v); default settings are used", e.Path, e.Err)
	}
	return fmt.Sprintf("the settings file %s could not be read (%v); it was moved to %s and default settings are used",
		e.Path, e.Err, e.MovedTo)
}

func (e *CorruptError) Unwrap() error { return e.Err }

// Load reads the settings. A missing file gives Default(). Fields missing
// from the file keep their defaults. An unreadable file is renamed aside
// (settings.toml.corrupt-<time>) so that nothing the donor wrote is ever
// silently overwritten, and Load returns Default() with a *CorruptError.
// The install id is generated once and saved at once, so it stays the same
// across restarts.
func (s *Store) Load() (Settings, error) {
	s.mu.Lock()
	defer s.mu.Unlock()

	st := Default()
	var loadErr error
	data, err := os.ReadFile(s.Path())
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// first run
	case err != nil:
		return Default(), fmt.Errorf("settings: cannot read %s: %w", s.Path(), err)
	default:
		if _, derr := toml.Decode(string(data), &st); derr != nil {
			st = Default()
			ce := &CorruptError{Path: s.Path(), Err: derr}
			aside := fmt.Sprintf("%s.corrupt-%s", s.Path(), s.now().UTC().Format("20060102T150405.000Z"))
			if rerr := os.Rename(s.Path(), aside); rerr == nil {
				ce.MovedTo = aside
			} else {
				// Could not set it aside: leave it alone and do not write over it.
				return st, ce
			}
			loadErr = ce
		}
	}
	if st.InstallID == "" {
		st.InstallID = uuid.NewString()
		if err := s.save(st); err != nil {
			return st, errors.Join(loadErr, err)
		}
	}
	return st, loadErr
}

// Save writes the settings atomically (temporary file, then rename) with
// mode 0600.
func (s *Store) Save(st Settings) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.save(st)
}

func (s *Store) save(st Settings) error {
	var buf bytes.Buffer
	buf.WriteString("# Studio Worker settings. Edit while the app is closed, or use the Settings page.\n")
	if err := toml.NewEncoder(&buf).Encode(st); err != nil {
		return fmt.Errorf("settings: encode: %w", err)
	}
	return writeFileAtomic(s.Path(), buf.Bytes())
}

// writeFileAtomic writes data next to path and renames it over path, so a
// crash leaves either the old or the new file, never half of one.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("settings: cannot create folder %s: %w", dir, err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("settings: cannot write in %s: %w", dir, err)
	}
	name := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(name)
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("settings: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("settings: write %s: %w", name, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("settings: sync %s: %w", name, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("settings: close %s: %w", name, err)
	}
	if err := os.Rename(name, path); err != nil {
		return fmt.Errorf("settings: replace %s: %w", path, err)
	}
	ok = true
	return nil
}
