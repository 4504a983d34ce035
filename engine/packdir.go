package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/adrg/xdg"
)

// Runtime packs are native runtimes (llama.cpp, stable-diffusion.cpp)
// fetched from the signed release feed for this computer's GPU (package
// engine/packs). They live in the data folder:
//
//	<xdg data home>/studio-worker/runtimes/<runtime>/<variant>/<version>/
//
// and <runtime>/current.json names the one the worker chose (after a GPU
// pack passed its check in a child process). The runtime lookups (engine/
// llama, engine/sd) read it after the runtimes installed beside the
// program, which the offline packages carry.

// Runtime names, as the release feed's packs spell them.
const (
	RuntimeLlama = "llama"
	RuntimeSD    = "sd"
)

// PacksDir is the folder holding the runtime packs:
// $XDG_DATA_HOME/studio-worker/runtimes (xdg's default data home where the
// variable is unset: ~/.local/share on Linux, %LOCALAPPDATA% on Windows).
func PacksDir() string {
	return filepath.Join(xdg.DataHome, "studio-worker", "runtimes")
}

// PackRecord is what <PacksDir>/<runtime>/current.json holds: the pack in
// use for a runtime on this computer.
type PackRecord struct {
	Runtime string `json:"runtime"` // RuntimeLlama or RuntimeSD
	Variant string `json:"variant"` // "linux-x64-vulkan"
	Version string `json:"version"` // the runtime's own version
	Backend string `json:"backend"` // "cpu" | "vulkan" | "cuda" | "metal"
	Dir     string `json:"dir"`     // the unpacked pack, absolute
	// Problem says why a better pack was passed over ("the Vulkan runtime
	// did not start on this GPU: …; using the CPU runtime"); "" when none
	// was.
	Problem string `json:"problem,omitempty"`
}

// GPU says whether the pack computes on a GPU.
func (r PackRecord) GPU() bool { return r.Backend != "" && r.Backend != "cpu" }

// Describe names the pack for a sentence: "the Vulkan runtime pack
// linux-x64-vulkan v0.5.0 fetched for this computer".
func (r PackRecord) Describe() string {
	return fmt.Sprintf("the %s runtime pack %s %s fetched for this computer", BackendName(r.Backend), r.Variant, r.Version)
}

// BackendName is a feed backend ("cuda") as a donor reads it ("CUDA").
func BackendName(b string) string {
	switch b {
	case "cpu":
		return "CPU"
	case "cuda":
		return "CUDA"
	case "vulkan":
		return "Vulkan"
	case "metal":
		return "Metal"
	}
	return b
}

func currentPath(root, runtime string) string {
	return filepath.Join(root, runtime, "current.json")
}

// CurrentPack reads the pack in use for runtime from root (PacksDir() when
// root is ""). The error wraps os.ErrNotExist when no pack was chosen, and
// says what is wrong when the record or its folder is unusable.
func CurrentPack(root, runtime string) (PackRecord, error) {
	if root == "" {
		root = PacksDir()
	}
	p := currentPath(root, runtime)
	b, err := os.ReadFile(p)
	if err != nil {
		return PackRecord{}, err
	}
	var rec PackRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return PackRecord{}, fmt.Errorf("the runtime pack record %s is unreadable: %v", p, err)
	}
	if rec.Dir == "" || !filepath.IsAbs(rec.Dir) {
		return PackRecord{}, fmt.Errorf("the runtime pack record %s names no absolute folder", p)
	}
	if st, err := os.Stat(rec.Dir); err != nil || !st.IsDir() {
		return PackRecord{}, fmt.Errorf("the runtime pack folder %s named by %s is gone: %w", rec.Dir, p, errors.Join(err, os.ErrNotExist))
	}
	return rec, nil
}

// WriteCurrentPack records rec as the pack in use for rec.Runtime under
// root (PacksDir() when ""), atomically: a temporary file beside it,
// synced, then renamed over the old record.
func WriteCurrentPack(root string, rec PackRecord) error {
	if root == "" {
		root = PacksDir()
	}
	p := currentPath(root, rec.Runtime)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), ".current-*.json")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), p)
}
