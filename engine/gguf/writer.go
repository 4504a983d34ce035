// Package gguf writes GGUF v3 files and generates random-weight llama models
// with them, and checks GGUF files from elsewhere before a native library
// opens them (Check, CheckLLM in check.go). The writer is test-support code:
// no registry ships a GGUF model, so tests and benchmarks of any package make
// their own here, on demand, into a cache folder (see Ensure). Nothing it
// writes is ever committed.
//
// The format follows the GGUF specification (ggml's docs/gguf.md): a header
// (magic, version, counts), metadata key/value pairs, tensor descriptions,
// then the tensor data, each piece aligned to general.alignment.
package gguf

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
)

// Version is the GGUF format version this package writes.
const Version = 3

// Alignment is the data alignment written (the format's default).
const Alignment = 32

const magic = "GGUF"

// ValueType is a metadata value type of the GGUF format.
type ValueType uint32

const (
	TypeUint8   ValueType = 0
	TypeInt8    ValueType = 1
	TypeUint16  ValueType = 2
	TypeInt16   ValueType = 3
	TypeUint32  ValueType = 4
	TypeInt32   ValueType = 5
	TypeFloat32 ValueType = 6
	TypeBool    ValueType = 7
	TypeString  ValueType = 8
	TypeArray   ValueType = 9
	TypeUint64  ValueType = 10
	TypeInt64   ValueType = 11
	TypeFloat64 ValueType = 12
)

// TensorType is a ggml tensor element type. F32 and F16 are written from
// float values; TQ1_0 (ternary, 1.6875 bits a weight) only from raw blocks
// (RawTensor), which is enough for random weights. Quantising real weights
// is llama.cpp's job.
type TensorType uint32

const (
	F32 TensorType = 0
	F16 TensorType = 1
	// TQ1_0 is ggml's GGML_TYPE_TQ1_0: blocks of 256 weights in 54 bytes
	// (48 bytes of five base-3 digits each, 4 bytes of four each, then an
	// F16 scale d); every weight is -d, 0 or +d.
	TQ1_0 TensorType = 34
)

// TQ1_0 block geometry (ggml-common.h, block_tq1_0).
const (
	TQ1BlockWeights = 256
	TQ1BlockBytes   = 54
)

func (t TensorType) size() (int, error) {
	switch t {
	case F32:
		return 4, nil
	case F16:
		return 2, nil
	}
	return 0, fmt.Errorf("gguf: tensor type %d cannot be written from float values", t)
}

// dataSize is the byte size of count elements of t.
func (t TensorType) dataSize(count uint64) (uint64, error) {
	if t == TQ1_0 {
		if count%TQ1BlockWeights != 0 {
			return 0, fmt.Errorf("gguf: TQ1_0 needs a multiple of %d weights, got %d", TQ1BlockWeights, count)
		}
		return count / TQ1BlockWeights * TQ1BlockBytes, nil
	}
	n, err := t.size()
	return count * uint64(n), err
}

// FileType is the general.file_type value matching a tensor type (llama_ftype).
func (t TensorType) FileType() uint32 {
	if t == F16 {
		return 1
	}
	return 0
}

type kv struct {
	key   string
	typ   ValueType
	value any // scalar, string, or array (arrayValue)
}

type arrayValue struct {
	elem ValueType
	vals any // []string, []float32, []int32, []uint32
	n    int
}

// Filler streams one tensor's elements, in ggml order (the first dimension
// varies fastest), as float32 values; the writer converts them to the
// tensor's type. It must call put exactly n times.
type Filler func(n int, put func(float32)) error

// RawFiller streams one tensor's data as the type's bytes; together the
// calls to put must give exactly size bytes.
type RawFiller func(size int, put func([]byte)) error

type tensor struct {
	name string
	typ  TensorType
	dims []uint64
	fill Filler
	raw  RawFiller
}

func (t tensor) count() uint64 {
	n := uint64(1)
	for _, d := range t.dims {
		n *= d
	}
	return n
}

// Builder collects metadata and tensors, then writes the file in one pass.
// Tensor data is produced by fillers while writing, so a model far larger
// than memory can be written.
type Builder struct {
	kvs     []kv
	tensors []tensor
	err     error
	names   map[string]bool
}

// NewBuilder returns an empty builder.
func NewBuilder() *Builder { return &Builder{names: map[string]bool{}} }

func (b *Builder) add(key string, typ ValueType, v any) {
	if b.names["kv:"+key] {
		b.setErr(fmt.Errorf("gguf: metadata key %q given twice", key))
		return
	}
	b.names["kv:"+key] = true
	b.kvs = append(b.kvs, kv{key: key, typ: typ, value: v})
}

func (b *Builder) setErr(err error) {
	if b.err == nil {
		b.err = err
	}
}

func (b *Builder) String(key, v string)        { b.add(key, TypeString, v) }
func (b *Builder) Uint32(key string, v uint32) { b.add(key, TypeUint32, v) }
func (b *Builder) Int32(key string, v int32)   { b.add(key, TypeInt32, v) }
func (b *Builder) Uint64(key string, v uint64) { b.add(key, TypeUint64, v) }
func (b *Builder) Float32(key string, v float32) {
	b.add(key, TypeFloat32, v)
}
func (b *Builder) Bool(key string, v bool) { b.add(key, TypeBool, v) }

// Strings adds an array of strings.
func (b *Builder) Strings(key string, v []string) {
	b.add(key, TypeArray, arrayValue{elem: TypeString, vals: v, n: len(v)})
}

// Float32s adds an array of float32.
func (b *Builder) Float32s(key string, v []float32) {
	b.add(key, TypeArray, arrayValue{elem: TypeFloat32, vals: v, n: len(v)})
}

// Int32s adds an array of int32.
func (b *Builder) Int32s(key string, v []int32) {
	b.add(key, TypeArray, arrayValue{elem: TypeInt32, vals: v, n: len(v)})
}

// Tensor adds a tensor. dims are in ggml order: dims[0] is the row length.
func (b *Builder) Tensor(name string, typ TensorType, dims []uint64, fill Filler) {
	if _, err := typ.size(); err != nil {
		b.setErr(err)
		return
	}
	b.addTensor(tensor{name: name, typ: typ, dims: append([]uint64(nil), dims...), fill: fill})
}

// RawTensor adds a tensor whose data is given as the type's own bytes
// (for TQ1_0: whole blocks; dims[0] must be a multiple of 256).
func (b *Builder) RawTensor(name string, typ TensorType, dims []uint64, raw RawFiller) {
	if len(dims) > 0 && typ == TQ1_0 && dims[0]%TQ1BlockWeights != 0 {
		b.setErr(fmt.Errorf("gguf: tensor %q: TQ1_0 rows must be a multiple of %d weights", name, TQ1BlockWeights))
		return
	}
	b.addTensor(tensor{name: name, typ: typ, dims: append([]uint64(nil), dims...), raw: raw})
}

func (b *Builder) addTensor(t tensor) {
	name, dims := t.name, t.dims
	if len(dims) == 0 || len(dims) > 4 {
		b.setErr(fmt.Errorf("gguf: tensor %q has %d dimensions (1 to 4 allowed)", name, len(dims)))
		return
	}
	if b.names["t:"+name] {
		b.setErr(fmt.Errorf("gguf: tensor %q given twice", name))
		return
	}
	b.names["t:"+name] = true
	b.tensors = append(b.tensors, t)
}

// countingWriter tracks the offset so padding can be computed without Seek.
type countingWriter struct {
	w   *bufio.Writer
	n   int64
	err error
}

func (c *countingWriter) write(p []byte) {
	if c.err != nil {
		return
	}
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.err = err
}

func (c *countingWriter) u32(v uint32) {
	var buf [4]byte
	binary.LittleEndian.PutUint32(buf[:], v)
	c.write(buf[:])
}

func (c *countingWriter) u64(v uint64) {
	var buf [8]byte
	binary.LittleEndian.PutUint64(buf[:], v)
	c.write(buf[:])
}

func (c *countingWriter) str(s string) {
	c.u64(uint64(len(s)))
	c.write([]byte(s))
}

func (c *countingWriter) pad() {
	if r := c.n % Alignment; r != 0 {
		c.write(make([]byte, Alignment-r))
	}
}

func (c *countingWriter) scalar(typ ValueType, v any) error {
	switch typ {
	case TypeString:
		c.str(v.(string))
	case TypeUint32:
		c.u32(v.(uint32))
	case TypeInt32:
		c.u32(uint32(v.(int32)))
	case TypeUint64:
		c.u64(v.(uint64))
	case TypeFloat32:
		c.u32(math.Float32bits(v.(float32)))
	case TypeBool:
		if v.(bool) {
			c.write([]byte{1})
		} else {
			c.write([]byte{0})
		}
	default:
		return fmt.Errorf("gguf: cannot write value type %d", typ)
	}
	return nil
}

// WriteTo writes the whole file.
func (b *Builder) WriteTo(w io.Writer) (int64, error) {
	if b.err != nil {
		return 0, b.err
	}
	c := &countingWriter{w: bufio.NewWriterSize(w, 1<<20)}
	c.write([]byte(magic))
	c.u32(Version)
	c.u64(uint64(len(b.tensors)))
	c.u64(uint64(len(b.kvs)))
	for _, e := range b.kvs {
		c.str(e.key)
		c.u32(uint32(e.typ))
		if e.typ != TypeArray {
			if err := c.scalar(e.typ, e.value); err != nil {
				return c.n, err
			}
			continue
		}
		a := e.value.(arrayValue)
		c.u32(uint32(a.elem))
		c.u64(uint64(a.n))
		switch vals := a.vals.(type) {
		case []string:
			for _, s := range vals {
				c.str(s)
			}
		case []float32:
			for _, f := range vals {
				c.u32(math.Float32bits(f))
			}
		case []int32:
			for _, i := range vals {
				c.u32(uint32(i))
			}
		default:
			return c.n, fmt.Errorf("gguf: %s: unsupported array", e.key)
		}
	}
	// Tensor infos carry offsets relative to the aligned start of the data.
	var off uint64
	for _, t := range b.tensors {
		c.str(t.name)
		c.u32(uint32(len(t.dims)))
		for _, d := range t.dims {
			c.u64(d)
		}
		c.u32(uint32(t.typ))
		c.u64(off)
		size, err := t.typ.dataSize(t.count())
		if err != nil {
			return c.n, fmt.Errorf("gguf: tensor %s: %w", t.name, err)
		}
		off += alignUp(size)
	}
	c.pad()
	for _, t := range b.tensors {
		if err := c.tensorData(t); err != nil {
			return c.n, err
		}
		c.pad()
	}
	if c.err == nil {
		c.err = c.w.Flush()
	}
	return c.n, c.err
}

func (c *countingWriter) tensorData(t tensor) error {
	if t.raw != nil {
		size, err := t.typ.dataSize(t.count())
		if err != nil {
			return err
		}
		var got uint64
		put := func(p []byte) {
			got += uint64(len(p))
			c.write(p)
		}
		if err := t.raw(int(size), put); err != nil {
			return fmt.Errorf("gguf: tensor %s: %w", t.name, err)
		}
		if got != size {
			return fmt.Errorf("gguf: tensor %s: filler wrote %d of %d bytes", t.name, got, size)
		}
		return c.err
	}
	want := t.count()
	var got uint64
	var buf [4]byte
	put := func(f float32) {
		got++
		if t.typ == F16 {
			binary.LittleEndian.PutUint16(buf[:2], Float16(f))
			c.write(buf[:2])
			return
		}
		binary.LittleEndian.PutUint32(buf[:], math.Float32bits(f))
		c.write(buf[:])
	}
	if err := t.fill(int(want), put); err != nil {
		return fmt.Errorf("gguf: tensor %s: %w", t.name, err)
	}
	if got != want {
		return fmt.Errorf("gguf: tensor %s: filler wrote %d of %d values", t.name, got, want)
	}
	return c.err
}

func alignUp(n uint64) uint64 {
	return (n + Alignment - 1) / Alignment * Alignment
}

// Float16 converts to IEEE 754 half precision, rounding to nearest even.
func Float16(f float32) uint16 {
	bits := math.Float32bits(f)
	sign := uint16(bits>>16) & 0x8000
	exp := int32(bits>>23&0xff) - 127 + 15
	mant := bits & 0x7fffff
	switch {
	case bits&0x7fffffff > 0x7f800000: // NaN
		return sign | 0x7e00
	case exp >= 0x1f: // overflow or infinity
		return sign | 0x7c00
	case exp <= 0: // subnormal half, or zero
		if exp < -10 {
			return sign
		}
		mant |= 0x800000
		shift := uint32(14 - exp)
		half := uint16(mant >> shift)
		rem := mant & (1<<shift - 1)
		mid := uint32(1) << (shift - 1)
		if rem > mid || (rem == mid && half&1 == 1) {
			half++
		}
		return sign | half
	}
	half := sign | uint16(exp)<<10 | uint16(mant>>13)
	rem := mant & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && half&1 == 1) {
		half++ // a carry into the exponent is still the right rounding
	}
	return half
}
