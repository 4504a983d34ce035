package settings

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/zalando/go-keyring"
)

func validSettings(t *testing.T) Settings {
	s := Default()
	s.ModelsDir = filepath.Join(t.TempDir(), "models")
	return s
}

func TestDefault(t *testing.T) {
	d := Default()
	if d.StudioURL != "https://studio.minis.gg/" || d.VRAMBudgetGB != 12 || d.Threads != 0 {
		t.Fatalf("unexpected defaults: %+v", d)
	}
	if !filepath.IsAbs(d.ModelsDir) || filepath.Base(d.ModelsDir) != "models" {
		t.Fatalf("models dir %q, want an absolute .../models", d.ModelsDir)
	}
	if got, want := d.EffectiveThreads(), max(1, runtime.NumCPU()-1); got != want {
		t.Fatalf("EffectiveThreads = %d, want %d", got, want)
	}
}

func TestValidate(t *testing.T) {
	fileNotDir := filepath.Join(t.TempDir(), "afile")
	if err := os.WriteFile(fileNotDir, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		edit     func(*Settings)
		vram     float64
		field    string
		inReason string
	}{
		{"ok", func(*Settings) {}, 0, "", ""},
		{"ok http loopback", func(s *Settings) { s.StudioURL = "http://127.0.0.1:8787" }, 0, "", ""},
		{"ok budget equals vram", func(s *Settings) { s.VRAMBudgetGB = 8 }, 8, "", ""},
		{"empty url", func(s *Settings) { s.StudioURL = " " }, 0, FieldStudioURL, "empty"},
		{"ftp url", func(s *Settings) { s.StudioURL = "ftp://studio.minis.gg" }, 0, FieldStudioURL, "https://"},
		{"ws url", func(s *Settings) { s.StudioURL = "wss://studio.minis.gg" }, 0, FieldStudioURL, "https://"},
		{"no host", func(s *Settings) { s.StudioURL = "https://" }, 0, FieldStudioURL, "no host"},
		{"bare word", func(s *Settings) { s.StudioURL = "studio" }, 0, FieldStudioURL, "https://"},
		{"zero budget", func(s *Settings) { s.VRAMBudgetGB = 0 }, 0, FieldVRAMBudgetGB, "more than 0"},
		{"negative budget", func(s *Settings) { s.VRAMBudgetGB = -1 }, 24, FieldVRAMBudgetGB, "more than 0"},
		{"budget above vram", func(s *Settings) { s.VRAMBudgetGB = 16 }, 8, FieldVRAMBudgetGB, "8.0 GB"},
		{"budget unknown vram", func(s *Settings) { s.VRAMBudgetGB = 80 }, 0, "", ""},
		{"empty models dir", func(s *Settings) { s.ModelsDir = "" }, 0, FieldModelsDir, "empty"},
		{"relative models dir", func(s *Settings) { s.ModelsDir = "models" }, 0, FieldModelsDir, "full path"},
		{"models dir is a file", func(s *Settings) { s.ModelsDir = fileNotDir }, 0, FieldModelsDir, "is a file"},
		{"models dir under a file", func(s *Settings) { s.ModelsDir = filepath.Join(fileNotDir, "sub") }, 0, FieldModelsDir, "cannot create"},
		{"negative threads", func(s *Settings) { s.Threads = -1 }, 0, FieldThreads, "between 0"},
		{"too many threads", func(s *Settings) { s.Threads = runtime.NumCPU() + 1 }, 0, FieldThreads, "between 0"},
		{"disk reserve NaN", func(s *Settings) { s.DiskReserveGB = math.NaN() }, 0, FieldDiskReserve, "number of GB"},
		{"disk reserve huge", func(s *Settings) { s.DiskReserveGB = 1e9 }, 0, FieldDiskReserve, "number of GB"},
		{"models disk budget negative", func(s *Settings) { s.ModelsDiskBudgetGB = -1 }, 0, FieldModelsDiskBudget, "between 0 (no budget)"},
		{"models disk budget NaN", func(s *Settings) { s.ModelsDiskBudgetGB = math.NaN() }, 0, FieldModelsDiskBudget, "number of GB"},
		{"models disk budget infinite", func(s *Settings) { s.ModelsDiskBudgetGB = math.Inf(1) }, 0, FieldModelsDiskBudget, "number of GB"},
		{"models disk budget huge", func(s *Settings) { s.ModelsDiskBudgetGB = 1e9 }, 0, FieldModelsDiskBudget, "100000"},
		{"all threads", func(s *Settings) { s.Threads = runtime.NumCPU() }, 0, "", ""},
		{"llama dir missing", func(s *Settings) { s.LlamaLibDir = "/nonexistent/llama" }, 0, FieldLlamaLibDir, "not a folder"},
		{"sd lib is dir", func(s *Settings) { s.SDLibPath = os.TempDir() }, 0, FieldSDLibPath, "not a file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := validSettings(t)
			tc.edit(&s)
			err := s.Validate(tc.vram)
			if tc.field == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("Validate = %v, want *FieldError on %s", err, tc.field)
			}
			if fe.Field != tc.field || !strings.Contains(fe.Reason, tc.inReason) {
				t.Fatalf("Validate = {%s, %q}, want field %s with %q", fe.Field, fe.Reason, tc.field, tc.inReason)
			}
		})
	}
}

func TestValidateCreatesModelsDir(t *testing.T) {
	s := validSettings(t)
	s.ModelsDir = filepath.Join(t.TempDir(), "a", "b")
	if err := s.Validate(0); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(s.ModelsDir)
	if err != nil {
		t.Fatalf("models dir not created: %v", err)
	}
	if len(entries) != 0 {
		t.Fatalf("write test left files behind: %v", entries)
	}
}

func TestValidateUnwritableModelsDir(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("needs a non-root user: root can write into a read-only folder")
	}
	dir := filepath.Join(t.TempDir(), "ro")
	if err := os.Mkdir(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	s := validSettings(t)
	s.ModelsDir = dir
	var fe *FieldError
	if err := s.Validate(0); !errors.As(err, &fe) || fe.Field != FieldModelsDir || !strings.Contains(fe.Reason, "cannot write") {
		t.Fatalf("Validate = %v, want a models_dir 'cannot write' error", err)
	}
}

func TestExpandHome(t *testing.T) {
	home, err := os.UserHomeDir()
	if err != nil {
		t.Skip("needs a home folder")
	}
	if got := ExpandHome("~/models"); got != filepath.Join(home, "models") {
		t.Fatalf("ExpandHome = %q", got)
	}
	if got := ExpandHome("/abs/~x"); got != "/abs/~x" {
		t.Fatalf("ExpandHome changed an absolute path: %q", got)
	}
}

func TestDefaultDir(t *testing.T) {
	d, err := DefaultDir()
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(d) != "studio-worker" || !filepath.IsAbs(d) {
		t.Fatalf("DefaultDir = %q", d)
	}
}

func TestStoreMissingFileGivesDefaultsAndInstallID(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cfg")
	st := NewStore(dir)
	s, err := st.Load()
	if err != nil {
		t.Fatal(err)
	}
	id, perr := uuid.Parse(s.InstallID)
	if perr != nil || id.Version() != 4 || s.InstallID != strings.ToLower(s.InstallID) {
		t.Fatalf("install id %q is not a lowercase uuid v4", s.InstallID)
	}
	want := Default()
	want.InstallID = s.InstallID
	if s != want {
		t.Fatalf("Load = %+v, want %+v", s, want)
	}
	again, err := st.Load()
	if err != nil || again.InstallID != s.InstallID {
		t.Fatalf("second Load gave install id %q (err %v), want the same %q", again.InstallID, err, s.InstallID)
	}
	fi, err := os.Stat(st.Path())
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("settings file mode %v (err %v), want 0600", fi.Mode().Perm(), err)
	}
}

func TestStoreRoundTrip(t *testing.T) {
	st := NewStore(t.TempDir())
	in := Settings{
		StudioURL: "http://127.0.0.1:9000/", VRAMBudgetGB: 7.5, ModelsDir: "/tmp/m", Threads: 1,
		StartAtLogin: true, StartMinimised: true, LlamaLibDir: "/opt/llama", SDLibPath: "/opt/sd.so",
		InstallID: "2f1c8e1e-9a55-4c4b-8f39-2f6b0b6d6c01",
	}
	if err := st.Save(in); err != nil {
		t.Fatal(err)
	}
	out, err := st.Load()
	if err != nil {
		t.Fatal(err)
	}
	if out != in {
		t.Fatalf("round trip: got %+v, want %+v", out, in)
	}
	data, _ := os.ReadFile(st.Path())
	for _, key := range []string{`studio_url = "http://127.0.0.1:9000/"`, "vram_budget_gb = 7.5", "start_at_login = true", "install_id = "} {
		if !strings.Contains(string(data), key) {
			t.Errorf("file lacks %q:\n%s", key, data)
		}
	}
	leftovers, _ := filepath.Glob(filepath.Join(st.Dir(), ".*tmp*"))
	if len(leftovers) != 0 {
		t.Fatalf("temporary files left behind: %v", leftovers)
	}
}

func TestStorePartialFileKeepsDefaults(t *testing.T) {
	st := NewStore(t.TempDir())
	if err := os.WriteFile(st.Path(), []byte("threads = 1\nunknown_key = 3\ninstall_id = \"x\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := st.Load()
	if err != nil {
		t.Fatal(err)
	}
	if s.Threads != 1 || s.StudioURL != DefaultStudioURL || s.VRAMBudgetGB != DefaultVRAMBudgetGB || s.InstallID != "x" {
		t.Fatalf("Load = %+v", s)
	}
}

func TestStoreCorruptFileIsSetAside(t *testing.T) {
	for name, body := range map[string]string{
		"garbage":    "this is {not toml at all",
		"wrong type": "vram_budget_gb = \"lots\"\n",
	} {
		t.Run(name, func(t *testing.T) {
			st := NewStore(t.TempDir())
			if err := os.WriteFile(st.Path(), []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := st.Load()
			var ce *CorruptError
			if !errors.As(err, &ce) {
				t.Fatalf("Load error = %v, want *CorruptError", err)
			}
			if s.StudioURL != DefaultStudioURL || s.InstallID == "" {
				t.Fatalf("Load returned unusable settings %+v", s)
			}
			kept, rerr := os.ReadFile(ce.MovedTo)
			if rerr != nil || string(kept) != body {
				t.Fatalf("corrupt file not kept at %q: %v", ce.MovedTo, rerr)
			}
			if !strings.Contains(ce.Error(), ce.MovedTo) || !strings.Contains(ce.MovedTo, "settings.toml.corrupt-") {
				t.Fatalf("message %q does not say where the file went", ce.Error())
			}
			// The fresh file is readable and keeps the new install id.
			again, err := st.Load()
			if err != nil || again.InstallID != s.InstallID {
				t.Fatalf("reload after corrupt: %+v, %v", again, err)
			}
		})
	}
}

func TestStoreConcurrentSaves(t *testing.T) {
	st := NewStore(t.TempDir())
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := Default()
			s.Threads = i % 2
			s.InstallID = fmt.Sprint("id-", i)
			if err := st.Save(s); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if _, err := st.Load(); err != nil {
		t.Fatal(err)
	}
}

func TestCredentialsNeverPrintSecrets(t *testing.T) {
	c := Credentials{WorkerID: "w-1", AuthToken: "tok-SECRET", RequestID: "rr-1", RegistrationSecret: "sec-SECRET"}
	var sb strings.Builder
	logger := slog.New(slog.NewTextHandler(&sb, nil))
	logger.Info("creds", "c", c)
	for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c), fmt.Sprintf("%v", &c), sb.String()} {
		if strings.Contains(s, "SECRET") {
			t.Fatalf("secret printed: %s", s)
		}
		if !strings.Contains(s, "w-1") {
			t.Fatalf("worker id missing from %s", s)
		}
	}
}

func testCredentialStore(t *testing.T, cs CredentialStore) {
	t.Helper()
	if c, err := cs.Load(); err != nil || c != (Credentials{}) {
		t.Fatalf("empty store Load = %v, %v", c, err)
	}
	in := Credentials{WorkerID: "w", AuthToken: "t", RequestID: "r", RegistrationSecret: "s"}
	if err := cs.Save(in); err != nil {
		t.Fatal(err)
	}
	if c, err := cs.Load(); err != nil || c != in {
		t.Fatalf("Load = %v, %v; want %v", c, err, in)
	}
	if err := cs.Clear(); err != nil {
		t.Fatal(err)
	}
	if c, err := cs.Load(); err != nil || c != (Credentials{}) {
		t.Fatalf("after Clear Load = %v, %v", c, err)
	}
	if err := cs.Clear(); err != nil {
		t.Fatalf("second Clear: %v", err)
	}
}

func TestFileCredentialStore(t *testing.T) {
	dir := t.TempDir()
	fs := NewFileCredentialStore(dir)
	testCredentialStore(t, fs)
	if err := fs.Save(Credentials{WorkerID: "w", AuthToken: "t"}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "credentials.json"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("credentials file mode %v, err %v; want 0600", fi.Mode().Perm(), err)
	}
	if err := os.WriteFile(fs.Path(), []byte("{bad"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := fs.Load(); err == nil || !strings.Contains(err.Error(), "unreadable") {
		t.Fatalf("corrupt credentials: %v", err)
	}
}

func resetProbe() { probeOnce = sync.Once{}; probeOK = false }

func TestKeyringStoreWithMock(t *testing.T) {
	keyring.MockInit()
	resetProbe()
	t.Cleanup(resetProbe)
	t.Setenv("DBUS_SESSION_BUS_ADDRESS", "unix:path=/run/the-mock-needs-no-bus")
	dir := t.TempDir()
	cs := NewCredentialStore(dir, nil)
	if _, ok := cs.(*keyringStore); !ok {
		t.Fatalf("with a working keychain got %T", cs)
	}
	testCredentialStore(t, cs)

	// Credentials written to the file before a keychain existed are still
	// found, and move into the keychain on the next save.
	fileStore := NewFileCredentialStore(dir)
	old := Credentials{WorkerID: "w-old", AuthToken: "t-old"}
	if err := fileStore.Save(old); err != nil {
		t.Fatal(err)
	}
	if c, err := cs.Load(); err != nil || c != old {
		t.Fatalf("Load = %v, %v; want the file's %v", c, err, old)
	}
	if err := cs.Save(old); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(fileStore.Path()); !os.IsNotExist(err) {
		t.Fatalf("file copy kept after moving into the keychain: %v", err)
	}
	raw, err := keyring.Get(KeyringService, keyringUser(dir))
	if err != nil || !strings.Contains(raw, "w-old") {
		t.Fatalf("keychain entry %q, %v", raw, err)
	}
}

func TestBrokenKeyringFallsBackToFile(t *testing.T) {
	keyring.MockInitWithError(errors.New("no secret service on this bus"))
	resetProbe()
	t.Cleanup(resetProbe)
	t.Setenv("DBUS_SESSION_BUS_ADDRESS", "unix:path=/run/the-mock-needs-no-bus")
	cs := NewCredentialStore(t.TempDir(), nil)
	if _, ok := cs.(*FileCredentialStore); !ok {
		t.Fatalf("with a broken keychain got %T, want the file store", cs)
	}
	testCredentialStore(t, cs)
}

// One check serves the models folder (worded as a field error above) and
// the config and dev studio folders (worded by the caller, who names the
// folder).
func TestUsableDir(t *testing.T) {
	base := t.TempDir()
	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		dir     string
		problem DirProblem
		text    string
	}{
		{file, DirIsFile, "it is a file, not a folder"},
		{filepath.Join(file, "sub"), DirCannotCreate, "not a directory"},
	}
	for _, tc := range cases {
		err := UsableDir(tc.dir, 0o700)
		var de *DirError
		if !errors.As(err, &de) || de.Problem != tc.problem || err.Error() != tc.text {
			t.Errorf("UsableDir(%s) = %v, want problem %d %q", tc.dir, err, tc.problem, tc.text)
		}
		if strings.Contains(err.Error(), base) {
			t.Errorf("the text %q repeats the path the caller names", err)
		}
	}
	made := filepath.Join(base, "a", "b")
	if err := UsableDir(made, 0o700); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(made); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("folder not made with 0700: %v %v", fi, err)
	}
	if entries, _ := os.ReadDir(made); len(entries) != 0 {
		t.Errorf("the write test left %v behind", entries)
	}
	if os.Geteuid() != 0 {
		ro := filepath.Join(base, "ro")
		if err := os.Mkdir(ro, 0o500); err != nil {
			t.Fatal(err)
		}
		var de *DirError
		if err := UsableDir(ro, 0o700); !errors.As(err, &de) || de.Problem != DirCannotWrite || !strings.HasPrefix(err.Error(), "cannot write there: ") {
			t.Errorf("read-only folder: %v", err)
		}
	}
}

// The models folder budget: 0 is none, and a value Validate refuses is
// none too (a bad file must never delete models).
func TestModelsDiskBudgetBytes(t *testing.T) {
	for gb, want := range map[float64]uint64{0: 0, -1: 0, math.NaN(): 0, 1e9: 0, 0.5: 1 << 29, 20: 20 << 30} {
		if got := (Settings{ModelsDiskBudgetGB: gb}).ModelsDiskBudgetBytes(); got != want {
			t.Errorf("ModelsDiskBudgetGB %g: %d bytes, want %d", gb, got, want)
		}
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, FileName), []byte("models_disk_budget_gb = 6.5\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := NewStore(dir).Load()
	if err != nil || s.ModelsDiskBudgetGB != 6.5 {
		t.Fatalf("loaded %v, %v", s.ModelsDiskBudgetGB, err)
	}
}

func TestDiskReserveBytes(t *testing.T) {
	for gb, want := range map[float64]uint64{0: 2 << 30, -1: 0, 0.5: 1 << 29, 10: 10 << 30} {
		if got := (Settings{DiskReserveGB: gb}).DiskReserveBytes(); got != want {
			t.Errorf("DiskReserveGB %g: %d bytes, want %d", gb, got, want)
		}
	}
}

// Updates are on by default, every DefaultUpdateCheckHours; a missing key
// in an older file keeps them on; bad values are refused in words.
func TestUpdateSettings(t *testing.T) {
	d := Default()
	if !d.AutoUpdate || d.UpdateInterval() != DefaultUpdateCheckHours*time.Hour {
		t.Fatalf("defaults: auto %v every %v", d.AutoUpdate, d.UpdateInterval())
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, FileName), []byte("threads = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := NewStore(dir).Load()
	if err != nil || !got.AutoUpdate {
		t.Fatalf("a file without auto_update: %v, %v", got.AutoUpdate, err)
	}
	d.UpdateCheckHours = 2
	if d.UpdateInterval() != 2*time.Hour {
		t.Errorf("interval %v", d.UpdateInterval())
	}
	for _, bad := range []Settings{{UpdateCheckHours: -1}, {UpdateCheckHours: 10000}, {UpdateFeedURL: "ftp://x/feed.json"}, {UpdateFeedURL: "feed.json"}} {
		s := Default()
		s.ModelsDir = t.TempDir()
		s.UpdateCheckHours, s.UpdateFeedURL = bad.UpdateCheckHours, bad.UpdateFeedURL
		var fe *FieldError
		if err := s.Validate(0); !errors.As(err, &fe) || (fe.Field != FieldUpdateHours && fe.Field != FieldUpdateFeed) {
			t.Errorf("%+v: %v", bad, err)
		}
	}
}
