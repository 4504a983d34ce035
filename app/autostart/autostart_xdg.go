//go:build !windows && !darwin

package autostart

import (
	"os"
	"path/filepath"
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
	return writeFile(path, DesktopEntry(exe))
}
