//go:build darwin

package autostart

import "path/filepath"

// Path is where the entry lives for c.
func Path(c Config) (string, error) {
	home, err := c.home()
	if err != nil {
		return "", err
	}
	return filepath.Join(home, "Library", "LaunchAgents", ID+".plist"), nil
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
	return writeFile(path, LaunchAgent(exe))
}
