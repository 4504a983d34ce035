//go:build windows

package autostart

import (
	"errors"
	"path/filepath"
	"strings"

	"golang.org/x/sys/windows/registry"
)

const runKey = `Software\Microsoft\Windows\CurrentVersion\Run`

// Path names the registry value that holds the entry.
func Path(Config) (string, error) {
	return `HKCU\` + runKey + `\` + Name, nil
}

func apply(c Config, enabled bool) error {
	k, _, err := registry.CreateKey(registry.CURRENT_USER, runKey, registry.SET_VALUE)
	if err != nil {
		return err
	}
	defer k.Close()
	if !enabled {
		if err := k.DeleteValue(Name); err != nil && !errors.Is(err, registry.ErrNotExist) {
			return err
		}
		return nil
	}
	exe, err := c.exe()
	if err != nil {
		return err
	}
	// Quoted so that a path with spaces (Program Files) starts the program
	// rather than a prefix of it.
	return k.SetStringValue(Name, `"`+exe+`"`)
}

// enabled reads the Run value (the installer's "start at login" writes the
// same one): it must start exe. Windows paths compare case-insensitively.
func enabled(c Config, exe string) (bool, error) {
	k, err := registry.OpenKey(registry.CURRENT_USER, runKey, registry.QUERY_VALUE)
	if errors.Is(err, registry.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer k.Close()
	v, _, err := k.GetStringValue(Name)
	if errors.Is(err, registry.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return strings.EqualFold(filepath.Clean(runValueProgram(v)), filepath.Clean(exe)), nil
}
