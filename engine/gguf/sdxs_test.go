package gguf

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
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

// The file is deterministic, parses as GGUF, and every tensor's data lies
// inside it.
func TestSDXSWriteDeterministic(t *testing.T) {
	if testing.Short() {
		t.Skip("writes two 36 MB models")
	}
	var a, b bytes.Buffer
	s := TinySDXS()
	if err := s.Write(&a); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(&b); err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(a.Bytes()) != sha256.Sum256(b.Bytes()) {
		t.Fatal("two writes of the same spec differ")
	}
	if n := a.Len(); n < 30<<20 || n > 40<<20 {
		t.Fatalf("model is %d bytes, want about 36 MB", n)
	}
	p := parseFile(t, a.Bytes())
	if len(p.tensors) != len(s.Tensors()) {
		t.Fatalf("%d tensors parsed, %d written", len(p.tensors), len(s.Tensors()))
	}
	other := s
	other.Seed++
	var c bytes.Buffer
	if err := other.Write(&c); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a.Bytes(), c.Bytes()) || other.FileName() == s.FileName() {
		t.Fatal("another seed gives the same model")
	}
}
