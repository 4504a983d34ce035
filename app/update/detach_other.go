//go:build !windows

package update

import "errors"

// startDetached runs the Windows installer's script; only on Windows.
func startDetached(script string) error {
	return errors.New("the Windows installer runs only on Windows")
}
