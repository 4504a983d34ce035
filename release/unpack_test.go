package release

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ulikunitz/xz"
)

// entry is one archive member for the test builders.
type entry struct {
	name string
	kind byte // tar type flag
	body string
	link string
	mode int64
}

func file(name, body string) entry {
	return entry{name: name, kind: tar.TypeReg, body: body, mode: 0o644}
}

func writeTarXZ(t *testing.T, dir string, es ...entry) string {
	t.Helper()
	var buf bytes.Buffer
	zw, err := xz.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(zw)
	for _, e := range es {
		h := &tar.Header{Name: e.name, Typeflag: e.kind, Mode: e.mode, Linkname: e.link, Format: tar.FormatPAX}
		if e.kind == tar.TypeXGlobalHeader {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeXGlobalHeader, PAXRecords: map[string]string{"comment": e.body}}); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if e.kind == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if h.Mode == 0 {
			h.Mode = 0o755
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.kind == tar.TypeReg {
			tw.Write([]byte(e.body))
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "pack.tar.xz")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func writeZip(t *testing.T, dir string, es ...entry) string {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range es {
		h := &zip.FileHeader{Name: e.name, Method: zip.Deflate}
		switch e.kind {
		case tar.TypeDir:
			h.SetMode(fs.ModeDir | 0o755)
		case tar.TypeSymlink:
			h.SetMode(fs.ModeSymlink | 0o777)
			e.body = e.link
		case tar.TypeFifo:
			h.SetMode(fs.ModeNamedPipe | 0o644)
		default:
			h.SetMode(fs.FileMode(e.mode))
		}
		w, err := zw.CreateHeader(h)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(e.body))
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "pack.zip")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestUnpackTarXZ(t *testing.T) {
	src := t.TempDir()
	arch := writeTarXZ(t, src,
		entry{name: "pax_global_header", kind: tar.TypeXGlobalHeader, body: "made by a test"},
		entry{name: "lib/", kind: tar.TypeDir},
		file("lib/libllama.v0.5.0.so", "llama"),
		entry{name: "lib/libllama.so", kind: tar.TypeSymlink, link: "libllama.v0.5.0.so"},
		entry{name: "bin/tool", kind: tar.TypeReg, body: "#!/bin/sh\n", mode: 0o755},
		entry{name: "lib/copy.so", kind: tar.TypeLink, link: "lib/libllama.v0.5.0.so"},
		file("./README", "hello"),
	)
	out := filepath.Join(t.TempDir(), "runtimes", "linux-x64")
	if err := Unpack(arch, "tar.xz", out); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(out, "lib", "libllama.so")); err != nil || string(b) != "llama" {
		t.Fatalf("through the link: %q %v", b, err)
	}
	if b, _ := os.ReadFile(filepath.Join(out, "lib", "copy.so")); string(b) != "llama" {
		t.Fatalf("hard link: %q", b)
	}
	if st, _ := os.Stat(filepath.Join(out, "bin", "tool")); st.Mode().Perm() != 0o755 {
		t.Fatalf("tool mode %v", st.Mode())
	}
	if st, _ := os.Stat(filepath.Join(out, "README")); st.Mode().Perm() != 0o644 {
		t.Fatalf("README mode %v", st.Mode())
	}
	onlyFiles(t, filepath.Dir(out), "linux-x64")

	// A second pack replaces the first as a whole.
	arch2 := writeTarXZ(t, src, file("new", "2"))
	if err := Unpack(arch2, "tar.xz", out); err != nil {
		t.Fatal(err)
	}
	onlyFiles(t, out, "new")
	onlyFiles(t, filepath.Dir(out), "linux-x64")
}

func TestUnpackZip(t *testing.T) {
	src := t.TempDir()
	arch := writeZip(t, src,
		entry{name: "win-x64/", kind: tar.TypeDir},
		entry{name: "win-x64/llama.dll", body: "dll", mode: 0o644},
		entry{name: "win-x64/alias.dll", kind: tar.TypeSymlink, link: "llama.dll"},
	)
	out := filepath.Join(t.TempDir(), "rt")
	if err := Unpack(arch, "zip", out); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(out, "win-x64", "alias.dll")); string(b) != "dll" {
		t.Fatalf("zip content %q", b)
	}
}

func TestUnpackRefuses(t *testing.T) {
	big := strings.Repeat("z", 2000)
	cases := []struct {
		name   string
		format string
		es     []entry
		lim    Limits
		want   error
		line   string
	}{
		{"dot-dot", "tar.xz", []entry{file("ok", "1"), file("../escape", "x")}, DefaultLimits, ErrUnsafeArchive, `climbs out`},
		{"dot-dot inside", "tar.xz", []entry{file("a/../../escape", "x")}, DefaultLimits, ErrUnsafeArchive, `climbs out`},
		{"absolute", "tar.xz", []entry{file("/etc/cron.d/x", "x")}, DefaultLimits, ErrUnsafeArchive, "absolute"},
		{"windows drive", "tar.xz", []entry{file("C:/Windows/x", "x")}, DefaultLimits, ErrUnsafeArchive, "absolute"},
		{"backslash", "tar.xz", []entry{file(`..\..\x`, "x")}, DefaultLimits, ErrUnsafeArchive, "backslash"},
		{"symlink escape", "tar.xz", []entry{{name: "lib", kind: tar.TypeSymlink, link: "../../etc"}}, DefaultLimits, ErrUnsafeArchive, "outside its folder"},
		{"symlink absolute", "tar.xz", []entry{{name: "lib", kind: tar.TypeSymlink, link: "/etc"}}, DefaultLimits, ErrUnsafeArchive, "absolute path"},
		// a -> "." is harmless alone, but b -> "a/.." would then leave dir:
		// any ".." in a target is refused.
		{"symlink chain", "tar.xz", []entry{{name: "a", kind: tar.TypeSymlink, link: "."}, {name: "b", kind: tar.TypeSymlink, link: "a/.."}}, DefaultLimits, ErrUnsafeArchive, "outside its folder"},
		{"hard link outside", "tar.xz", []entry{{name: "h", kind: tar.TypeLink, link: "../../etc/passwd"}}, DefaultLimits, ErrUnsafeArchive, "climbs out"},
		{"hard link to nothing", "tar.xz", []entry{{name: "h", kind: tar.TypeLink, link: "later"}}, DefaultLimits, ErrUnsafeArchive, "not an earlier file"},
		{"character device", "tar.xz", []entry{{name: "null", kind: tar.TypeChar}}, DefaultLimits, ErrUnsafeArchive, "character device"},
		{"fifo", "tar.xz", []entry{{name: "p", kind: tar.TypeFifo}}, DefaultLimits, ErrUnsafeArchive, "FIFO"},
		{"duplicate", "tar.xz", []entry{file("x", "1"), file("x", "2")}, DefaultLimits, ErrUnsafeArchive, "twice"},
		{"too big", "tar.xz", []entry{file("a", big), file("b", big)}, Limits{MaxBytes: 3000, MaxFiles: 10}, ErrTooLarge, "passes 3000 bytes"},
		{"too many entries", "tar.xz", []entry{file("a", "1"), file("b", "1"), file("c", "1")}, Limits{MaxBytes: 3000, MaxFiles: 2}, ErrTooLarge, "more than 2 entries"},
		{"zip dot-dot", "zip", []entry{{name: "../escape", body: "x", mode: 0o644}}, DefaultLimits, ErrUnsafeArchive, "climbs out"},
		{"zip symlink escape", "zip", []entry{{name: "l", kind: tar.TypeSymlink, link: "../../etc"}}, DefaultLimits, ErrUnsafeArchive, "outside its folder"},
		{"zip fifo", "zip", []entry{{name: "p", kind: tar.TypeFifo}}, DefaultLimits, ErrUnsafeArchive, "special file"},
		{"zip too big", "zip", []entry{{name: "a", body: big, mode: 0o644}}, Limits{MaxBytes: 1000, MaxFiles: 10}, ErrTooLarge, "limit 1000"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src := t.TempDir()
			var arch string
			if c.format == "zip" {
				arch = writeZip(t, src, c.es...)
			} else {
				arch = writeTarXZ(t, src, c.es...)
			}
			parent := t.TempDir()
			out := filepath.Join(parent, "rt")
			// What was there before must survive.
			if err := os.MkdirAll(out, 0o755); err != nil {
				t.Fatal(err)
			}
			os.WriteFile(filepath.Join(out, "old"), []byte("keep"), 0o644)
			err := UnpackLimits(arch, c.format, out, c.lim)
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.line) {
				t.Fatalf("Unpack = %v; want %v saying %q", err, c.want, c.line)
			}
			onlyFiles(t, parent, "rt")
			onlyFiles(t, out, "old")
		})
	}
}

func TestUnpackNotAnArchive(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "junk")
	os.WriteFile(p, []byte("this is not an archive"), 0o644)
	for _, f := range []string{"tar.xz", "zip", "rar"} {
		err := Unpack(p, f, filepath.Join(dir, "out"))
		if err == nil {
			t.Fatalf("Unpack junk as %s succeeded", f)
		}
		if _, serr := os.Stat(filepath.Join(dir, "out")); !os.IsNotExist(serr) {
			t.Fatalf("%s: out was created", f)
		}
	}
	onlyFiles(t, dir, "junk")
}
