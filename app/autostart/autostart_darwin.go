//go:build darwin

package autostart

import (
	"path/filepath"
	"strings"
)

// Path is where the entry lives for c.
func Path(c Config) (string, error) {
	home, err := c.home()
	if err != nil {
		return "", err
	}
	return filepath.Join(home, "Library", "LaunchAgents", ID+".plist"), nil
}

func apply(c Config, enabled bool) error {
	return applyFile(c, enabled, LaunchAgent)
}

// enabled reads the LaunchAgent: it must name exe as the program.
func enabled(c Config, exe string) (bool, error) {
	path, err := Path(c)
	if err != nil {
		return false, err
	}
	text, err := readEntry(path)
	if err != nil {
		return false, err
	}
	return strings.Contains(text, "<string>"+xmlEscape(exe)+"</string>"), nil
}
