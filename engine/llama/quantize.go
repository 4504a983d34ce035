package llama

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	yz "github.com/hybridgroup/yzma/pkg/llama"

	"github.com/minisgg/studio-worker/engine/gguf"
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

// EnsureQ4KM returns the path of the generated model spec quantised to
// Q4_K_M in the test-model cache (gguf.CacheDir), as the benchmarks use
// it: "<spec's file name>-q4_k_m.gguf". When absent it is made: spec is
// written (gguf.EnsureIn), quantised on threads threads (QuantizeQ4KM,
// which needs the libraries) and the unquantised file removed. made says
// it was made now (minutes for a model of SmolLM2's size).
func EnsureQ4KM(spec gguf.Spec, threads int) (path string, made bool, err error) {
	dir, err := gguf.CacheDir()
	if err != nil {
		return "", false, err
	}
	dst := filepath.Join(dir, strings.TrimSuffix(spec.FileName(), ".gguf")+"-q4_k_m.gguf")
	if _, err := os.Stat(dst); err == nil {
		return dst, false, nil
	}
	src, err := gguf.EnsureIn(dir, spec)
	if err != nil {
		return "", false, err
	}
	if err := QuantizeQ4KM(src, dst, threads); err != nil {
		return "", false, err
	}
	os.Remove(src)
	return dst, true, nil
}
