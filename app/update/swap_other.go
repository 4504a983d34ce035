//go:build !linux

package update

import "errors"

// exchange is Linux-only; elsewhere swapIn falls back to two renames.
func exchange(a, b string) error { return errors.ErrUnsupported }
