package gguf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"strings"
	"sync"
	"testing"
)

var (
	tinyOnce  sync.Once
	tinyBytes []byte
	tinyErr   error
)

// tinyFile is the Tiny model's bytes, written once per test binary.
func tinyFile(t *testing.T) []byte {
	t.Helper()
	tinyOnce.Do(func() {
		var buf bytes.Buffer
		tinyErr = Tiny().Write(&buf)
		tinyBytes = buf.Bytes()
	})
	if tinyErr != nil {
		t.Fatal(tinyErr)
	}
	return append([]byte(nil), tinyBytes...)
}

func TestCheckAcceptsGeneratedModels(t *testing.T) {
	b := tinyFile(t)
	in, err := CheckLLM(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatalf("the tiny model fails its check: %v", err)
	}
	if in.Architecture() != "llama" || len(in.Tensors) != 3+2*9 || in.Alignment != Alignment {
		t.Fatalf("read %q, %d tensors, alignment %d", in.Architecture(), len(in.Tensors), in.Alignment)
	}
	if kv, ok := in.Get("llama.block_count"); !ok || kv.IntValue() != 2 {
		t.Fatalf("llama.block_count read as %+v", kv)
	}
	var buf bytes.Buffer
	s := TinyNoTemplate()
	s.Type = F16
	if err := s.Write(&buf); err != nil {
		t.Fatal(err)
	}
	if _, err := CheckLLM(bytes.NewReader(buf.Bytes()), int64(buf.Len())); err != nil {
		t.Fatalf("the F16 model fails its check: %v", err)
	}
}

// layout finds where the fields of the tiny model are, for the mutations.
type layout struct {
	b  []byte
	in *Info
}

func (l layout) kv(t *testing.T, key string) KV {
	t.Helper()
	kv, ok := l.in.Get(key)
	if !ok {
		t.Fatalf("no key %s", key)
	}
	return kv
}

// keyAt is where the key's own bytes start (after its length).
func (l layout) keyAt(t *testing.T, key string) int {
	t.Helper()
	i := bytes.Index(l.b, append(binary.LittleEndian.AppendUint64(nil, uint64(len(key))), key...))
	if i < 0 {
		t.Fatalf("key %s not found", key)
	}
	return i + 8
}

func (l layout) tensor(t *testing.T, name string) TensorInfo {
	t.Helper()
	for _, ti := range l.in.Tensors {
		if ti.Name == name {
			return ti
		}
	}
	t.Fatalf("no tensor %s", name)
	return TensorInfo{}
}

// tensorField is the file offset of a tensor description's n_dims, dims,
// type or offset field.
func (l layout) tensorField(t *testing.T, name, field string) int {
	ti := l.tensor(t, name)
	p := int(ti.InfoOffset) + 8 + len(name)
	switch field {
	case "n_dims":
		return p
	case "dims":
		return p + 4
	case "type":
		return p + 4 + 8*len(ti.Dims)
	case "offset":
		return p + 4 + 8*len(ti.Dims) + 4
	}
	t.Fatalf("field %s", field)
	return 0
}

func put32(b []byte, at int, v uint32) { binary.LittleEndian.PutUint32(b[at:], v) }
func put64(b []byte, at int, v uint64) { binary.LittleEndian.PutUint64(b[at:], v) }

// TestCheckRefusesMutations is the table of header mutations of a valid tiny
// model (issue 10, items 5 and 11): each must be refused by the Go check with
// an *Error naming the field, so that none reaches llama.cpp. The first two
// rows are the ones that aborted the process inside llama.cpp.
func TestCheckRefusesMutations(t *testing.T) {
	base := tinyFile(t)
	in, err := readStructure(bytes.NewReader(base), int64(len(base)))
	if err != nil {
		t.Fatal(err)
	}
	L := layout{b: base, in: in}
	q := "blk.0.attn_q.weight"
	for _, tc := range []struct {
		name  string
		field string // a substring of Error.Field; "" accepts any *Error
		edit  func(b []byte) []byte
	}{
		{"block_count 0x7FFFFFFF", "llama.block_count", func(b []byte) []byte {
			put32(b, int(L.kv(t, "llama.block_count").Offset), 0x7FFFFFFF)
			return b
		}},
		{"block_count 0", "llama.block_count", func(b []byte) []byte {
			put32(b, int(L.kv(t, "llama.block_count").Offset), 0)
			return b
		}},
		{"block_count 1 with layer-1 tensors", "tensor blk.1.", func(b []byte) []byte {
			put32(b, int(L.kv(t, "llama.block_count").Offset), 1)
			return b
		}},
		{"bad magic", "header.magic", func(b []byte) []byte { copy(b, "GGUG"); return b }},
		{"HTML page", "header.magic", func([]byte) []byte { return []byte("<!DOCTYPE html><html><body>Sign in</body></html>") }},
		{"empty file", "header.magic", func([]byte) []byte { return nil }},
		{"version 1", "header.version", func(b []byte) []byte { put32(b, 4, 1); return b }},
		{"version 0xFFFF", "header.version", func(b []byte) []byte { put32(b, 4, 0xFFFF); return b }},
		{"tensor_count 2^63", "header.tensor_count", func(b []byte) []byte { put64(b, 8, 1<<63); return b }},
		{"tensor_count beyond the file", "header.tensor_count", func(b []byte) []byte { put64(b, 8, 1<<19); return b }},
		{"tensor_count one more", "", func(b []byte) []byte { put64(b, 8, uint64(len(in.Tensors)+1)); return b }},
		{"metadata_kv_count 2^40", "header.metadata_kv_count", func(b []byte) []byte { put64(b, 16, 1<<40); return b }},
		{"metadata_kv_count one more", "", func(b []byte) []byte { put64(b, 16, uint64(len(in.KVs)+1)); return b }},
		{"key length 2^62", "key length", func(b []byte) []byte { put64(b, 24, 1<<62); return b }},
		{"architecture string length 2^63+5", "general.architecture length", func(b []byte) []byte {
			put64(b, int(L.kv(t, "general.architecture").Offset), 1<<63+5)
			return b
		}},
		{"chat template length past the end", "tokenizer.chat_template length", func(b []byte) []byte {
			put64(b, int(L.kv(t, "tokenizer.chat_template").Offset), uint64(len(b)))
			return b
		}},
		{"tokens array length 2^40", "tokenizer.ggml.tokens array length", func(b []byte) []byte {
			put64(b, int(L.kv(t, "tokenizer.ggml.tokens").Offset)+4, 1<<40)
			return b
		}},
		{"tokens array length 2^27", "tokenizer.ggml.tokens", func(b []byte) []byte {
			put64(b, int(L.kv(t, "tokenizer.ggml.tokens").Offset)+4, 1<<27)
			return b
		}},
		{"token string length 2^63", "tokenizer.ggml.tokens[0] length", func(b []byte) []byte {
			put64(b, int(L.kv(t, "tokenizer.ggml.tokens").Offset)+12, 1<<63)
			return b
		}},
		{"scores array length 2^61", "tokenizer.ggml.scores array length", func(b []byte) []byte {
			put64(b, int(L.kv(t, "tokenizer.ggml.scores").Offset)+4, 1<<61)
			return b
		}},
		{"array of arrays", "tokenizer.ggml.tokens", func(b []byte) []byte {
			put32(b, int(L.kv(t, "tokenizer.ggml.tokens").Offset), uint32(TypeArray))
			return b
		}},
		{"array element type 99", "tokenizer.ggml.scores element type", func(b []byte) []byte {
			put32(b, int(L.kv(t, "tokenizer.ggml.scores").Offset), 99)
			return b
		}},
		{"value type 99", "general.file_type type", func(b []byte) []byte {
			put32(b, int(L.kv(t, "general.file_type").Offset)-4, 99)
			return b
		}},
		{"bool 7", "tokenizer.ggml.add_bos_token", func(b []byte) []byte {
			b[L.kv(t, "tokenizer.ggml.add_bos_token").Offset] = 7
			return b
		}},
		{"key with a NUL", "key", func(b []byte) []byte { b[L.keyAt(t, "general.name")+3] = 0; return b }},
		{"duplicate key", "llama.block_count", func(b []byte) []byte {
			copy(b[L.keyAt(t, "general.file_type"):], "llama.block_count")
			return b
		}},
		{"alignment 3", "general.alignment", func(b []byte) []byte {
			copy(b[L.keyAt(t, "general.file_type"):], "general.alignment")
			put32(b, int(L.kv(t, "general.file_type").Offset), 3)
			return b
		}},
		{"embedding_length 2^32-1", "llama.embedding_length", func(b []byte) []byte {
			put32(b, int(L.kv(t, "llama.embedding_length").Offset), math.MaxUint32)
			return b
		}},
		{"context_length 0", "llama.context_length", func(b []byte) []byte {
			put32(b, int(L.kv(t, "llama.context_length").Offset), 0)
			return b
		}},
		{"head_count 0", "llama.attention.head_count", func(b []byte) []byte {
			put32(b, int(L.kv(t, "llama.attention.head_count").Offset), 0)
			return b
		}},
		{"head_count_kv 3 of 4", "llama.attention.head_count_kv", func(b []byte) []byte {
			put32(b, int(L.kv(t, "llama.attention.head_count_kv").Offset), 3)
			return b
		}},
		{"head_count_kv 8 of 4", "llama.attention.head_count_kv", func(b []byte) []byte {
			put32(b, int(L.kv(t, "llama.attention.head_count_kv").Offset), 8)
			return b
		}},
		{"rope.freq_base NaN", "llama.rope.freq_base", func(b []byte) []byte {
			put32(b, int(L.kv(t, "llama.rope.freq_base").Offset), math.Float32bits(float32(math.NaN())))
			return b
		}},
		{"rms epsilon +Inf", "llama.attention.layer_norm_rms_epsilon", func(b []byte) []byte {
			put32(b, int(L.kv(t, "llama.attention.layer_norm_rms_epsilon").Offset), math.Float32bits(float32(math.Inf(1))))
			return b
		}},
		{"vocab_size 100 for 512 tokens", "llama.vocab_size", func(b []byte) []byte {
			put32(b, int(L.kv(t, "llama.vocab_size").Offset), 100)
			return b
		}},
		{"bos_token_id 512 of 512", "tokenizer.ggml.bos_token_id", func(b []byte) []byte {
			put32(b, int(L.kv(t, "tokenizer.ggml.bos_token_id").Offset), 512)
			return b
		}},
		{"eos_token_id 0xFFFFFFFE", "tokenizer.ggml.eos_token_id", func(b []byte) []byte {
			put32(b, int(L.kv(t, "tokenizer.ggml.eos_token_id").Offset), 0xFFFFFFFE)
			return b
		}},
		{"tensor n_dims 5", "n_dims", func(b []byte) []byte { put32(b, L.tensorField(t, q, "n_dims"), 5); return b }},
		{"tensor n_dims 0", "n_dims", func(b []byte) []byte { put32(b, L.tensorField(t, q, "n_dims"), 0); return b }},
		{"tensor n_dims 2^32-1", "n_dims", func(b []byte) []byte {
			put32(b, L.tensorField(t, q, "n_dims"), math.MaxUint32)
			return b
		}},
		{"tensor dim 0", "dims", func(b []byte) []byte { put64(b, L.tensorField(t, q, "dims"), 0); return b }},
		{"tensor dims overflow", "dims", func(b []byte) []byte {
			at := L.tensorField(t, q, "dims")
			put64(b, at, 1<<40)
			put64(b, at+8, 1<<40)
			return b
		}},
		{"tensor at exabytes", q + " offset", func(b []byte) []byte {
			at := L.tensorField(t, q, "dims")
			put64(b, at, 1<<30)
			put64(b, at+8, 1<<30)
			return b
		}},
		{"tensor type 99", "type", func(b []byte) []byte { put32(b, L.tensorField(t, q, "type"), 99); return b }},
		{"tensor type retired Q4_2", "type", func(b []byte) []byte { put32(b, L.tensorField(t, q, "type"), 4); return b }},
		{"Q4_K row of 64", "dims", func(b []byte) []byte { put32(b, L.tensorField(t, q, "type"), 12); return b }},
		{"tensor offset 2^60", q + " offset", func(b []byte) []byte { put64(b, L.tensorField(t, q, "offset"), 1<<60); return b }},
		{"tensor offset 2^64-32", q + " offset", func(b []byte) []byte {
			put64(b, L.tensorField(t, q, "offset"), math.MaxUint64-31)
			return b
		}},
		{"tensor offset unaligned", q + " offset", func(b []byte) []byte {
			put64(b, L.tensorField(t, q, "offset"), L.tensor(t, q).Offset+4)
			return b
		}},
		{"tensors overlap", "blk.0.attn_k.weight offset", func(b []byte) []byte {
			put64(b, L.tensorField(t, "blk.0.attn_k.weight", "offset"), L.tensor(t, q).Offset)
			return b
		}},
		{"tensor name of 128 bytes", "tensor ", func(b []byte) []byte {
			put64(b, int(L.tensor(t, q).InfoOffset), 128)
			return b
		}},
		{"duplicate tensor name", "blk.1.attn_q.weight", func(b []byte) []byte {
			copy(b[int(L.tensor(t, q).InfoOffset)+8:], "blk.1")
			return b
		}},
		{"tensor of layer 7", "tensor blk.7.", func(b []byte) []byte {
			copy(b[int(L.tensor(t, "blk.1.attn_q.weight").InfoOffset)+8:], "blk.7")
			return b
		}},
		{"embedding rows for 511 tokens", "token_embd.weight dims", func(b []byte) []byte {
			put64(b, L.tensorField(t, "token_embd.weight", "dims")+8, 511)
			return b
		}},
		{"embedding width 32", "token_embd.weight dims", func(b []byte) []byte {
			put64(b, L.tensorField(t, "token_embd.weight", "dims"), 32)
			return b
		}},
		// Found by loading mutations that passed an earlier check into
		// llama.cpp: each of these crashed the process.
		{"rms epsilon -1", "llama.attention.layer_norm_rms_epsilon", func(b []byte) []byte {
			put32(b, int(L.kv(t, "llama.attention.layer_norm_rms_epsilon").Offset), math.Float32bits(-1))
			return b
		}},
		{"I32 weights", q + " type", func(b []byte) []byte { put32(b, L.tensorField(t, q, "type"), 26); return b }},
		{"Q8_1 weights", "blk.1.ffn_down.weight type", func(b []byte) []byte {
			put32(b, L.tensorField(t, "blk.1.ffn_down.weight", "type"), 9)
			return b
		}},
		{"duplicate token", "tokenizer.ggml.tokens[4]", func(b []byte) []byte {
			copy(b[bytes.Index(b, []byte("<0x01>")):], "<0x00>")
			return b
		}},
		{"token with a NUL", "tokenizer.ggml.tokens[5]", func(b []byte) []byte {
			copy(b[bytes.Index(b, []byte("<0x02>")):], "<0x\x002>")
			return b
		}},
		{"SentencePiece byte token missing", "tokenizer.ggml.tokens", func(b []byte) []byte {
			copy(b[bytes.Index(b, []byte("<0x41>")):], "<0y41>")
			return b
		}},
		{"truncated in the metadata", "", func(b []byte) []byte { return b[:1000] }},
		{"truncated in the tensor infos", "", func(b []byte) []byte { return b[:L.in.Tensors[5].InfoOffset+10] }},
		{"truncated in the data", "offset", func(b []byte) []byte { return b[:len(b)/2] }},
		{"last byte missing", "offset", func(b []byte) []byte { return b[:len(b)-1] }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.edit(append([]byte(nil), base...))
			_, err := CheckLLM(bytes.NewReader(b), int64(len(b)))
			var ge *Error
			if !errors.As(err, &ge) {
				t.Fatalf("got %v, want a *gguf.Error", err)
			}
			if !strings.Contains(ge.Field, tc.field) {
				t.Fatalf("error names %q, want %q: %v", ge.Field, tc.field, err)
			}
			t.Log(err)
		})
	}
}

func TestCheckLLMNeedsArchitectureAndVocabulary(t *testing.T) {
	b := NewBuilder()
	b.String("general.name", "no architecture")
	b.Tensor("w", F32, []uint64{4}, func(n int, put func(float32)) error {
		for range n {
			put(1)
		}
		return nil
	})
	var buf bytes.Buffer
	if _, err := b.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	// A structurally sound file (what an image model's GGUF may be) passes
	// Check but not CheckLLM.
	if _, err := Check(bytes.NewReader(buf.Bytes()), int64(buf.Len())); err != nil {
		t.Fatalf("Check: %v", err)
	}
	_, err := CheckLLM(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	var ge *Error
	if !errors.As(err, &ge) || ge.Field != "general.architecture" {
		t.Fatalf("CheckLLM = %v, want general.architecture missing", err)
	}
}

// FuzzCheck: whatever the bytes, Check returns (no panic, no allocation
// sized by the file's own counts).
func FuzzCheck(f *testing.F) {
	var buf bytes.Buffer
	if err := Tiny().Write(&buf); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes()[:20000])
	f.Add([]byte("GGUF\x03\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = CheckLLM(bytes.NewReader(b), int64(len(b)))
	})
}

// TestCheckAcceptsTheImageModel: the generated SDXS-shaped image model (long
// tensor names, TQ1_0 blocks, no LLM metadata) passes Check.
func TestCheckAcceptsTheImageModel(t *testing.T) {
	path, err := EnsureSDXS(TinySDXS()) // the shared test cache: written once
	if err != nil {
		t.Fatal(err)
	}
	if _, err := CheckFile(path); err != nil {
		t.Fatalf("the SDXS-shaped model fails its check: %v", err)
	}
}
