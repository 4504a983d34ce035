// Package benchmodel gives benchmarks outside engine/llama the model they
// measure llama.cpp with.
package benchmodel

import (
	"testing"

	"github.com/minisgg/studio-worker/engine/gguf"
	"github.com/minisgg/studio-worker/engine/llama"
)

// SmolQ4 is the SmolLM2-135M-shaped model quantised to Q4_K_M, as the
// llama, engine-host and local API benchmarks use it (llama.EnsureQ4KM:
// made on first use on one thread, shared through the test-model cache).
// Without the llama.cpp libraries the benchmark is skipped, saying so.
func SmolQ4(tb testing.TB) string {
	tb.Helper()
	if _, err := llama.FindLibDir(""); err != nil {
		tb.Skipf("needs the llama.cpp libraries: run `make runtime` (%v)", err)
	}
	p, _, err := llama.EnsureQ4KM(gguf.SmolLM2Shaped(), 1)
	if err != nil {
		tb.Fatal(err)
	}
	return p
}
