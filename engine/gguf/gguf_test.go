package gguf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"testing"
)

// reader is an independent minimal GGUF parser, used to check the writer.
type reader struct {
	r   *bytes.Reader
	err error
}

func (p *reader) read(v any) {
	if p.err == nil {
		p.err = binary.Read(p.r, binary.LittleEndian, v)
	}
}

func (p *reader) u32() uint32 { var v uint32; p.read(&v); return v }
func (p *reader) u64() uint64 { var v uint64; p.read(&v); return v }
func (p *reader) str() string {
	n := p.u64()
	if p.err != nil || n > uint64(p.r.Len()) {
		p.err = errors.New("bad string")
		return ""
	}
	b := make([]byte, n)
	_, p.err = io.ReadFull(p.r, b)
	return string(b)
}

func (p *reader) value(t ValueType) any {
	switch t {
	case TypeString:
		return p.str()
	case TypeUint32:
		return p.u32()
	case TypeInt32:
		return int32(p.u32())
	case TypeUint64:
		return p.u64()
	case TypeFloat32:
		return math.Float32frombits(p.u32())
	case TypeBool:
		var b uint8
		p.read(&b)
		return b == 1
	case TypeArray:
		et := ValueType(p.u32())
		n := p.u64()
		out := make([]any, 0, min(n, 1<<20))
		for i := uint64(0); i < n && p.err == nil; i++ {
			out = append(out, p.value(et))
		}
		return out
	}
	p.err = fmt.Errorf("value type %d", t)
	return nil
}

type parsedTensor struct {
	dims   []uint64
	typ    TensorType
	offset uint64
}

type parsedFile struct {
	kv      map[string]any
	tensors map[string]parsedTensor
	order   []string
	data    []byte // from the aligned data start
}

func parseFile(t *testing.T, b []byte) parsedFile {
	t.Helper()
	p := &reader{r: bytes.NewReader(b)}
	var m [4]byte
	p.read(&m)
	if string(m[:]) != "GGUF" || p.u32() != 3 {
		t.Fatal("bad magic or version")
	}
	nt, nkv := p.u64(), p.u64()
	f := parsedFile{kv: map[string]any{}, tensors: map[string]parsedTensor{}}
	for i := uint64(0); i < nkv; i++ {
		k := p.str()
		f.kv[k] = p.value(ValueType(p.u32()))
	}
	for i := uint64(0); i < nt; i++ {
		name := p.str()
		nd := p.u32()
		dims := make([]uint64, nd)
		for j := range dims {
			dims[j] = p.u64()
		}
		f.tensors[name] = parsedTensor{dims: dims, typ: TensorType(p.u32()), offset: p.u64()}
		f.order = append(f.order, name)
	}
	if p.err != nil {
		t.Fatal(p.err)
	}
	pos := len(b) - p.r.Len()
	start := (pos + Alignment - 1) / Alignment * Alignment
	f.data = b[start:]
	return f
}

func TestBuilderRoundTrip(t *testing.T) {
	b := NewBuilder()
	b.String("general.architecture", "llama")
	b.Uint32("a.u32", 7)
	b.Int32("a.i32", -3)
	b.Uint64("a.u64", 1<<40)
	b.Float32("a.f32", 1.5)
	b.Bool("a.bool", true)
	b.Strings("a.strs", []string{"x", "", "zz"})
	b.Float32s("a.f32s", []float32{-1, 2})
	b.Int32s("a.i32s", []int32{4, -5})
	seq := func(n int, put func(float32)) error {
		for i := 0; i < n; i++ {
			put(float32(i))
		}
		return nil
	}
	b.Tensor("t.a", F32, []uint64{3, 2}, seq)
	b.Tensor("t.b", F16, []uint64{5}, seq)
	var buf bytes.Buffer
	n, err := b.WriteTo(&buf)
	if err != nil || n != int64(buf.Len()) {
		t.Fatalf("WriteTo = %d, %v (buffer %d)", n, err, buf.Len())
	}
	f := parseFile(t, buf.Bytes())
	want := map[string]any{
		"general.architecture": "llama", "a.u32": uint32(7), "a.i32": int32(-3), "a.u64": uint64(1 << 40),
		"a.f32": float32(1.5), "a.bool": true,
	}
	for k, v := range want {
		if f.kv[k] != v {
			t.Errorf("%s = %v, want %v", k, f.kv[k], v)
		}
	}
	if got := fmt.Sprint(f.kv["a.strs"], f.kv["a.f32s"], f.kv["a.i32s"]); got != "[x  zz] [-1 2] [4 -5]" {
		t.Errorf("arrays: %s", got)
	}
	ta, tb := f.tensors["t.a"], f.tensors["t.b"]
	if fmt.Sprint(ta.dims) != "[3 2]" || ta.typ != F32 || ta.offset != 0 || tb.typ != F16 || tb.offset != 32 {
		t.Fatalf("tensor infos: %+v %+v", ta, tb)
	}
	for i := 0; i < 6; i++ {
		if v := math.Float32frombits(binary.LittleEndian.Uint32(f.data[4*i:])); v != float32(i) {
			t.Fatalf("t.a[%d] = %v", i, v)
		}
	}
	for i := 0; i < 5; i++ {
		if h := binary.LittleEndian.Uint16(f.data[32+2*i:]); h != Float16(float32(i)) {
			t.Fatalf("t.b[%d] = %#x", i, h)
		}
	}
	if len(f.data) != 64 {
		t.Fatalf("data section %d bytes, want two aligned tensors (64)", len(f.data))
	}
}

func TestBuilderErrors(t *testing.T) {
	fill := func(n int, put func(float32)) error { return nil }
	cases := map[string]func(b *Builder){
		"given twice": func(b *Builder) { b.Uint32("k", 1); b.Uint32("k", 2) },
		"dimensions":  func(b *Builder) { b.Tensor("t", F32, nil, fill) },
		"wrote 0 of 4": func(b *Builder) {
			b.Tensor("t", F32, []uint64{4}, fill)
		},
		"cannot be written": func(b *Builder) { b.Tensor("t", TensorType(12), []uint64{4}, fill) },
	}
	for want, build := range cases {
		b := NewBuilder()
		build(b)
		if _, err := b.WriteTo(io.Discard); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v", want, err)
		}
	}
}

func TestFloat16(t *testing.T) {
	cases := []struct {
		f    float32
		want uint16
	}{
		{0, 0}, {1, 0x3c00}, {-2, 0xc000}, {0.5, 0x3800}, {65504, 0x7bff}, {1e6, 0x7c00},
		{float32(math.Inf(-1)), 0xfc00}, {5.960464477539063e-08, 0x0001}, {6.103515625e-05, 0x0400},
		{1.0009765625, 0x3c01}, {1.00048828125, 0x3c00}, // a tie rounds to even
		{1e-9, 0},
	}
	for _, c := range cases {
		if got := Float16(c.f); got != c.want {
			t.Errorf("Float16(%v) = %#04x, want %#04x", c.f, got, c.want)
		}
	}
	if got := Float16(float32(math.NaN())); got&0x7c00 != 0x7c00 || got&0x3ff == 0 {
		t.Errorf("NaN gave %#04x", got)
	}
}

func TestTinyModel(t *testing.T) {
	var a, b bytes.Buffer
	if err := Tiny().Write(&a); err != nil {
		t.Fatal(err)
	}
	if err := Tiny().Write(&b); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("the same spec wrote different bytes")
	}
	if a.Len() >= 1<<20 {
		t.Fatalf("tiny model is %d bytes, want under 1 MB", a.Len())
	}
	f := parseFile(t, a.Bytes())
	toks := f.kv["tokenizer.ggml.tokens"].([]any)
	if len(toks) != Tiny().Vocab || toks[TokenBOS] != "<s>" || toks[TokenEOS] != "</s>" || toks[TokenUnk] != "<unk>" {
		t.Fatalf("special tokens wrong: %d tokens, %v", len(toks), toks[:3])
	}
	seen := map[any]bool{}
	for i, tok := range toks {
		if seen[tok] {
			t.Fatalf("token %q twice", tok)
		}
		seen[tok] = true
		if i >= firstByte && i < firstByte+256 && tok != fmt.Sprintf("<0x%02X>", i-firstByte) {
			t.Fatalf("byte token %d is %q", i, tok)
		}
	}
	if f.kv["tokenizer.chat_template"] != ChatMLTemplate || f.kv["general.architecture"] != "llama" {
		t.Fatal("metadata missing")
	}
	emb := f.tensors["token_embd.weight"]
	if fmt.Sprint(emb.dims) != fmt.Sprint([]uint64{64, 512}) {
		t.Fatalf("token_embd dims %v", emb.dims)
	}
	if got := len(f.order); got != 3+9*Tiny().Layers {
		t.Fatalf("%d tensors", got)
	}

	var c bytes.Buffer
	if err := TinyNoTemplate().Write(&c); err != nil {
		t.Fatal(err)
	}
	if _, ok := parseFile(t, c.Bytes()).kv["tokenizer.chat_template"]; ok {
		t.Fatal("TinyNoTemplate has a template")
	}
}

func TestSmolShape(t *testing.T) {
	s := SmolLM2Shaped()
	if err := s.validate(); err != nil {
		t.Fatal(err)
	}
	toks, _, _ := s.Vocabulary()
	if len(toks) != 49152 {
		t.Fatalf("%d tokens", len(toks))
	}
}

func TestEnsureCaches(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("STUDIO_WORKER_TEST_CACHE", dir)
	p1, err := Ensure(Tiny())
	if err != nil {
		t.Fatal(err)
	}
	st1, _ := os.Stat(p1)
	p2, err := Ensure(Tiny())
	if err != nil || p2 != p1 {
		t.Fatalf("%s %v", p2, err)
	}
	st2, _ := os.Stat(p2)
	if !st1.ModTime().Equal(st2.ModTime()) {
		t.Fatal("cached model written again")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("left %d files in the cache, want 1", len(entries))
	}
	if _, err := Ensure(Spec{Name: "../x"}); err == nil {
		t.Fatal("a spec with a path for a name was accepted")
	}
}
