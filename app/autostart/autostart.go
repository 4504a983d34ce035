// Package autostart registers the desktop app to start when the user logs
// in: an XDG autostart entry on Linux and the BSDs, a LaunchAgent on macOS,
// and the HKCU Run key on Windows. Each call to Apply rewrites the entry
// with the current executable's path, so moving or updating the app keeps
// the login start pointing at the binary that is really there.
package autostart

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Name is the entry's display name; ID names its files.
const (
	Name = "Studio Worker"
	ID   = "gg.minis.studioworker"
)

// Config says where the entries live; the zero value means the real
// places for the current user.
type Config struct {
	// Exe is the program to start; empty means os.Executable().
	Exe string
	// Home and ConfigHome override the user's folders (tests).
	Home, ConfigHome string
}

func (c Config) exe() (string, error) {
	if c.Exe != "" {
		return c.Exe, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("cannot find this program's path: %w", err)
	}
	if real, err := filepath.EvalSymlinks(exe); err == nil {
		exe = real
	}
	return exe, nil
}

func (c Config) home() (string, error) {
	if c.Home != "" {
		return c.Home, nil
	}
	return os.UserHomeDir()
}

// Apply makes the login start match enabled: it writes (or refreshes) the
// entry when enabled and removes it when not.
func Apply(c Config, enabled bool) error {
	if err := apply(c, enabled); err != nil {
		if enabled {
			return fmt.Errorf("could not set Studio Worker to start at login: %w", err)
		}
		return fmt.Errorf("could not stop Studio Worker starting at login: %w", err)
	}
	return nil
}

// Enabled reports whether a login entry exists that starts this program
// (c's executable). An entry for another program (a copy elsewhere, a
// development build) does not count: adopting it would let Apply repoint
// the donor's entry at this one.
func Enabled(c Config) (bool, error) {
	exe, err := c.exe()
	if err != nil {
		return false, err
	}
	on, err := enabled(c, exe)
	if err != nil {
		return false, fmt.Errorf("could not read the start-at-login entry: %w", err)
	}
	return on, nil
}

// runValueProgram is the program a Windows Run value starts: the quoted
// part when it is quoted (arguments may follow), else the whole value.
func runValueProgram(v string) string {
	v = strings.TrimSpace(v)
	if rest, ok := strings.CutPrefix(v, `"`); ok {
		if prog, _, ok := strings.Cut(rest, `"`); ok {
			return prog
		}
		return rest
	}
	return v
}

// readEntry reads a file-based entry; a missing one is "", nil.
func readEntry(path string) (string, error) {
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return "", nil
	}
	return string(b), err
}

// DesktopEntry is the XDG autostart file for exe.
func DesktopEntry(exe string) string {
	return "[Desktop Entry]\n" +
		"Type=Application\n" +
		"Name=" + Name + "\n" +
		"Comment=Lend your GPU to the minis.gg studio\n" +
		"Exec=" + desktopExecQuote(exe) + "\n" +
		"Terminal=false\n" +
		"X-GNOME-Autostart-enabled=true\n"
}

// desktopExecQuote follows the Desktop Entry spec: the program is quoted,
// and inside quotes ", `, $ and \ are escaped with a backslash; then the
// whole value gets the string escaping of the file format (\ doubled) and
// % (field codes) is doubled.
func desktopExecQuote(exe string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range exe {
		switch r {
		case '"', '`', '$', '\\':
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	b.WriteByte('"')
	v := strings.ReplaceAll(b.String(), `\`, `\\`)
	return strings.ReplaceAll(v, "%", "%%")
}

// LaunchAgent is the macOS plist for exe.
func LaunchAgent(exe string) string {
	return `<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
	<key>Label</key>
	<string>` + ID + `</string>
	<key>ProgramArguments</key>
	<array>
		<string>` + xmlEscape(exe) + `</string>
	</array>
	<key>RunAtLoad</key>
	<true/>
	<key>ProcessType</key>
	<string>Interactive</string>
</dict>
</plist>
`
}

func xmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;", "'", "&apos;").Replace(s)
}

// writeFile replaces path atomically so a half-written entry never runs.
func writeFile(path, content string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".autostart-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(content); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// applyFile makes a file-based entry (XDG desktop file, LaunchAgent) match
// enabled; content renders the entry for the program's path.
func applyFile(c Config, enabled bool, content func(exe string) string) error {
	path, err := Path(c)
	if err != nil {
		return err
	}
	if !enabled {
		return removeFile(path)
	}
	exe, err := c.exe()
	if err != nil {
		return err
	}
	return writeFile(path, content(exe))
}

func removeFile(path string) error {
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return err
	}
	return nil
}
