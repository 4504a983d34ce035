//go:build !windows && !darwin

package autostart

import (
	"os"
	"path/filepath"
	"strings"
)

// Path is where the entry lives for c.
func Path(c Config) (string, error) {
	dir := c.ConfigHome
	if dir == "" {
		dir = os.Getenv("XDG_CONFIG_HOME")
	}
	if dir == "" {
		home, err := c.home()
		if err != nil {
			return "", err
		}
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "autostart", "studio-worker.desktop"), nil
}

func apply(c Config, enabled bool) error {
	return applyFile(c, enabled, DesktopEntry)
}

// enabled reads the desktop file: its Exec line must start exe, and the
// entry must not be switched off (Hidden, or GNOME's enabled key).
func enabled(c Config, exe string) (bool, error) {
	path, err := Path(c)
	if err != nil {
		return false, err
	}
	text, err := readEntry(path)
	if err != nil || text == "" {
		return false, err
	}
	execOK := false
	for line := range strings.Lines(text) {
		key, value, ok := strings.Cut(strings.TrimSpace(line), "=")
		if !ok {
			continue
		}
		switch strings.TrimSpace(key) {
		case "Exec":
			execOK = strings.TrimSpace(value) == desktopExecQuote(exe)
		case "Hidden":
			if strings.TrimSpace(value) == "true" {
				return false, nil
			}
		case "X-GNOME-Autostart-enabled":
			if strings.TrimSpace(value) == "false" {
				return false, nil
			}
		}
	}
	return execOK, nil
}
