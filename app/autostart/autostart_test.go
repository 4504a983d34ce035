package autostart

import (
	"encoding/xml"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestDesktopEntryQuotesExec(t *testing.T) {
	cases := map[string]string{
		"/opt/studio-worker/studio-worker": `Exec="/opt/studio-worker/studio-worker"`,
		"/home/ann/My Apps/studio-worker":  `Exec="/home/ann/My Apps/studio-worker"`,
		`/tmp/a$b"c` + "`d":                `Exec="/tmp/a\\$b\\"c\\` + "`d\"",
		"/tmp/100%/sw":                     `Exec="/tmp/100%%/sw"`,
	}
	for exe, want := range cases {
		got := DesktopEntry(exe)
		if !strings.Contains(got, "\n"+want+"\n") {
			t.Errorf("exe %q: entry\n%s\nhas no line %s", exe, got, want)
		}
		for _, line := range []string{"[Desktop Entry]", "Type=Application", "Name=Studio Worker", "X-GNOME-Autostart-enabled=true"} {
			if !strings.Contains(got, line+"\n") {
				t.Errorf("entry lacks %q", line)
			}
		}
	}
}

func TestLaunchAgentIsValidPlist(t *testing.T) {
	exe := "/Applications/Studio Worker.app/Contents/MacOS/studio-worker & <co>"
	doc := LaunchAgent(exe)
	var parsed struct {
		Dict struct {
			Keys    []string `xml:"key"`
			Strings []string `xml:"string"`
			Array   struct {
				Strings []string `xml:"string"`
			} `xml:"array"`
		} `xml:"dict"`
	}
	if err := xml.Unmarshal([]byte(doc), &parsed); err != nil {
		t.Fatalf("plist is not XML: %v\n%s", err, doc)
	}
	if got := parsed.Dict.Array.Strings; len(got) != 1 || got[0] != exe {
		t.Errorf("ProgramArguments = %q, want [%q]", got, exe)
	}
	if len(parsed.Dict.Strings) == 0 || parsed.Dict.Strings[0] != ID {
		t.Errorf("Label = %q, want %q", parsed.Dict.Strings, ID)
	}
	if !strings.Contains(doc, "<key>RunAtLoad</key>\n\t<true/>") {
		t.Error("RunAtLoad is not true")
	}
}

func TestApplyWritesRefreshesAndRemoves(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("needs a non-Windows system: this test checks the file-based entries")
	}
	home := t.TempDir()
	cfg := Config{Exe: "/old/place/studio-worker", Home: home, ConfigHome: filepath.Join(home, "cfg")}
	path, err := Path(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := Apply(cfg, true); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "/old/place/studio-worker") {
		t.Fatalf("entry does not name the executable:\n%s", b)
	}
	cfg.Exe = "/new/place/studio-worker"
	if err := Apply(cfg, true); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(path)
	if strings.Contains(string(b), "/old/place") || !strings.Contains(string(b), "/new/place/studio-worker") {
		t.Fatalf("entry was not refreshed to the new path:\n%s", b)
	}
	if err := Apply(cfg, false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("entry still there after disabling: %v", err)
	}
	// Disabling twice is not an error.
	if err := Apply(cfg, false); err != nil {
		t.Fatal(err)
	}
}

func TestApplyReportsUnwritableFolder(t *testing.T) {
	if runtime.GOOS == "windows" || os.Getuid() == 0 {
		t.Skip("needs a non-root, non-Windows user: root can write anywhere")
	}
	home := t.TempDir()
	ro := filepath.Join(home, "ro")
	if err := os.Mkdir(ro, 0o500); err != nil {
		t.Fatal(err)
	}
	err := Apply(Config{Exe: "/x", Home: ro, ConfigHome: ro}, true)
	if err == nil || !strings.Contains(err.Error(), "start at login") {
		t.Fatalf("got %v, want an error about starting at login", err)
	}
}

func TestEnabledOnlyForAnEntryThatStartsThisProgram(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("needs a non-Windows system: this test checks the file-based entries")
	}
	home := t.TempDir()
	cfg := Config{Exe: "/opt/Studio Worker/studio-worker", Home: home, ConfigHome: filepath.Join(home, "cfg")}
	if on, err := Enabled(cfg); err != nil || on {
		t.Fatalf("no entry: Enabled = %t, %v", on, err)
	}
	if err := Apply(cfg, true); err != nil {
		t.Fatal(err)
	}
	if on, err := Enabled(cfg); err != nil || !on {
		t.Fatalf("after Apply(true): Enabled = %t, %v", on, err)
	}
	other := cfg
	other.Exe = "/home/dev/src/studio-worker/bin/studio-worker"
	if on, err := Enabled(other); err != nil || on {
		t.Fatalf("an entry for another copy must not count: Enabled = %t, %v", on, err)
	}
	if runtime.GOOS != "darwin" {
		// A desktop that switched the entry off.
		path, _ := Path(cfg)
		if err := os.WriteFile(path, []byte(DesktopEntry(cfg.Exe)+"Hidden=true\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if on, _ := Enabled(cfg); on {
			t.Error("a Hidden=true entry does not start the program")
		}
	}
	if err := Apply(cfg, false); err != nil {
		t.Fatal(err)
	}
	if on, err := Enabled(cfg); err != nil || on {
		t.Fatalf("after Apply(false): Enabled = %t, %v", on, err)
	}
}

func TestRunValueProgram(t *testing.T) {
	cases := map[string]string{
		`"C:\Users\Ann\AppData\Local\Programs\StudioWorker\studio-worker.exe"`: `C:\Users\Ann\AppData\Local\Programs\StudioWorker\studio-worker.exe`,
		`"C:\Program Files\SW\studio-worker.exe" --minimised`:                  `C:\Program Files\SW\studio-worker.exe`,
		`  C:\SW\studio-worker.exe `:                                           `C:\SW\studio-worker.exe`,
		`"C:\unterminated\studio-worker.exe`:                                   `C:\unterminated\studio-worker.exe`,
	}
	for in, want := range cases {
		if got := runValueProgram(in); got != want {
			t.Errorf("runValueProgram(%q) = %q, want %q", in, got, want)
		}
	}
}
