package gguf

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"math"
	"math/bits"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// This file reads and checks GGUF files that come from elsewhere, before any
// native library opens them. llama.cpp's own reader has had memory-safety
// bugs in exactly these fields (a tensor declared at exabytes backed by a
// few megabytes, integer overflow in array and string lengths, a vocabulary
// id out of range, a layer count that trips an assertion and aborts the
// process), so every count, length, offset and size is checked here against
// the file's real size, without trusting any of them for an allocation.
//
// Limits come from the GGUF specification (ggml's docs/gguf.md) and from
// llama.cpp's own constants (GGML_MAX_DIMS, GGML_MAX_NAME, LLAMA_MAX_LAYERS,
// LLAMA_MAX_EXPERTS); the hyper-parameter ranges are wide enough for every
// published model and narrow enough that nothing downstream overflows.

// Limits of the structural check.
const (
	MaxTensors    = 1 << 20 // tensor infos in one file
	MaxKVs        = 1 << 20 // metadata pairs in one file
	MaxKeyLen     = 1 << 16 // bytes in a metadata key
	MaxStringLen  = 1 << 30 // bytes in one string value
	MaxArrayLen   = 1 << 28 // elements in one array value
	MaxDims       = 4       // GGML_MAX_DIMS
	MaxTensorName = 127     // GGML_MAX_NAME as stable-diffusion.cpp builds ggml (128), less its NUL
	MaxLLMName    = 63      // GGML_MAX_NAME as llama.cpp builds ggml (64), less its NUL
	MaxLayers     = 512     // LLAMA_MAX_LAYERS
	MaxExperts    = 512     // LLAMA_MAX_EXPERTS
	MaxVocab      = 1 << 24 // tokens in a vocabulary
)

// Error is a GGUF file that failed the check. Field names what is wrong in
// the file's own terms ("header.tensor_count", "llama.block_count",
// "tensor blk.0.attn_q.weight offset"), Offset is its byte position in the
// file (-1 when it is not one place), Reason says why in words.
type Error struct {
	Field  string
	Offset int64
	Reason string
}

func (e *Error) Error() string {
	if e.Offset >= 0 {
		return fmt.Sprintf("%s (byte %d): %s", e.Field, e.Offset, e.Reason)
	}
	return e.Field + ": " + e.Reason
}

// KV is one metadata pair as read. Scalars fill the field of their kind
// (Uint for unsigned and bool, Int for signed, Float, Str); arrays have Len
// and ElemType, and their values in Ints/Floats when numeric and at most
// smallArray long (per-layer hyper-parameters). Offset is where the value
// (after the key and its type) starts.
type KV struct {
	Key      string
	Type     ValueType
	ElemType ValueType
	Len      uint64
	Offset   int64
	Uint     uint64
	Int      int64
	Float    float64
	Str      string
	Ints     []int64
	Floats   []float64
}

// smallArray is the longest numeric array whose values are kept.
const smallArray = 4096

// IsInt reports whether the value is an integer scalar (signed or not).
func (kv KV) IsInt() bool {
	switch kv.Type {
	case TypeUint8, TypeUint16, TypeUint32, TypeUint64, TypeInt8, TypeInt16, TypeInt32, TypeInt64:
		return true
	}
	return false
}

// IntValue is an integer scalar as int64 (unsigned values above MaxInt64
// come back as MaxInt64, which every range check refuses).
func (kv KV) IntValue() int64 {
	switch kv.Type {
	case TypeUint8, TypeUint16, TypeUint32, TypeUint64, TypeBool:
		if kv.Uint > math.MaxInt64 {
			return math.MaxInt64
		}
		return int64(kv.Uint)
	}
	return kv.Int
}

// TensorInfo is one tensor description. Offset is relative to the data
// section; InfoOffset is where the description starts in the file; Bytes is
// the data size its type and shape give.
type TensorInfo struct {
	Name       string
	Dims       []uint64
	Type       TensorType
	Offset     uint64
	Bytes      uint64
	InfoOffset int64
}

// Info is what Check read from a file that passed.
type Info struct {
	Version    uint32
	Alignment  uint64
	KVs        []KV
	Tensors    []TensorInfo
	DataOffset int64 // start of the data section
	Size       int64 // file size
	index      map[string]int
	// tokenHashes holds a hash of each vocabulary token (with tokenSeed),
	// for the checks that need to know whether a token exists.
	tokenHashes map[uint64]uint64
	tokenSeed   maphash.Seed
}

// hasToken reports whether the vocabulary holds the token text t.
func (in *Info) hasToken(t string) bool {
	_, ok := in.tokenHashes[maphash.String(in.tokenSeed, t)]
	return ok
}

// Get returns the metadata pair under key.
func (in *Info) Get(key string) (KV, bool) {
	i, ok := in.index[key]
	if !ok {
		return KV{}, false
	}
	return in.KVs[i], true
}

// Architecture is general.architecture ("" when absent).
func (in *Info) Architecture() string {
	kv, _ := in.Get("general.architecture")
	return kv.Str
}

// typeTraits are ggml's block size (elements) and block bytes per type
// (ggml.c type_traits); removed types are absent and refused.
var typeTraits = map[TensorType][2]uint64{
	0: {1, 4}, 1: {1, 2}, // F32, F16
	2: {32, 18}, 3: {32, 20}, 6: {32, 22}, 7: {32, 24}, 8: {32, 34}, 9: {32, 36}, // Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q8_1
	10: {256, 84}, 11: {256, 110}, 12: {256, 144}, 13: {256, 176}, 14: {256, 210}, 15: {256, 292}, // Q2_K..Q8_K
	16: {256, 66}, 17: {256, 74}, 18: {256, 98}, 19: {256, 50}, 20: {32, 18}, // IQ2_XXS IQ2_XS IQ3_XXS IQ1_S IQ4_NL
	21: {256, 110}, 22: {256, 82}, 23: {256, 136}, // IQ3_S IQ2_S IQ4_XS
	24: {1, 1}, 25: {1, 2}, 26: {1, 4}, 27: {1, 8}, 28: {1, 8}, // I8 I16 I32 I64 F64
	29: {256, 56}, 30: {1, 2}, // IQ1_M BF16
	34: {256, 54}, 35: {256, 66}, // TQ1_0 TQ2_0
	39: {32, 17}, // MXFP4
}

// scalarSize is the byte size of each fixed-size value type.
var scalarSize = map[ValueType]uint64{
	TypeUint8: 1, TypeInt8: 1, TypeBool: 1, TypeUint16: 2, TypeInt16: 2,
	TypeUint32: 4, TypeInt32: 4, TypeFloat32: 4, TypeUint64: 8, TypeInt64: 8, TypeFloat64: 8,
}

// CheckFile checks the GGUF file at path (see Check).
func CheckFile(path string) (*Info, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	return Check(f, st.Size())
}

// Check reads a GGUF file of size bytes from r and checks its structure:
// magic and version (2 or 3); tensor and metadata counts that the file can
// hold; every key, string and array length within the file; known value and
// tensor types, no nested arrays, no repeated key or tensor name; a
// power-of-two general.alignment; tensor names, dimension counts and sizes
// with no overflow; every tensor's data aligned, inside the file and not
// overlapping another. It then checks the hyper-parameters and tokenizer (see
// CheckModel). A failure is an *Error; an I/O failure is returned as is.
func Check(r io.ReaderAt, size int64) (*Info, error) {
	in, err := readStructure(r, size)
	if err != nil {
		return nil, err
	}
	if err := in.CheckModel(); err != nil {
		return nil, err
	}
	return in, nil
}

// checkReader tracks its position and the bytes left in the file.
type checkReader struct {
	br   *bufio.Reader
	pos  int64
	size int64
	err  error
}

func (p *checkReader) left() uint64 { return uint64(p.size - p.pos) }

func (p *checkReader) fail(field string, at int64, format string, args ...any) {
	if p.err == nil {
		p.err = &Error{Field: field, Offset: at, Reason: fmt.Sprintf(format, args...)}
	}
}

func (p *checkReader) bytes(field string, n int) []byte {
	if p.err != nil {
		return nil
	}
	if uint64(n) > p.left() {
		p.fail(field, p.pos, "the file ends after %d more bytes, %d needed", p.left(), n)
		return nil
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(p.br, b); err != nil {
		p.err = err
		return nil
	}
	p.pos += int64(n)
	return b
}

func (p *checkReader) skip(field string, n uint64) {
	if p.err != nil {
		return
	}
	if n > p.left() {
		p.fail(field, p.pos, "the file ends after %d more bytes, %d needed", p.left(), n)
		return
	}
	if _, err := p.br.Discard(int(n)); err != nil {
		p.err = err
		return
	}
	p.pos += int64(n)
}

func (p *checkReader) u32(field string) uint32 {
	b := p.bytes(field, 4)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint32(b)
}

func (p *checkReader) u64(field string) uint64 {
	b := p.bytes(field, 8)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint64(b)
}

// strLen reads a string's length and checks it against limit and the file.
func (p *checkReader) strLen(field string, limit uint64) uint64 {
	at := p.pos
	n := p.u64(field + " length")
	if p.err != nil {
		return 0
	}
	if n > limit {
		p.fail(field+" length", at, "%d bytes, more than the %d allowed", n, limit)
		return 0
	}
	if n > p.left() {
		p.fail(field+" length", at, "%d bytes, but only %d are left in the file", n, p.left())
		return 0
	}
	return n
}

func (p *checkReader) str(field string, limit uint64) string {
	n := p.strLen(field, limit)
	if p.err != nil {
		return ""
	}
	return string(p.bytes(field, int(n)))
}

func readStructure(r io.ReaderAt, size int64) (*Info, error) {
	p := &checkReader{br: bufio.NewReaderSize(io.NewSectionReader(r, 0, size), 1<<16), size: size}
	in := &Info{Size: size, Alignment: Alignment, index: map[string]int{}}
	magicBytes := p.bytes("header.magic", 4)
	if p.err != nil {
		return nil, &Error{Field: "header.magic", Offset: 0, Reason: fmt.Sprintf("the file has %d bytes, too few for a GGUF header", size)}
	}
	if string(magicBytes) != magic {
		return nil, &Error{Field: "header.magic", Offset: 0, Reason: fmt.Sprintf("the file starts with %q, not %q", magicBytes, magic)}
	}
	in.Version = p.u32("header.version")
	if p.err == nil && in.Version != 2 && in.Version != 3 {
		p.fail("header.version", 4, "version %d; only versions 2 and 3 are read", in.Version)
	}
	nt := p.u64("header.tensor_count")
	nkv := p.u64("header.metadata_kv_count")
	if p.err != nil {
		return nil, p.err
	}
	// The smallest tensor info is a 1-byte name, 1 dimension, type and
	// offset: 8+1+4+8+4+8 bytes; the smallest pair a 1-byte key and a byte.
	const minTensorInfo, minKV = 33, 14
	switch {
	case nt > MaxTensors:
		p.fail("header.tensor_count", 8, "%d tensors, more than the %d allowed", nt, MaxTensors)
	case nt*minTensorInfo > p.left():
		p.fail("header.tensor_count", 8, "%d tensors cannot fit in the %d bytes of the file", nt, size)
	case nkv > MaxKVs:
		p.fail("header.metadata_kv_count", 16, "%d metadata pairs, more than the %d allowed", nkv, MaxKVs)
	case nkv*minKV > p.left():
		p.fail("header.metadata_kv_count", 16, "%d metadata pairs cannot fit in the %d bytes of the file", nkv, size)
	}
	for i := uint64(0); i < nkv && p.err == nil; i++ {
		p.readKV(in, i)
	}
	if p.err != nil {
		return nil, p.err
	}
	if kv, ok := in.Get("general.alignment"); ok {
		a := kv.Uint
		if kv.Type != TypeUint32 || a == 0 || a&(a-1) != 0 || a > 1<<20 {
			return nil, &Error{Field: "general.alignment", Offset: kv.Offset, Reason: "must be a uint32 power of two up to 1 MiB"}
		}
		in.Alignment = a
	}
	names := map[string]bool{}
	in.Tensors = make([]TensorInfo, 0, nt)
	for i := uint64(0); i < nt && p.err == nil; i++ {
		t := p.readTensorInfo(i)
		if p.err != nil {
			break
		}
		if names[t.Name] {
			p.fail("tensor "+t.Name, t.InfoOffset, "the tensor name appears twice")
			break
		}
		names[t.Name] = true
		in.Tensors = append(in.Tensors, t)
	}
	if p.err != nil {
		return nil, p.err
	}
	in.DataOffset = int64(alignTo(uint64(p.pos), in.Alignment))
	if in.DataOffset > size && nt > 0 {
		return nil, &Error{Field: "tensor data", Offset: p.pos, Reason: "the file ends before its tensor data starts"}
	}
	if err := in.checkTensorPlacement(); err != nil {
		return nil, err
	}
	return in, nil
}

func alignTo(n, a uint64) uint64 { return (n + a - 1) / a * a }

func (p *checkReader) readKV(in *Info, i uint64) {
	at := p.pos
	key := p.str(fmt.Sprintf("metadata pair %d key", i), MaxKeyLen)
	if p.err != nil {
		return
	}
	if key == "" || !utf8.ValidString(key) || strings.ContainsRune(key, 0) {
		p.fail(fmt.Sprintf("metadata pair %d key", i), at, "the key is empty or not clean UTF-8 text")
		return
	}
	if _, dup := in.index[key]; dup {
		p.fail(key, at, "the key appears twice")
		return
	}
	typAt := p.pos
	typ := ValueType(p.u32(key + " type"))
	kv := KV{Key: key, Type: typ, Offset: p.pos}
	if p.err != nil {
		return
	}
	switch {
	case typ == TypeString:
		kv.Str = p.str(key, MaxStringLen)
	case typ == TypeArray:
		kv.ElemType = ValueType(p.u32(key + " element type"))
		n := p.u64(key + " array length")
		if p.err != nil {
			return
		}
		kv.Len = n
		if kv.ElemType == TypeArray {
			p.fail(key, kv.Offset, "arrays of arrays are not supported")
			return
		}
		if n > MaxArrayLen {
			p.fail(key+" array length", kv.Offset+4, "%d elements, more than the %d allowed", n, MaxArrayLen)
			return
		}
		if kv.ElemType == TypeString {
			if n*8 > p.left() {
				p.fail(key+" array length", kv.Offset+4, "%d strings cannot fit in the %d bytes left", n, p.left())
				return
			}
			// The vocabulary's tokens must be distinct: llama.cpp asserts
			// it (GGML_ASSERT(id_to_token.size() == token_to_id.size()))
			// and aborts the process otherwise. Hashes, not the strings,
			// are kept.
			var seen map[uint64]uint64
			var h maphash.Hash
			if key == "tokenizer.ggml.tokens" {
				seen = make(map[uint64]uint64, min(n, 1<<20))
				in.tokenSeed = maphash.MakeSeed()
				in.tokenHashes = seen
				h.SetSeed(in.tokenSeed)
			}
			for j := uint64(0); j < n && p.err == nil; j++ {
				at := p.pos
				l := p.u64(key)
				if p.err == nil && (l > MaxStringLen || l > p.left()) {
					p.fail(fmt.Sprintf("%s[%d] length", key, j), at, "%d bytes, but only %d are left in the file", l, p.left())
				}
				if seen == nil || p.err != nil {
					p.skip(key, l)
					continue
				}
				h.Reset()
				nw := nulWatch{w: &h}
				if _, err := io.CopyN(&nw, p.br, int64(l)); err != nil {
					p.err = err
					break
				}
				p.pos += int64(l)
				// llama.cpp reads tokens as C strings: a NUL would cut one
				// short, into a duplicate of another.
				if nw.nul {
					p.fail(fmt.Sprintf("%s[%d]", key, j), at, "the token contains a NUL byte")
					break
				}
				sum := h.Sum64()
				if first, dup := seen[sum]; dup {
					p.fail(fmt.Sprintf("%s[%d]", key, j), at, "the token repeats token %d", first)
					break
				}
				seen[sum] = j
			}
			break
		}
		es, ok := scalarSize[kv.ElemType]
		if !ok {
			p.fail(key+" element type", kv.Offset, "unknown value type %d", kv.ElemType)
			return
		}
		if n*es > p.left() { // n <= 2^28 and es <= 8: no overflow
			p.fail(key+" array length", kv.Offset+4, "%d elements of %d bytes cannot fit in the %d bytes left", n, es, p.left())
			return
		}
		if n > smallArray {
			p.skip(key, n*es)
			break
		}
		for j := uint64(0); j < n && p.err == nil; j++ {
			v := p.scalar(key, kv.ElemType)
			if isFloat(kv.ElemType) {
				kv.Floats = append(kv.Floats, v.Float)
			} else {
				kv.Ints = append(kv.Ints, v.IntValue())
			}
		}
	default:
		if _, ok := scalarSize[typ]; !ok {
			p.fail(key+" type", typAt, "unknown value type %d", typ)
			return
		}
		v := p.scalar(key, typ)
		kv.Uint, kv.Int, kv.Float = v.Uint, v.Int, v.Float
	}
	if p.err != nil {
		return
	}
	in.index[key] = len(in.KVs)
	in.KVs = append(in.KVs, kv)
}

// nulWatch passes bytes on and notes whether any was NUL.
type nulWatch struct {
	w   io.Writer
	nul bool
}

func (n *nulWatch) Write(p []byte) (int, error) {
	if !n.nul && bytes.IndexByte(p, 0) >= 0 {
		n.nul = true
	}
	return n.w.Write(p)
}

func isFloat(t ValueType) bool { return t == TypeFloat32 || t == TypeFloat64 }

func (p *checkReader) scalar(field string, t ValueType) KV {
	kv := KV{Type: t}
	b := p.bytes(field, int(scalarSize[t]))
	if b == nil {
		return kv
	}
	switch t {
	case TypeUint8, TypeBool:
		kv.Uint = uint64(b[0])
		if t == TypeBool && b[0] > 1 {
			p.fail(field, p.pos-1, "a bool must be 0 or 1, not %d", b[0])
		}
	case TypeInt8:
		kv.Int = int64(int8(b[0]))
	case TypeUint16:
		kv.Uint = uint64(binary.LittleEndian.Uint16(b))
	case TypeInt16:
		kv.Int = int64(int16(binary.LittleEndian.Uint16(b)))
	case TypeUint32:
		kv.Uint = uint64(binary.LittleEndian.Uint32(b))
	case TypeInt32:
		kv.Int = int64(int32(binary.LittleEndian.Uint32(b)))
	case TypeUint64:
		kv.Uint = binary.LittleEndian.Uint64(b)
	case TypeInt64:
		kv.Int = int64(binary.LittleEndian.Uint64(b))
	case TypeFloat32:
		kv.Float = float64(math.Float32frombits(binary.LittleEndian.Uint32(b)))
	case TypeFloat64:
		kv.Float = math.Float64frombits(binary.LittleEndian.Uint64(b))
	}
	return kv
}

func (p *checkReader) readTensorInfo(i uint64) TensorInfo {
	t := TensorInfo{InfoOffset: p.pos}
	field := fmt.Sprintf("tensor %d name", i)
	t.Name = p.str(field, MaxTensorName)
	if p.err != nil {
		// Name the cause in the format's terms: a name over GGML_MAX_NAME.
		return t
	}
	if t.Name == "" || !utf8.ValidString(t.Name) || strings.ContainsRune(t.Name, 0) {
		p.fail(field, t.InfoOffset, "the name is empty or not clean UTF-8 text")
		return t
	}
	field = "tensor " + t.Name
	dimsAt := p.pos
	nd := p.u32(field + " n_dims")
	if p.err != nil {
		return t
	}
	if nd == 0 || nd > MaxDims {
		p.fail(field+" n_dims", dimsAt, "%d dimensions; 1 to %d are allowed", nd, MaxDims)
		return t
	}
	elems := uint64(1)
	for d := uint32(0); d < nd; d++ {
		at := p.pos
		v := p.u64(field + " dims")
		if p.err != nil {
			return t
		}
		if v == 0 || v > math.MaxInt64 {
			p.fail(field+" dims", at, "dimension %d is %d", d, v)
			return t
		}
		hi, lo := bits.Mul64(elems, v)
		if hi != 0 || lo > math.MaxInt64 {
			p.fail(field+" dims", at, "the element count overflows 64 bits")
			return t
		}
		elems = lo
		t.Dims = append(t.Dims, v)
	}
	typeAt := p.pos
	t.Type = TensorType(p.u32(field + " type"))
	t.Offset = p.u64(field + " offset")
	if p.err != nil {
		return t
	}
	tr, ok := typeTraits[t.Type]
	if !ok {
		p.fail(field+" type", typeAt, "unknown or retired ggml type %d", t.Type)
		return t
	}
	if t.Dims[0]%tr[0] != 0 {
		p.fail(field+" dims", dimsAt+4, "row length %d is not a multiple of the type's block of %d", t.Dims[0], tr[0])
		return t
	}
	hi, lo := bits.Mul64(elems/tr[0], tr[1])
	if hi != 0 || lo > math.MaxInt64 {
		p.fail(field+" dims", dimsAt+4, "the data size overflows 64 bits")
		return t
	}
	t.Bytes = lo
	return t
}

// checkTensorPlacement requires every tensor's data to be aligned, inside
// the file and apart from every other tensor's.
func (in *Info) checkTensorPlacement() error {
	data := uint64(in.Size - in.DataOffset)
	if in.Size < in.DataOffset {
		data = 0
	}
	order := make([]int, len(in.Tensors))
	for i := range order {
		order[i] = i
	}
	for _, i := range order {
		t := in.Tensors[i]
		field := "tensor " + t.Name + " offset"
		at := t.InfoOffset // where its description starts
		if t.Offset%in.Alignment != 0 {
			return &Error{Field: field, Offset: at, Reason: fmt.Sprintf("%d is not a multiple of the alignment %d", t.Offset, in.Alignment)}
		}
		if t.Offset > data || t.Bytes > data-t.Offset {
			return &Error{Field: field, Offset: at, Reason: fmt.Sprintf("%d bytes at offset %d run past the end of the %d bytes of tensor data in the file",
				t.Bytes, t.Offset, data)}
		}
	}
	sort.Slice(order, func(a, b int) bool { return in.Tensors[order[a]].Offset < in.Tensors[order[b]].Offset })
	for k := 1; k < len(order); k++ {
		prev, cur := in.Tensors[order[k-1]], in.Tensors[order[k]]
		if prev.Offset+prev.Bytes > cur.Offset {
			return &Error{Field: "tensor " + cur.Name + " offset", Offset: cur.InfoOffset,
				Reason: fmt.Sprintf("its data overlaps the data of tensor %s", prev.Name)}
		}
	}
	return nil
}

// hparamRange is the allowed range of one architecture hyper-parameter,
// named by its key without the "<arch>." prefix.
type hparamRange struct {
	key      string
	min, max int64
	required bool // llama.cpp refuses a model without it
}

var hparams = []hparamRange{
	{"block_count", 1, MaxLayers, true},
	{"context_length", 1, 1 << 27, false},
	{"embedding_length", 1, 1 << 18, false},
	{"feed_forward_length", 0, 1 << 20, false},
	{"attention.head_count", 0, 1 << 12, false},
	{"attention.head_count_kv", 0, 1 << 12, false},
	{"attention.key_length", 0, 1 << 14, false},
	{"attention.value_length", 0, 1 << 14, false},
	{"rope.dimension_count", 0, 1 << 14, false},
	{"expert_count", 0, MaxExperts, false},
	{"expert_used_count", 0, MaxExperts, false},
	{"vocab_size", 1, MaxVocab, false},
}

var blockTensor = regexp.MustCompile(`^blk\.(\d+)\.`)

// tokenIDKeys end the keys of special token ids (tokenizer.ggml.*_token_id).
const tokenIDSuffix = "_token_id"

// CheckModel checks what a model loader trusts beyond the structure: the
// architecture's hyper-parameters (ranges above; per-layer arrays need one
// value per layer), finite floating-point settings, the tokenizer's arrays
// (same length as the vocabulary) and special token ids inside it, the
// embedding matrix against the embedding width and vocabulary, and tensor
// names of layers the model does not have. An architecture's keys are only
// checked when general.architecture is present.
func (in *Info) CheckModel() error {
	arch := in.Architecture()
	if kv, ok := in.Get("general.architecture"); ok && (kv.Type != TypeString || arch == "" || len(arch) > 64) {
		return &Error{Field: "general.architecture", Offset: kv.Offset, Reason: "must be a short non-empty string"}
	}
	var layers int64 = -1
	if arch != "" {
		for _, h := range hparams {
			key := arch + "." + h.key
			kv, ok := in.Get(key)
			if !ok {
				continue
			}
			if kv.Type == TypeArray {
				if kv.ElemType == TypeString || isFloat(kv.ElemType) || kv.Len > smallArray {
					return &Error{Field: key, Offset: kv.Offset, Reason: "must be an integer or a short array of integers"}
				}
				for j, v := range kv.Ints {
					if v < h.min || v > h.max {
						return &Error{Field: fmt.Sprintf("%s[%d]", key, j), Offset: kv.Offset,
							Reason: fmt.Sprintf("%d is outside %d to %d", v, h.min, h.max)}
					}
				}
				continue
			}
			if !kv.IsInt() {
				return &Error{Field: key, Offset: kv.Offset, Reason: "must be an integer"}
			}
			if v := kv.IntValue(); v < h.min || v > h.max {
				return &Error{Field: key, Offset: kv.Offset, Reason: fmt.Sprintf("%d is outside %d to %d", v, h.min, h.max)}
			}
		}
		if kv, ok := in.Get(arch + ".block_count"); ok && kv.Type != TypeArray {
			layers = kv.IntValue()
		}
		// Per-layer arrays must have one value per layer.
		for _, h := range hparams {
			key := arch + "." + h.key
			if kv, ok := in.Get(key); ok && kv.Type == TypeArray && layers > 0 && int64(kv.Len) != layers && h.key != "block_count" {
				return &Error{Field: key, Offset: kv.Offset, Reason: fmt.Sprintf("%d values for %d layers", kv.Len, layers)}
			}
		}
		hc, okH := in.Get(arch + ".attention.head_count")
		if okH && hc.Type != TypeArray && hc.IntValue() == 0 {
			for _, t := range in.Tensors {
				if strings.Contains(t.Name, ".attn_q.") || strings.Contains(t.Name, ".attn_qkv.") {
					return &Error{Field: arch + ".attention.head_count", Offset: hc.Offset, Reason: "0, but the model has attention layers"}
				}
			}
		}
		hkv, okKV := in.Get(arch + ".attention.head_count_kv")
		if okH && okKV && hc.Type != TypeArray && hkv.Type != TypeArray {
			if h, k := hc.IntValue(), hkv.IntValue(); k > h || (k > 0 && h%k != 0) {
				return &Error{Field: arch + ".attention.head_count_kv", Offset: hkv.Offset,
					Reason: fmt.Sprintf("%d KV heads do not divide %d attention heads", k, h)}
			}
		}
		if ec, ok := in.Get(arch + ".expert_count"); ok {
			if eu, ok := in.Get(arch + ".expert_used_count"); ok && eu.IntValue() > ec.IntValue() {
				return &Error{Field: arch + ".expert_used_count", Offset: eu.Offset,
					Reason: fmt.Sprintf("%d experts used of %d", eu.IntValue(), ec.IntValue())}
			}
		}
		for _, kv := range in.KVs {
			if !strings.HasPrefix(kv.Key, arch+".") {
				continue
			}
			if isFloat(kv.Type) && (math.IsNaN(kv.Float) || math.IsInf(kv.Float, 0)) {
				return &Error{Field: kv.Key, Offset: kv.Offset, Reason: "not a finite number"}
			}
			// A norm's epsilon goes under a square root.
			if strings.HasSuffix(kv.Key, "_epsilon") && isFloat(kv.Type) && (kv.Float < 0 || kv.Float > 1) {
				return &Error{Field: kv.Key, Offset: kv.Offset, Reason: fmt.Sprintf("%g is outside 0 to 1", kv.Float)}
			}
			for _, f := range kv.Floats {
				if math.IsNaN(f) || math.IsInf(f, 0) {
					return &Error{Field: kv.Key, Offset: kv.Offset, Reason: "holds a value that is not a finite number"}
				}
			}
		}
	}

	// Tokenizer: arrays as long as the vocabulary, ids inside it.
	var vocab int64 = -1
	if kv, ok := in.Get("tokenizer.ggml.tokens"); ok {
		if kv.Type != TypeArray || kv.ElemType != TypeString || kv.Len == 0 || kv.Len > MaxVocab {
			return &Error{Field: "tokenizer.ggml.tokens", Offset: kv.Offset, Reason: fmt.Sprintf("must be an array of 1 to %d strings", MaxVocab)}
		}
		vocab = int64(kv.Len)
		// A SentencePiece vocabulary falls back to byte tokens for text it
		// has no piece for, looking them up with std::map::at: a missing
		// <0xXX> token ends the process with std::out_of_range.
		if m, ok := in.Get("tokenizer.ggml.model"); ok && m.Str == "llama" && in.tokenHashes != nil {
			for b := 0; b < 256; b++ {
				if t := fmt.Sprintf("<0x%02X>", b); !in.hasToken(t) {
					return &Error{Field: "tokenizer.ggml.tokens", Offset: kv.Offset,
						Reason: fmt.Sprintf("the SentencePiece vocabulary lacks the byte token %s that llama.cpp's byte fallback needs", t)}
				}
			}
		}
		for _, k := range []string{"tokenizer.ggml.scores", "tokenizer.ggml.token_type"} {
			if a, ok := in.Get(k); ok && (a.Type != TypeArray || int64(a.Len) != vocab) {
				return &Error{Field: k, Offset: a.Offset, Reason: fmt.Sprintf("%d values for %d tokens", a.Len, vocab)}
			}
		}
		if arch != "" {
			if vs, ok := in.Get(arch + ".vocab_size"); ok && vs.Type != TypeArray && vs.IntValue() != vocab {
				return &Error{Field: arch + ".vocab_size", Offset: vs.Offset, Reason: fmt.Sprintf("%d, but the vocabulary has %d tokens", vs.IntValue(), vocab)}
			}
		}
		for _, kv := range in.KVs {
			if !strings.HasPrefix(kv.Key, "tokenizer.ggml.") || !strings.HasSuffix(kv.Key, tokenIDSuffix) {
				continue
			}
			if kv.Type == TypeArray || !kv.IsInt() {
				return &Error{Field: kv.Key, Offset: kv.Offset, Reason: "must be an integer token id"}
			}
			// -1 (as int32 or all ones) means "none" in llama.cpp.
			if v := kv.IntValue(); v != -1 && !(kv.Type == TypeUint32 && kv.Uint == math.MaxUint32) && (v < 0 || v >= vocab) {
				return &Error{Field: kv.Key, Offset: kv.Offset, Reason: fmt.Sprintf("token id %d is outside the vocabulary of %d tokens", v, vocab)}
			}
		}
	}

	for _, t := range in.Tensors {
		if m := blockTensor.FindStringSubmatch(t.Name); m != nil && layers > 0 {
			if n, err := strconv.ParseInt(m[1], 10, 64); err != nil || n >= layers {
				return &Error{Field: "tensor " + t.Name, Offset: t.InfoOffset,
					Reason: fmt.Sprintf("a tensor of layer %s, but %s.block_count is %d", m[1], arch, layers)}
			}
		}
		if t.Name == "token_embd.weight" && arch != "" {
			if e, ok := in.Get(arch + ".embedding_length"); ok && e.Type != TypeArray && len(t.Dims) >= 1 && int64(t.Dims[0]) != e.IntValue() {
				return &Error{Field: "tensor token_embd.weight dims", Offset: t.InfoOffset,
					Reason: fmt.Sprintf("rows of %d, but %s.embedding_length is %d", t.Dims[0], arch, e.IntValue())}
			}
			if vocab > 0 && len(t.Dims) >= 2 && int64(t.Dims[1]) != vocab {
				return &Error{Field: "tensor token_embd.weight dims", Offset: t.InfoOffset,
					Reason: fmt.Sprintf("%d token rows, but the vocabulary has %d tokens", t.Dims[1], vocab)}
			}
		}
	}
	return nil
}

// CheckLLM is Check for a file a text-generation engine will load: it also
// requires general.architecture, <arch>.block_count, a vocabulary and at
// least one tensor, which llama.cpp needs and would otherwise meet in an
// assertion or an exception.
func CheckLLM(r io.ReaderAt, size int64) (*Info, error) {
	in, err := Check(r, size)
	if err != nil {
		return nil, err
	}
	arch := in.Architecture()
	switch {
	case arch == "":
		return nil, &Error{Field: "general.architecture", Offset: -1, Reason: "missing; a language model names its architecture"}
	case len(in.Tensors) == 0:
		return nil, &Error{Field: "header.tensor_count", Offset: 8, Reason: "the file holds no tensors"}
	}
	if _, ok := in.Get(arch + ".block_count"); !ok {
		return nil, &Error{Field: arch + ".block_count", Offset: -1, Reason: "missing"}
	}
	if _, ok := in.Get("tokenizer.ggml.tokens"); !ok {
		return nil, &Error{Field: "tokenizer.ggml.tokens", Offset: -1, Reason: "missing; a language model carries its vocabulary"}
	}
	for _, t := range in.Tensors {
		if !llmTypes[t.Type] {
			return nil, &Error{Field: "tensor " + t.Name + " type", Offset: t.InfoOffset,
				Reason: fmt.Sprintf("ggml type %d is not a weight type llama.cpp computes with", t.Type)}
		}
		if len(t.Name) > MaxLLMName {
			return nil, &Error{Field: "tensor " + t.Name[:MaxLLMName] + "… name", Offset: t.InfoOffset,
				Reason: fmt.Sprintf("%d bytes, more than the %d llama.cpp allows", len(t.Name), MaxLLMName)}
		}
	}
	return in, nil
}

// llmTypes are the tensor types llama.cpp's matrix and element-wise ops take
// as weights: the float types and the storage quantisations. Q8_1 and Q8_K
// exist only as ggml's internal dot-product partners, and the integer and
// F64 types have no kernels for a model's ops; as weights they made llama.cpp
// crash inside its compute graph (found by mutating the tiny model's types).
var llmTypes = map[TensorType]bool{
	0: true, 1: true, 2: true, 3: true, 6: true, 7: true, 8: true,
	10: true, 11: true, 12: true, 13: true, 14: true,
	16: true, 17: true, 18: true, 19: true, 20: true, 21: true, 22: true, 23: true,
	29: true, 30: true, 34: true, 35: true, 39: true,
}

// CheckLLMFile is CheckLLM for the file at path.
func CheckLLMFile(path string) (*Info, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	return CheckLLM(f, st.Size())
}

// IsFormatError reports whether err is a failed check (not an I/O error).
func IsFormatError(err error) bool {
	var e *Error
	return errors.As(err, &e)
}
