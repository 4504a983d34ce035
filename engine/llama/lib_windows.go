//go:build windows

package llama

import (
	"fmt"
	"path/filepath"
	"syscall"
)

// preloadDeps loads ggml-base.dll from dir before yzma loads the rest.
//
// yzma opens each library by its full path, in the order ggml, ggml-base,
// llama. Windows resolves a DLL's imports by name through the standard
// search order (the program's folder, the system folders, PATH), and a full
// path to LoadLibraryW does not add the loaded DLL's own folder to that
// search. ggml.dll imports ggml-base.dll, which lives only in dir (lib\
// beside the program in an install, runtime\llama\<variant> in a source
// tree), so ggml.dll fails to load — unless a module named ggml-base.dll is
// already in the process: Windows then binds the import to it by name.
// Loading it here first is that module, and it is the very file yzma's own
// load of ggml-base.dll returns again (same name, same handle), so the
// process keeps exactly one ggml-base. packaging/windows/dllcheck.c does the
// same and proves the installed folder loads this way under Wine.
//
// The handle is never freed: the libraries stay loaded for the life of the
// process.
func preloadDeps(dir string) error {
	path := filepath.Join(dir, "ggml-base.dll")
	if _, err := syscall.LoadLibrary(path); err != nil {
		return fmt.Errorf("cannot load %s: %w", path, err)
	}
	return nil
}
