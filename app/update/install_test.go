package update

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A fake machine for Detect: a folder tree under a temp root.
func mkProgram(t *testing.T, dir string, lib bool) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if lib {
		if err := os.MkdirAll(filepath.Join(dir, "lib"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	exe := filepath.Join(dir, "studio-worker")
	if err := os.WriteFile(exe, []byte("program"), 0o755); err != nil {
		t.Fatal(err)
	}
	return exe
}

func TestDetectInstallKinds(t *testing.T) {
	root := t.TempDir()
	data := filepath.Join(root, "home", ".local", "share")
	user := mkProgram(t, filepath.Join(data, "studio-worker", "app"), true)
	// ~/.local/bin/studio-worker -> the program, as install.sh links it.
	bin := filepath.Join(root, "home", ".local", "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(bin, "studio-worker")
	if err := os.Symlink(user, link); err != nil {
		t.Fatal(err)
	}
	built := mkProgram(t, filepath.Join(root, "src", "bin"), false)
	unpacked := mkProgram(t, filepath.Join(root, "Downloads", "studio-worker-0.2.0"), true)
	debExe := mkProgram(t, filepath.Join(root, "opt", "studio-worker"), true)
	list := filepath.Join(root, "studio-worker:amd64.list")
	if err := os.WriteFile(list, []byte("/.\n/opt\n"+debExe+"\n/usr/bin/studio-worker\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	winDir := filepath.Join(root, "Programs", "StudioWorker")
	winExe := mkProgram(t, winDir, true)
	if err := os.WriteFile(filepath.Join(winDir, "uninstall.exe"), []byte("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	yes := func(string) bool { return true }
	no := func(string) bool { return false }
	linux := Probe{GOOS: "linux", DataHome: data, DpkgLists: []string{filepath.Join(root, "none.list")}, Writable: yes}
	for _, c := range []struct {
		name  string
		exe   string
		probe func(Probe) Probe
		want  Kind
		dir   string
	}{
		{"per-user tarball through the ~/.local/bin link", link, nil, KindTarball, filepath.Dir(user)},
		{"per-user tarball folder not writable", user, func(p Probe) Probe { p.Writable = no; return p }, KindSource, ""},
		{"make build", built, nil, KindSource, ""},
		{"an unpacked tarball never installed", unpacked, nil, KindSource, ""},
		{"dpkg owns the program", debExe, func(p Probe) Probe {
			p.DpkgLists = []string{filepath.Join(root, "studio-worker.list"), filepath.Join(root, "studio-worker:*.list")}
			return p
		}, KindDeb, ""},
		{"rpm owns the program", debExe, func(p Probe) Probe { p.RPMOwns = func(string) bool { return true }; return p }, KindRPM, ""},
		{"the Windows installer's folder", winExe, func(p Probe) Probe { p.GOOS = "windows"; return p }, KindWindows, ""},
		{"uninstall.exe means nothing on Linux", winExe, nil, KindSource, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := linux
			if c.probe != nil {
				p = c.probe(p)
			}
			got := Detect(c.exe, p)
			if got.Kind != c.want || got.Why == "" {
				t.Fatalf("Detect(%s) = %+v, want %s", c.exe, got, c.want)
			}
			if c.dir != "" && got.Dir != c.dir {
				t.Errorf("Dir = %s, want %s", got.Dir, c.dir)
			}
		})
	}
	// /opt/studio-worker without a package: install.sh --system.
	if got := Detect("/opt/studio-worker/studio-worker", linux); got.Kind != KindSource && got.Kind != KindSystemTarball {
		t.Errorf("/opt: %+v", got)
	}
	for k, f := range map[Kind]string{KindTarball: "tar.xz", KindSystemTarball: "tar.xz", KindDeb: "deb", KindRPM: "rpm", KindWindows: "nsis", KindMac: "dmg", KindSource: ""} {
		if k.Format() != f {
			t.Errorf("%s.Format() = %q, want %q", k, k.Format(), f)
		}
	}
}

// The Windows update script waits for the app, runs the installer
// silently with the runtime in use, and starts the app with its arguments.
func TestInstallerScript(t *testing.T) {
	s := InstallerScript(`C:\Users\Ann Lee\AppData\Local\studio-worker\updates\StudioWorker-Setup-0.3.0.exe`,
		`C:\Users\Ann Lee\AppData\Local\Programs\StudioWorker\studio-worker.exe`, []string{"--minimised", "--page", "50%"}, 4242, "vulkan", "0.3.0")
	for _, want := range []string{
		"@echo off\r\n",
		`tasklist /FI "PID eq 4242" /NH 2>NUL | find " 4242 " >NUL` + "\r\n",
		`start "" /wait "C:\Users\Ann Lee\AppData\Local\studio-worker\updates\StudioWorker-Setup-0.3.0.exe" /S /RUNTIME=vulkan` + "\r\n",
		`start "" "C:\Users\Ann Lee\AppData\Local\Programs\StudioWorker\studio-worker.exe" --minimised --page 50%%` + "\r\n",
		`del "%~f0"`,
	} {
		if !strings.Contains(s, want) {
			t.Errorf("script lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(strings.ReplaceAll(s, "\r\n", ""), "\n") {
		t.Error("every line must end in CRLF")
	}
	if s := InstallerScript(`C:\x\setup.exe`, `C:\x\studio-worker.exe`, nil, 1, "", "0.3.0"); !strings.Contains(s, `start "" /wait C:\x\setup.exe /S`+"\r\n") {
		t.Errorf("CPU install passes no /RUNTIME:\n%s", s)
	}
	dir := t.TempDir()
	if windowsRuntime(dir) != "" {
		t.Error("no lib: the default runtime")
	}
	mkProgram(t, dir, true)
	if err := os.WriteFile(filepath.Join(dir, "lib", "ggml-cuda.dll"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if windowsRuntime(dir) != "cuda" {
		t.Error("ggml-cuda.dll: cuda")
	}
}

// swapIn keeps the old folder as the backup; swapBack restores it.
func TestSwapAndRollBack(t *testing.T) {
	parent := t.TempDir()
	app := filepath.Join(parent, "studio-worker")
	tree := filepath.Join(parent, ".studio-worker-update-0.3.0", "studio-worker-0.3.0")
	mkProgram(t, app, true)
	mkProgram(t, tree, true)
	if err := os.WriteFile(filepath.Join(tree, "studio-worker"), []byte("new"), 0o755); err != nil {
		t.Fatal(err)
	}
	backup := filepath.Join(parent, backupName)
	if err := swapIn(app, tree, backup); err != nil {
		t.Fatal(err)
	}
	read := func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if read(filepath.Join(app, "studio-worker")) != "new" || read(filepath.Join(backup, "studio-worker")) != "program" {
		t.Fatal("after swapIn the new program must be in place and the old one kept")
	}
	if _, err := os.Stat(tree); !os.IsNotExist(err) {
		t.Errorf("the unpacked folder is still there: %v", err)
	}
	if err := swapBack(app, backup); err != nil {
		t.Fatal(err)
	}
	if read(filepath.Join(app, "studio-worker")) != "program" {
		t.Fatal("after swapBack the old program must be in place")
	}
	if _, err := os.Stat(backup); !os.IsNotExist(err) {
		t.Errorf("the failed version is still there: %v", err)
	}
}

func readFile(p string) (string, error) {
	b, err := os.ReadFile(p)
	return string(b), err
}
