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
	"sort"
	"strings"
	"testing"

	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/engine/gguf"
)

// mutLoadEnv makes the test binary a child that loads each model file of a
// folder (in name order) into llama.cpp and generates two tokens, printing
// "loading <name>" before each, then exits 0 whatever llama.cpp said; a
// crash shows as a signal or Go's exit status 2, after the name of the file
// that caused it.
const mutLoadEnv = "STUDIO_WORKER_TEST_MUTATION_LOAD"

func init() {
	dir := os.Getenv(mutLoadEnv)
	if dir == "" {
		return
	}
	e := New(Config{Threads: 1})
	if err := e.LibError(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	names, _ := filepath.Glob(filepath.Join(dir, "*.gguf"))
	sort.Strings(names)
	for _, path := range names {
		fmt.Println("loading", filepath.Base(path))
		_, err := e.Run(context.Background(), llmJob(path, engine.LLMParams{
			Messages: []engine.ChatMessage{{Role: "user", Content: "Hi there, ünïcode ✓"}}, MaxTokens: ptr(2)}, nil), nil)
		fmt.Println("result:", err)
		e.Release()
	}
	os.Exit(0)
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
		edit func(b []byte)
		b    []byte
	}
	var muts []mutation
	add := func(name string, edit func(b []byte)) { muts = append(muts, mutation{name: name, edit: edit}) }
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
	every := 1
	if raceBuild {
		every = 4 // the race detector makes the check and each load several times slower
	}
	for i, m := range muts {
		if i%every != 0 {
			continue
		}
		m.b = append([]byte(nil), base...)
		m.edit(m.b)
		if _, err := gguf.CheckLLM(bytes.NewReader(m.b), int64(len(m.b))); err == nil {
			passed = append(passed, m)
		}
	}
	// A deterministic sample, loaded by one child in turn; a crash names
	// the file being loaded, and the next child goes on after it.
	sample := 60
	if raceBuild {
		sample = 20
	}
	step := max(1, len(passed)/sample)
	dir := t.TempDir()
	names := map[string]string{}
	var order []string
	for i := 0; i < len(passed); i += step {
		file := fmt.Sprintf("m%05d.gguf", i)
		if err := os.WriteFile(filepath.Join(dir, file), passed[i].b, 0o644); err != nil {
			t.Fatal(err)
		}
		names[file] = passed[i].name
		order = append(order, file)
	}
	loaded := 0
	for len(order) > 0 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), mutLoadEnv+"="+dir, "GGML_NO_BACKTRACE=1")
		out, err := cmd.CombinedOutput()
		var last string
		for _, line := range strings.Split(string(out), "\n") {
			if f, ok := strings.CutPrefix(line, "loading "); ok {
				last = f
				loaded++
			}
		}
		if err == nil {
			break
		}
		if last == "" {
			t.Fatalf("the loading child failed before its first file (%v):\n%s", err, out[max(0, len(out)-600):])
		}
		t.Errorf("%s passed the Go check and crashed llama.cpp (%v):\n%s", names[last], err, out[max(0, len(out)-600):])
		// Go on with the files after the one that crashed.
		for i, f := range order {
			os.Remove(filepath.Join(dir, f))
			if f == last {
				order = order[i+1:]
				break
			}
		}
	}
	t.Logf("%d mutations, %d passed the Go check, %d of those loaded into llama.cpp in a child", len(muts), len(passed), loaded)
}
