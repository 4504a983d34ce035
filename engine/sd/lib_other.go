//go:build !(darwin || freebsd || linux || netbsd || windows)

package sd

import "errors"

var errUnsupported = errors.New("loading stable-diffusion.cpp is not supported on this platform")

func openLibrary(string) (uintptr, error)           { return 0, errUnsupported }
func lookupSymbol(uintptr, string) (uintptr, error) { return 0, errUnsupported }
func newLogCallback() uintptr                       { return 0 }
func newProgressCallback() uintptr                  { return 0 }
