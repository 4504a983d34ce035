package release

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/ulikunitz/xz"
)

// Limits bound what Unpack extracts.
type Limits struct {
	MaxBytes int64 // total size of the extracted files, bytes
	MaxFiles int   // number of entries (files, folders, links)
}

// DefaultLimits fit the largest runtime pack (llama.cpp's CUDA build, a few
// hundred MB) with room to spare.
var DefaultLimits = Limits{MaxBytes: 4 << 30, MaxFiles: 10000}

// Unpack extracts a verified archive (format "tar.xz" or "zip") into dir
// with DefaultLimits; see UnpackLimits.
func Unpack(archive, format, dir string) error {
	return UnpackLimits(archive, format, dir, DefaultLimits)
}

// UnpackLimits extracts archive into dir atomically: everything goes into a
// sibling temp folder first, which is renamed to dir only when the whole
// archive extracted cleanly; a dir that already exists is moved aside,
// replaced, then removed (and put back if the replacement fails). On any
// error dir is left as it was and the temp folder is removed.
//
// Entries may be folders, regular files (mode 0755 when any execute bit is
// set, else 0644) and symbolic links whose target is relative and has no
// ".." (a link can only point at or below its own folder, so no chain of
// links leaves dir). Refused with ErrUnsafeArchive: absolute names, names
// with ".." or a backslash, links that could leave dir, hard links to
// anything but an earlier file, devices, FIFOs, a name that appears twice.
// Refused with ErrTooLarge: more than lim.MaxBytes of content or
// lim.MaxFiles entries. Writes go through an os.Root on the temp folder, so
// even a missed case cannot write outside it.
func UnpackLimits(archive, format, dir string, lim Limits) (err error) {
	dir = filepath.Clean(dir)
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dir)+".unpack-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	root, err := os.OpenRoot(tmp)
	if err != nil {
		return err
	}
	x := &extractor{root: root, lim: lim, seen: map[string]bool{}}
	switch format {
	case "tar.xz":
		err = x.tarXZ(archive)
	case "zip":
		err = x.zip(archive)
	default:
		err = fmt.Errorf("unknown archive format %q (want tar.xz or zip)", format)
	}
	if cerr := root.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("unpack %s: %w", filepath.Base(archive), err)
	}
	return replaceDir(tmp, dir)
}

// replaceDir renames tmp to dir, moving an existing dir aside first and
// restoring it when the rename fails.
func replaceDir(tmp, dir string) error {
	var old string
	if _, err := os.Lstat(dir); err == nil {
		old = tmp + ".old"
		if err := os.Rename(dir, old); err != nil {
			return fmt.Errorf("moving the old %s aside: %w", dir, err)
		}
	}
	if err := os.Rename(tmp, dir); err != nil {
		if old != "" {
			_ = os.Rename(old, dir)
		}
		return err
	}
	syncDir(filepath.Dir(dir))
	if old != "" {
		_ = os.RemoveAll(old)
	}
	return nil
}

type extractor struct {
	root    *os.Root
	lim     Limits
	bytes   int64
	entries int
	seen    map[string]bool // names written, cleaned
	files   map[string]bool // regular files, for hard links
}

func (x *extractor) tarXZ(archive string) error {
	f, err := os.Open(archive)
	if err != nil {
		return err
	}
	defer f.Close()
	// Buffered: the xz reader reads in small pieces, and straight from the
	// file it unpacks a 40 MB program about six times slower.
	zr, err := xz.NewReader(bufio.NewReaderSize(f, 1<<20))
	if err != nil {
		return fmt.Errorf("not an xz file: %w", err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading the tar: %w", err)
		}
		switch h.Typeflag {
		case tar.TypeXGlobalHeader:
			// pax global metadata (git archive writes one): not a file.
			continue
		case tar.TypeDir:
			err = x.dir(h.Name)
		case tar.TypeReg:
			err = x.file(h.Name, h.Size, fs.FileMode(h.Mode), tr)
		case tar.TypeSymlink:
			err = x.symlink(h.Name, h.Linkname)
		case tar.TypeLink:
			err = x.hardlink(h.Name, h.Linkname)
		default:
			err = fmt.Errorf("%w: %q is a %s, not a file, folder or link", ErrUnsafeArchive, h.Name, tarKind(h.Typeflag))
		}
		if err != nil {
			return err
		}
	}
}

func tarKind(t byte) string {
	switch t {
	case tar.TypeChar:
		return "character device"
	case tar.TypeBlock:
		return "block device"
	case tar.TypeFifo:
		return "FIFO"
	default:
		return fmt.Sprintf("tar entry of type %q", t)
	}
}

func (x *extractor) zip(archive string) error {
	zr, err := zip.OpenReader(archive)
	if err != nil {
		return fmt.Errorf("not a zip file: %w", err)
	}
	defer zr.Close()
	for _, f := range zr.File {
		mode := f.Mode()
		switch {
		case mode.IsDir():
			err = x.dir(f.Name)
		case mode.IsRegular():
			if f.UncompressedSize64 > uint64(x.lim.MaxBytes) {
				return fmt.Errorf("%w: %q is %d bytes (limit %d in all)", ErrTooLarge, f.Name, f.UncompressedSize64, x.lim.MaxBytes)
			}
			var rc io.ReadCloser
			if rc, err = f.Open(); err != nil {
				return fmt.Errorf("%q: %w", f.Name, err)
			}
			err = x.file(f.Name, int64(f.UncompressedSize64), mode, rc)
			rc.Close()
		case mode&fs.ModeSymlink != 0:
			err = x.zipSymlink(f)
		default:
			err = fmt.Errorf("%w: %q is a special file (%v)", ErrUnsafeArchive, f.Name, mode.Type())
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (x *extractor) zipSymlink(f *zip.File) error {
	if f.UncompressedSize64 > 4096 {
		return fmt.Errorf("%w: link %q has a %d-byte target", ErrUnsafeArchive, f.Name, f.UncompressedSize64)
	}
	rc, err := f.Open()
	if err != nil {
		return err
	}
	defer rc.Close()
	target, err := io.ReadAll(io.LimitReader(rc, 4097))
	if err != nil {
		return err
	}
	return x.symlink(f.Name, string(target))
}

// name counts one entry against the limit, checks its name and returns it
// cleaned, in slash form.
func (x *extractor) name(raw string) (string, error) {
	x.entries++
	if x.entries > x.lim.MaxFiles {
		return "", fmt.Errorf("%w: more than %d entries", ErrTooLarge, x.lim.MaxFiles)
	}
	return checkName(raw)
}

func checkName(raw string) (string, error) {
	if strings.ContainsRune(raw, '\\') || strings.ContainsRune(raw, 0) {
		return "", fmt.Errorf("%w: %q has a backslash or NUL in its name", ErrUnsafeArchive, raw)
	}
	if strings.HasPrefix(raw, "/") || (len(raw) > 1 && raw[1] == ':') {
		return "", fmt.Errorf("%w: %q is an absolute path", ErrUnsafeArchive, raw)
	}
	for _, part := range strings.Split(raw, "/") {
		if part == ".." {
			return "", fmt.Errorf("%w: %q climbs out with \"..\"", ErrUnsafeArchive, raw)
		}
	}
	clean := path.Clean(raw)
	if clean == "." {
		return clean, nil
	}
	if !filepath.IsLocal(filepath.FromSlash(clean)) {
		return "", fmt.Errorf("%w: %q is not a plain relative path", ErrUnsafeArchive, raw)
	}
	return clean, nil
}

func (x *extractor) claim(name, raw string) error {
	if x.seen[name] {
		return fmt.Errorf("%w: %q appears twice", ErrUnsafeArchive, raw)
	}
	x.seen[name] = true
	return nil
}

func (x *extractor) mkParent(name string) error {
	if d := path.Dir(name); d != "." {
		return x.root.MkdirAll(filepath.FromSlash(d), 0o755)
	}
	return nil
}

func (x *extractor) dir(raw string) error {
	name, err := x.name(raw)
	if err != nil || name == "." {
		return err
	}
	return x.root.MkdirAll(filepath.FromSlash(name), 0o755)
}

func (x *extractor) file(raw string, size int64, mode fs.FileMode, r io.Reader) error {
	name, err := x.name(raw)
	if err != nil {
		return err
	}
	if name == "." {
		return fmt.Errorf("%w: a file entry has an empty name", ErrUnsafeArchive)
	}
	if err := x.claim(name, raw); err != nil {
		return err
	}
	if size < 0 || x.bytes+size > x.lim.MaxBytes {
		return fmt.Errorf("%w: the content passes %d bytes at %q", ErrTooLarge, x.lim.MaxBytes, raw)
	}
	if err := x.mkParent(name); err != nil {
		return err
	}
	perm := fs.FileMode(0o644)
	if mode&0o111 != 0 {
		perm = 0o755
	}
	f, err := x.root.OpenFile(filepath.FromSlash(name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	// Copy at most the declared size plus one byte, so a lying header is
	// caught without writing past the limit.
	n, err := io.Copy(f, io.LimitReader(r, size+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%q: %w", raw, err)
	}
	if n != size {
		return fmt.Errorf("%q: holds %d bytes, its header says %d", raw, n, size)
	}
	x.bytes += n
	if x.files == nil {
		x.files = map[string]bool{}
	}
	x.files[name] = true
	return nil
}

func (x *extractor) symlink(raw, target string) error {
	name, err := x.name(raw)
	if err != nil {
		return err
	}
	if err := checkLinkTarget(raw, target); err != nil {
		return err
	}
	if err := x.claim(name, raw); err != nil {
		return err
	}
	if err := x.mkParent(name); err != nil {
		return err
	}
	return x.root.Symlink(target, filepath.FromSlash(name))
}

// checkLinkTarget allows only relative targets without "..": such a link
// resolves at or below its own folder, and so does any chain of them.
func checkLinkTarget(raw, target string) error {
	switch {
	case target == "":
		return fmt.Errorf("%w: link %q has no target", ErrUnsafeArchive, raw)
	case strings.HasPrefix(target, "/") || (len(target) > 1 && target[1] == ':'):
		return fmt.Errorf("%w: link %q points to the absolute path %q", ErrUnsafeArchive, raw, target)
	case strings.ContainsRune(target, '\\') || strings.ContainsRune(target, 0):
		return fmt.Errorf("%w: link %q has a backslash or NUL in its target", ErrUnsafeArchive, raw)
	}
	for _, part := range strings.Split(target, "/") {
		if part == ".." {
			return fmt.Errorf("%w: link %q points outside its folder (%q)", ErrUnsafeArchive, raw, target)
		}
	}
	return nil
}

func (x *extractor) hardlink(raw, target string) error {
	name, err := x.name(raw)
	if err != nil {
		return err
	}
	tname, err := checkName(target)
	if err != nil {
		return err
	}
	if !x.files[tname] {
		return fmt.Errorf("%w: hard link %q points to %q, which is not an earlier file of the archive", ErrUnsafeArchive, raw, target)
	}
	if err := x.claim(name, raw); err != nil {
		return err
	}
	if err := x.mkParent(name); err != nil {
		return err
	}
	if err := x.root.Link(filepath.FromSlash(tname), filepath.FromSlash(name)); err != nil {
		return err
	}
	x.files[name] = true
	return nil
}
