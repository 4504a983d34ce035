//go:build !windows

package llama

// preloadDeps has nothing to do outside Windows: the Linux and macOS
// libraries find their siblings through their run paths ($ORIGIN on
// Linux, @loader_path on macOS). See lib_windows.go.
func preloadDeps(string) error { return nil }
