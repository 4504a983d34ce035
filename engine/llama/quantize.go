package llama

import (
	"fmt"
	"os"
	"path/filepath"

	yz "github.com/hybridgroup/yzma/pkg/llama"
)

// QuantizeQ4KM quantises a GGUF model to Q4_K_M with llama.cpp's own
// llama_model_quantize (the libraries must load; see LoadRuntime). The
// output appears at dst only when complete. Tensors whose rows do not fit
// Q4_K's 256-wide blocks get llama.cpp's usual fallback types.
func QuantizeQ4KM(src, dst string, threads int) error {
	if _, err := LoadRuntime("", nil); err != nil {
		return err
	}
	if _, err := checkGGUF(src); err != nil {
		return err
	}
	tmp := dst + ".tmp"
	defer os.Remove(tmp)
	params := yz.ModelQuantizeDefaultParams()
	params.Ftype = yz.FtypeMostlyQ4_K_M
	params.NThread = int32(max(threads, 1))
	llamaLog.mark()
	if rc := yz.ModelQuantize(src, tmp, &params); rc != 0 {
		return fmt.Errorf("llama.cpp could not quantise %s (code %d): %s", filepath.Base(src), rc, llamaLog.firstError())
	}
	if err := os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("quantise: %w", err)
	}
	return nil
}
