package llama

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/engine/gguf"
)

// mutLoadEnv makes the test binary a child that loads one model file into
// llama.cpp and generates two tokens, then exits 0 whatever llama.cpp said;
// a crash shows as a signal or Go's exit status 2.
const mutLoadEnv = "STUDIO_WORKER_TEST_MUTATION_LOAD"

func init() {
	if path := os.Getenv(mutLoadEnv); path != "" {
		e := New(Config{Threads: 1})
		if err := e.LibError(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		_, err := e.Run(context.Background(), llmJob(path, engine.LLMParams{
			Messages: []engine.ChatMessage{{Role: "user", Content: "Hi there, ünïcode ✓"}}, MaxTokens: ptr(2)}, nil), nil)
		fmt.Println("result:", err)
		os.Exit(0)
	}
}

// TestMutationsThatPassTheCheckDoNotCrash: header mutations of the tiny
// model (every numeric hyper-parameter and tokenizer setting set to edge
// values, every tensor's dims and type changed) are put through the Go
// check; a sample of those it lets through is loaded into the real llama.cpp
// in a child process, and none may crash it (issue 10 item 11: the
// mutations it refuses never reach llama.cpp at all). Before the check
// knew weight types, norm epsilons and the vocabulary's byte tokens, 26 of
// these crashed the process.
func TestMutationsThatPassTheCheckDoNotCrash(t *testing.T) {
	needLibs(t)
	if testing.Short() {
		t.Skip("loads about a hundred models in child processes")
	}
	var buf bytes.Buffer
	if err := gguf.Tiny().Write(&buf); err != nil {
		t.Fatal(err)
	}
	base := buf.Bytes()
	in, err := gguf.CheckLLM(bytes.NewReader(base), int64(len(base)))
	if err != nil {
		t.Fatal(err)
	}
	type mutation struct {
		name string
		b    []byte
	}
	var muts []mutation
	add := func(name string, edit func(b []byte)) {
		b := append([]byte(nil), base...)
		edit(b)
		muts = append(muts, mutation{name, b})
	}
	for _, kv := range in.KVs {
		switch kv.Type {
		case gguf.TypeUint32, gguf.TypeInt32:
			for _, v := range []uint32{0, 1, 2, 3, 7, 16, 63, 64, 65, 511, 512, 513, 65535, 1 << 20, 0x7FFFFFFF, 0xFFFFFFFF} {
				add(fmt.Sprintf("%s=%d", kv.Key, v), func(b []byte) { binary.LittleEndian.PutUint32(b[kv.Offset:], v) })
			}
		case gguf.TypeFloat32:
			for _, v := range []float32{0, -1, 1e-30, 1e30, -3.4e38} {
				add(fmt.Sprintf("%s=%g", kv.Key, v), func(b []byte) { binary.LittleEndian.PutUint32(b[kv.Offset:], math.Float32bits(v)) })
			}
		case gguf.TypeBool:
			add(kv.Key+" flipped", func(b []byte) { b[kv.Offset] ^= 1 })
		}
	}
	for _, ti := range in.Tensors {
		p := int(ti.InfoOffset) + 8 + len(ti.Name)
		for d := range ti.Dims {
			for _, v := range []uint64{1, 32, 63, 128, 511, 513} {
				add(fmt.Sprintf("%s dims[%d]=%d", ti.Name, d, v), func(b []byte) { binary.LittleEndian.PutUint64(b[p+4+8*d:], v) })
			}
		}
		for ty := uint32(0); ty < 40; ty++ {
			add(fmt.Sprintf("%s type=%d", ti.Name, ty), func(b []byte) { binary.LittleEndian.PutUint32(b[p+4+8*len(ti.Dims):], ty) })
		}
	}
	var passed []mutation
	for _, m := range muts {
		if _, err := gguf.CheckLLM(bytes.NewReader(m.b), int64(len(m.b))); err == nil {
			passed = append(passed, m)
		}
	}
	// A deterministic sample keeps the test to a few seconds.
	const sample = 60
	step := max(1, len(passed)/sample)
	dir := t.TempDir()
	loaded := 0
	for i := 0; i < len(passed); i += step {
		m := passed[i]
		path := filepath.Join(dir, fmt.Sprintf("m%d.gguf", i))
		if err := os.WriteFile(path, m.b, 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), mutLoadEnv+"="+path, "GGML_NO_BACKTRACE=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			tail := out[max(0, len(out)-600):]
			t.Errorf("%s passed the Go check and crashed llama.cpp (%v):\n%s", m.name, err, tail)
		}
		os.Remove(path)
		loaded++
	}
	t.Logf("%d mutations, %d passed the Go check, %d of those loaded into llama.cpp in a child", len(muts), len(passed), loaded)
}
