// Package update keeps an installed Studio Worker current (issue #14 item
// 3): it reads the signed release feed (package release), picks the newest
// release for this OS, architecture and kind of install, downloads it with
// its size and sha256 checked, and applies it the way this copy was
// installed: the per-user .tar.xz install is replaced beside itself and
// the program restarts; the Windows installer runs silently and starts the
// app again; a .deb or .rpm (owned by the system's package manager) is
// downloaded and the donor is told the one command that installs it; a
// build from source is never replaced. A version never goes back unless
// the donor names it (`studio-worker update --to 0.1.0`).
package update

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// Kind is how this copy of the program was installed, which decides how an
// update is applied.
type Kind string

const (
	// KindTarball is the per-user install of the .tar.xz by its install.sh:
	// $XDG_DATA_HOME/studio-worker/app (~/.local/share/studio-worker/app)
	// holding studio-worker and lib/, linked from ~/.local/bin. Replaced
	// as a whole: it is the program's own folder, so the runtime packs and
	// other data the app keeps in $XDG_DATA_HOME/studio-worker stay put.
	KindTarball Kind = "tar.xz"
	// KindSystemTarball is `sudo ./install.sh --system` (/opt/studio-worker,
	// owned by root): the donor is told how to install the new one.
	KindSystemTarball Kind = "tar.xz (system)"
	// KindDeb and KindRPM: the system's package manager owns the program.
	// The new package is downloaded and the donor runs one command.
	KindDeb Kind = "deb"
	KindRPM Kind = "rpm"
	// KindWindows is the NSIS installer's per-user install (uninstall.exe
	// beside the program). The new installer runs silently.
	KindWindows Kind = "nsis"
	// KindMac is the app bundle from the .dmg: the donor is told.
	KindMac Kind = "dmg"
	// KindSource is anything else (`make build`, `go run`, an unpacked
	// tarball that was never installed): a newer version is reported,
	// nothing is replaced.
	KindSource Kind = "source"
)

// Format is the release format (release.Release.Format) an install of
// this kind is updated from; "" for KindSource.
func (k Kind) Format() string {
	switch k {
	case KindTarball, KindSystemTarball:
		return "tar.xz"
	case KindDeb, KindRPM, KindWindows, KindMac:
		return string(k)
	}
	return ""
}

// Install is where the running program lives and how it came there.
type Install struct {
	Kind Kind
	// Exe is the program's real path (links resolved).
	Exe string
	// Dir is the folder the program is in; for KindTarball the folder an
	// update replaces as a whole (the program and its lib/).
	Dir string
	// Why says in words how the kind was recognised (for the log).
	Why string
}

// Probe is what Detect reads of the machine; tests fill it in.
type Probe struct {
	GOOS string
	// DataHome is install.sh's per-user data folder: $XDG_DATA_HOME, or
	// ~/.local/share.
	DataHome string
	// DpkgLists are dpkg's file lists of the studio-worker package, as
	// glob patterns (/var/lib/dpkg/info/studio-worker.list, or
	// studio-worker:amd64.list where dpkg qualifies the name).
	DpkgLists []string
	// RPMOwns says whether rpm's database owns a path; nil: no rpm.
	RPMOwns func(path string) bool
	// Writable says whether this user may replace a folder.
	Writable func(dir string) bool
}

// SystemProbe reads this machine.
func SystemProbe() Probe {
	p := Probe{
		GOOS:      runtime.GOOS,
		DpkgLists: []string{"/var/lib/dpkg/info/studio-worker.list", "/var/lib/dpkg/info/studio-worker:*.list"},
		Writable:  writable,
	}
	p.DataHome = os.Getenv("XDG_DATA_HOME")
	if p.DataHome == "" || !filepath.IsAbs(p.DataHome) {
		if home, err := os.UserHomeDir(); err == nil {
			p.DataHome = filepath.Join(home, ".local", "share")
		}
	}
	p.RPMOwns = rpmOwns
	return p
}

// Detect says how the program at exe (os.Executable) was installed. It
// reads where the program really lives: the package manager's records
// first, then the layouts the project's installers make.
func Detect(exe string, p Probe) Install {
	if real, err := filepath.EvalSymlinks(exe); err == nil {
		exe = real
	}
	exe = filepath.Clean(exe)
	dir := filepath.Dir(exe)
	in := Install{Kind: KindSource, Exe: exe, Dir: dir}
	switch p.GOOS {
	case "windows":
		if fileExists(filepath.Join(dir, "uninstall.exe")) {
			in.Kind, in.Why = KindWindows, "installed by the Windows installer (uninstall.exe beside the program)"
			return in
		}
	case "darwin":
		if strings.HasSuffix(dir, ".app/Contents/MacOS") {
			in.Kind, in.Why = KindMac, "an app bundle"
			in.Dir = strings.TrimSuffix(dir, "/Contents/MacOS")
			return in
		}
	case "linux":
		if dpkgOwns(p.DpkgLists, exe) {
			in.Kind, in.Why = KindDeb, "installed by the .deb package (dpkg owns "+exe+")"
			return in
		}
		if p.RPMOwns != nil && p.RPMOwns(exe) {
			in.Kind, in.Why = KindRPM, "installed by the .rpm package (rpm owns "+exe+")"
			return in
		}
		if filepath.Base(exe) == "studio-worker" && dirExists(filepath.Join(dir, "lib")) {
			if p.DataHome != "" && dir == filepath.Join(filepath.Clean(p.DataHome), "studio-worker", "app") {
				if p.Writable != nil && p.Writable(filepath.Dir(dir)) && p.Writable(dir) {
					in.Kind, in.Why = KindTarball, "installed for this user by install.sh in "+dir
					return in
				}
			}
			if dir == "/opt/studio-worker" {
				in.Kind, in.Why = KindSystemTarball, "installed for everyone by install.sh --system in "+dir
				return in
			}
		}
	}
	in.Why = "a program run from " + dir + " (not an installed copy)"
	return in
}

// dpkgOwns says whether one of the dpkg file lists matching patterns
// names path.
func dpkgOwns(patterns []string, path string) bool {
	for _, pat := range patterns {
		lists, _ := filepath.Glob(pat)
		for _, l := range lists {
			if listsPath(l, path) {
				return true
			}
		}
	}
	return false
}

// listsPath says whether a dpkg file list names path.
func listsPath(list, path string) bool {
	f, err := os.Open(list)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == path {
			return true
		}
	}
	return false
}

func fileExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

func dirExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// writable proves a folder writable by making and removing a file in it.
func writable(dir string) bool {
	f, err := os.CreateTemp(dir, ".studio-worker-write-*")
	if err != nil {
		return false
	}
	name := f.Name()
	f.Close()
	return os.Remove(name) == nil
}

// rpmOwns asks rpm whether its database owns path; false without rpm.
func rpmOwns(path string) bool {
	rpm, err := exec.LookPath("rpm")
	if err != nil {
		return false
	}
	return exec.Command(rpm, "-qf", "--quiet", path).Run() == nil
}
