package engine

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/minisgg/studio-worker/engine/gguf"
)

// FileFormat names a file format recognised by its bytes.
type FileFormat string

const (
	FormatGGUF        FileFormat = "GGUF"
	FormatSafetensors FileFormat = "safetensors"
	FormatTorchZip    FileFormat = "PyTorch zip checkpoint"
	FormatPNG         FileFormat = "PNG"
	FormatJPEG        FileFormat = "JPEG"
	FormatWebP        FileFormat = "WebP"
)

// SniffHeadSize is how many leading bytes SniffFormat and DescribeContent
// need at most.
const SniffHeadSize = 512

// SniffFormat names the format of a file from its first bytes (12 suffice
// for every format here), or "" when it is none of them. Only signatures
// are compared: GGUF magic, the safetensors header length followed by '{',
// the zip local-header signature of PyTorch checkpoints, and the PNG, JPEG
// (SOI marker) and WebP (RIFF....WEBP) signatures.
func SniffFormat(head []byte) FileFormat {
	switch {
	case bytes.HasPrefix(head, []byte("GGUF")):
		return FormatGGUF
	case bytes.HasPrefix(head, []byte("\x89PNG\r\n\x1a\n")):
		return FormatPNG
	case bytes.HasPrefix(head, []byte{0xFF, 0xD8, 0xFF}):
		return FormatJPEG
	case len(head) >= 12 && string(head[:4]) == "RIFF" && string(head[8:12]) == "WEBP":
		return FormatWebP
	case bytes.HasPrefix(head, []byte("PK\x03\x04")):
		return FormatTorchZip
	case len(head) >= 9 && head[8] == '{' && binary.LittleEndian.Uint64(head) >= 2 && binary.LittleEndian.Uint64(head) <= maxSafetensorsHeader:
		return FormatSafetensors
	}
	return ""
}

// DescribeContent says in words what bytes that are not a recognised format
// look like, for an error message: a web page, a JSON or XML document, text,
// an empty file, or data of an unknown kind.
func DescribeContent(head []byte) string {
	if f := SniffFormat(head); f != "" {
		return "a " + string(f) + " file"
	}
	t := bytes.TrimLeft(head, " \t\r\n\ufeff")
	lower := strings.ToLower(string(t[:min(len(t), 64)]))
	switch {
	case len(head) == 0:
		return "an empty file"
	case strings.HasPrefix(lower, "<!doctype html") || strings.HasPrefix(lower, "<html") || strings.Contains(lower, "<head") || strings.Contains(lower, "<body"):
		return "a web page (HTML), perhaps a sign-in or error page"
	case strings.HasPrefix(lower, "<?xml") || strings.HasPrefix(lower, "<"):
		return "an XML or HTML document, perhaps an error page"
	case strings.HasPrefix(lower, "{") || strings.HasPrefix(lower, "["):
		return "a JSON document, perhaps an error message"
	case utf8.Valid(t) && !bytes.ContainsRune(t, 0):
		return "plain text"
	}
	return "data of an unknown kind"
}

// imageFormats are the input images the engines decode.
var imageFormats = []FileFormat{FormatPNG, FormatJPEG, FormatWebP}

// SniffImage checks that b starts like a PNG, JPEG or WebP image and
// returns which; otherwise the error says what the bytes look like.
func SniffImage(b []byte) (FileFormat, error) {
	f := SniffFormat(b)
	for _, ok := range imageFormats {
		if f == ok {
			return f, nil
		}
	}
	return "", fmt.Errorf("it is %s, not a PNG, JPEG or WebP image", DescribeContent(b))
}

// maxSafetensorsHeader is the safetensors format's own limit on its JSON
// header (100 MB, from the format's specification).
const maxSafetensorsHeader = 100_000_000

// safetensorsDtypeBytes are the element sizes of the safetensors dtypes.
var safetensorsDtypeBytes = map[string]uint64{
	"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
	"I16": 2, "U16": 2, "F16": 2, "BF16": 2,
	"I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}

// CheckSafetensors checks a safetensors file of size bytes: an 8-byte
// little-endian header length within the format's 100 MB limit and the
// file, a JSON object header whose tensors each have a known dtype, a shape
// and data_offsets [begin, end) that match the dtype and shape, lie inside
// the data section and do not overlap. Rules from the safetensors format
// specification (huggingface/safetensors, "Format").
func CheckSafetensors(r io.ReaderAt, size int64) error {
	var lenBuf [8]byte
	if size < 8 {
		return errors.New("the file is too short for a safetensors header")
	}
	if _, err := r.ReadAt(lenBuf[:], 0); err != nil {
		return err
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	if n < 2 || n > maxSafetensorsHeader || n > uint64(size-8) {
		return fmt.Errorf("the safetensors header length %d does not fit the file of %d bytes", n, size)
	}
	hdr := make([]byte, n)
	if _, err := r.ReadAt(hdr, 8); err != nil {
		return err
	}
	var entries map[string]json.RawMessage
	if err := json.Unmarshal(hdr, &entries); err != nil {
		return fmt.Errorf("the safetensors header is not a JSON object: %v", err)
	}
	data := uint64(size-8) - n
	type span struct {
		name       string
		begin, end uint64
	}
	var spans []span
	for name, raw := range entries {
		if name == "__metadata__" {
			continue
		}
		var t struct {
			Dtype   string   `json:"dtype"`
			Shape   []uint64 `json:"shape"`
			Offsets []uint64 `json:"data_offsets"`
		}
		if err := json.Unmarshal(raw, &t); err != nil {
			return fmt.Errorf("safetensors tensor %q: %v", name, err)
		}
		es, ok := safetensorsDtypeBytes[t.Dtype]
		if !ok {
			return fmt.Errorf("safetensors tensor %q: unknown dtype %q", name, t.Dtype)
		}
		if len(t.Offsets) != 2 || t.Offsets[0] > t.Offsets[1] || t.Offsets[1] > data {
			return fmt.Errorf("safetensors tensor %q: data_offsets %v are outside the %d bytes of data", name, t.Offsets, data)
		}
		want := es
		for _, d := range t.Shape {
			if d != 0 && want > data/d {
				return fmt.Errorf("safetensors tensor %q: shape %v is larger than the file", name, t.Shape)
			}
			want *= d
		}
		if want != t.Offsets[1]-t.Offsets[0] {
			return fmt.Errorf("safetensors tensor %q: shape %v of %s needs %d bytes, data_offsets give %d",
				name, t.Shape, t.Dtype, want, t.Offsets[1]-t.Offsets[0])
		}
		spans = append(spans, span{name, t.Offsets[0], t.Offsets[1]})
	}
	if len(spans) == 0 {
		return errors.New("the safetensors file holds no tensors")
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i].begin < spans[j].begin })
	for i := 1; i < len(spans); i++ {
		if spans[i].begin < spans[i-1].end {
			return fmt.Errorf("safetensors tensors %q and %q overlap", spans[i-1].name, spans[i].name)
		}
	}
	return nil
}

// modelFormats lists the formats a model file of engine and role may have:
// a llama.cpp model is GGUF; an sd.cpp file is GGUF or safetensors, or a
// PyTorch checkpoint when its name says so (.ckpt, .pt, .pth).
func modelFormats(eng EngineName, role FileRole, name string) []FileFormat {
	switch eng {
	case EngineLlamaCpp:
		return []FileFormat{FormatGGUF}
	case EngineSDCpp:
		switch strings.ToLower(filepath.Ext(name)) {
		case ".ckpt", ".pt", ".pth":
			return []FileFormat{FormatTorchZip}
		}
		return []FileFormat{FormatGGUF, FormatSafetensors}
	}
	// Another engine (or none given): judge by the file name.
	switch strings.ToLower(filepath.Ext(name)) {
	case ".gguf":
		return []FileFormat{FormatGGUF}
	case ".safetensors":
		return []FileFormat{FormatSafetensors}
	case ".png", ".jpg", ".jpeg", ".webp":
		return imageFormats
	}
	if role == RoleModel && eng == "" {
		return []FileFormat{FormatGGUF, FormatSafetensors}
	}
	return nil // a format this worker does not read itself: not judged
}

// CheckModelContent checks that the file at path is what a model file of
// this engine and role must be (see modelFormats), and, for GGUF and
// safetensors, that its structure is sound (gguf.Check, gguf.CheckLLM for
// llama.cpp, CheckSafetensors). A file that fails gets a *JobError naming
// the file and the field at fault; an I/O failure comes back as it is.
func CheckModelContent(path string, eng EngineName, role FileRole) error {
	return checkContentNamed(path, filepath.Base(path), eng, role)
}

// checkContentNamed is CheckModelContent for a file stored under another
// name (a .part file), judged by its final name.
func checkContentNamed(path, name string, eng EngineName, role FileRole) error {
	want := modelFormats(eng, role, name)
	if len(want) == 0 {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	head := make([]byte, SniffHeadSize)
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return err
	}
	head = head[:n]
	got := SniffFormat(head)
	ok := false
	for _, w := range want {
		ok = ok || got == w
	}
	if !ok {
		names := make([]string, len(want))
		for i, w := range want {
			names[i] = string(w)
		}
		return &JobError{Field: name, Reason: fmt.Sprintf("the file is %s, not a %s model file; the model link may need a sign-in or be wrong",
			DescribeContent(head), strings.Join(names, " or "))}
	}
	switch got {
	case FormatGGUF:
		check := gguf.Check
		if eng == EngineLlamaCpp {
			check = gguf.CheckLLM
		}
		if _, err := check(f, st.Size()); err != nil {
			if gguf.IsFormatError(err) {
				return &JobError{Field: name, Reason: "the GGUF file is malformed: " + err.Error(), Err: err}
			}
			return err
		}
	case FormatSafetensors:
		if err := CheckSafetensors(f, st.Size()); err != nil {
			return &JobError{Field: name, Reason: "the safetensors file is malformed: " + err.Error(), Err: err}
		}
	}
	return nil
}

// sniffPeek is how many first bytes of a download are looked at before the
// rest is fetched.
const sniffPeek = 16

// sniffAs refuses the first bytes of a download of f when they cannot start
// a model file of its engine and role (a *JobError, as CheckModelContent's).
func sniffAs(head []byte, f ModelFile, eng EngineName) error {
	want := modelFormats(eng, f.Role, f.Filename)
	if len(want) == 0 {
		return nil
	}
	got := SniffFormat(head)
	for _, w := range want {
		if got == w || (w == FormatSafetensors && got == "" && len(head) < 9) {
			return nil
		}
	}
	// A safetensors header is only recognised by its first 9 bytes with a
	// length that fits; anything else is judged on the whole file later.
	if got == "" && slices.Contains(want, FormatSafetensors) && len(head) >= 9 && head[8] == '{' {
		return nil
	}
	names := make([]string, len(want))
	for i, w := range want {
		names[i] = string(w)
	}
	return &JobError{Field: f.Filename, Reason: fmt.Sprintf("the model server sent %s, not a %s model file; the model link may need a sign-in or be wrong",
		DescribeContent(head), strings.Join(names, " or "))}
}
