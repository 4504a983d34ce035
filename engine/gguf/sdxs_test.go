package gguf

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// The generated image model has exactly the tensors (names and shapes) that
// the pinned stable-diffusion.cpp loads for the tiny SDXS shape, as listed
// beside its build in ../shared/runtimes/sd/.
func TestSDXSTensorsMatchTheRuntimeList(t *testing.T) {
	list := filepath.Join("..", "..", "..", "shared", "runtimes", "sd", "tiny-sdxs-tensors.txt")
	f, err := os.Open(list)
	if err != nil {
		t.Skipf("needs the stable-diffusion.cpp build's tensor list (%s): %v", list, err)
	}
	defer f.Close()
	want := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		want[fields[0]] = strings.Join(fields[1:], " ")
	}
	got := map[string]string{}
	for _, tn := range TinySDXS().Tensors() {
		ne := []string{"1", "1", "1", "1"}
		for i, d := range tn.Dims {
			ne[i] = fmt.Sprint(d)
		}
		got[tn.Name] = strings.Join(ne, " ")
	}
	var problems []string
	for name, shape := range want {
		if g, ok := got[name]; !ok {
			problems = append(problems, "missing "+name)
		} else if g != shape {
			problems = append(problems, fmt.Sprintf("%s is %s, want %s", name, g, shape))
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			problems = append(problems, "unexpected "+name)
		}
	}
	sort.Strings(problems)
	if len(problems) > 0 {
		t.Fatalf("%d differences:\n%s", len(problems), strings.Join(problems, "\n"))
	}
	if len(want) != 610 {
		t.Fatalf("list has %d tensors, want 610", len(want))
	}
}

// prefixHash hashes the first n bytes written, then stops the writer.
type prefixHash struct {
	h    hash.Hash
	left int
}

var errEnough = errors.New("enough")

func (p *prefixHash) Write(b []byte) (int, error) {
	if len(b) > p.left {
		p.h.Write(b[:p.left])
		p.left = 0
		return 0, errEnough
	}
	p.h.Write(b)
	p.left -= len(b)
	return len(b), nil
}

func sdxsPrefix(t *testing.T, s SDXSSpec) []byte {
	t.Helper()
	p := &prefixHash{h: sha256.New(), left: 4 << 20}
	if err := s.Write(p); !errors.Is(err, errEnough) {
		t.Fatalf("write: %v", err)
	}
	return p.h.Sum(nil)
}

// The file parses as GGUF with every tensor, is about 40 MB, and is the
// same bytes for the same spec (its first 4 MB compared: the weights come
// from a generator seeded per tensor name) and other bytes for another seed.
func TestSDXSWrite(t *testing.T) {
	var a bytes.Buffer
	s := TinySDXS()
	if err := s.Write(&a); err != nil {
		t.Fatal(err)
	}
	if n := a.Len(); n < 30<<20 || n > 45<<20 {
		t.Fatalf("model is %d bytes, want about 40 MB", n)
	}
	p := parseFile(t, a.Bytes())
	if len(p.tensors) != len(s.Tensors()) {
		t.Fatalf("%d tensors parsed, %d written", len(p.tensors), len(s.Tensors()))
	}
	if _, err := Check(bytes.NewReader(a.Bytes()), int64(a.Len())); err != nil {
		t.Fatalf("the generated model fails the structure check: %v", err)
	}
	first := sdxsPrefix(t, s)
	if h := sha256.Sum256(a.Bytes()[:4<<20]); !bytes.Equal(first, h[:]) || !bytes.Equal(first, sdxsPrefix(t, s)) {
		t.Fatal("two writes of the same spec differ")
	}
	other := s
	other.Seed++
	if bytes.Equal(first, sdxsPrefix(t, other)) || other.FileName() == s.FileName() {
		t.Fatal("another seed gives the same model")
	}
}
