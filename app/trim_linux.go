package app

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// trimCode takes out of the process's resident set the pages of its
// read-only, private mappings of files (the program's own code and
// constants, and the shared libraries': libLLVM and swrast_dri for
// llvmpipe's software GL, libX11 and the rest), the way Windows trims a
// minimised program's working set (EmptyWorkingSet). A page the app
// touches again (the worker loop, the window opening) faults back in.
//
// A mapping none of whose pages was ever written (smaps: Anonymous and
// Swap 0 kB) gets madvise(MADV_DONTNEED): that only unmaps its pages, which
// are the file's own, so they stay in the page cache (they fault back
// without reading the disk) and it works for pages other processes map
// too: the engine children run the same program, and the X server or
// compositor maps the same GL libraries. A read-only mapping with written
// pages in it (relocations applied before it was made read-only; a
// debugger's breakpoints) must keep those, which MADV_DONTNEED would
// replace with the file's bytes, so it gets madvise(MADV_PAGEOUT) (Linux
// 5.4 and later), with which the kernel reclaims only its clean pages that
// no other process maps and keeps the written ones. Writable, shared and
// anonymous mappings are left alone.
//
// It returns how many bytes of mappings it asked about (not how many left
// the resident set: /proc/self/smaps says that) and the first error; the
// mappings after a failed one are still asked about.
func trimCode() (int64, error) {
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return 0, err
	}
	ranges, err := codeMappings(f)
	f.Close()
	if err != nil {
		return 0, err
	}
	var total int64
	var first error
	for _, r := range ranges {
		advice, name := uintptr(unix.MADV_DONTNEED), "MADV_DONTNEED"
		if r.written {
			advice, name = unix.MADV_PAGEOUT, "MADV_PAGEOUT"
		}
		_, _, e := unix.Syscall(unix.SYS_MADVISE, r.start, r.end-r.start, advice)
		if e != 0 {
			// A mapping unmapped since the read (ENOMEM) is no matter.
			if e != unix.ENOMEM && first == nil {
				first = fmt.Errorf("madvise(%s) on %s: %w", name, r.path, e)
			}
			continue
		}
		total += int64(r.end - r.start)
	}
	return total, first
}

// mapping is one mapping of /proc/PID/smaps that trimCode trims.
type mapping struct {
	start, end uintptr // [start, end), bytes
	path       string
	// written: some of its pages are the process's own modified copies
	// (smaps' Anonymous or Swap above 0 kB).
	written bool
}

// codeMappings reads /proc/PID/smaps (proc(5): a line "start-end perms
// offset dev inode path" per mapping, then "Field: N kB" lines) and returns
// the mappings of a file that are readable, private and not writable: code
// (r-xp) and read-only data (r--p). It leaves out anonymous and writable
// mappings (the Go and C heaps, stacks, .data), those with no access
// (guard pages), shared ones (another process may write the file through
// them), deleted files, and the kernel's [vdso], [vvar] and the like.
func codeMappings(r io.Reader) ([]mapping, error) {
	var out []mapping
	chosen := false // the current mapping is out[len(out)-1]
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		if key, ok := strings.CutSuffix(fields[0], ":"); ok {
			if chosen && (key == "Anonymous" || key == "Swap") && len(fields) >= 2 && fields[1] != "0" {
				out[len(out)-1].written = true
			}
			continue
		}
		chosen = false
		if len(fields) < 6 {
			continue // anonymous
		}
		addr, perms, inode := fields[0], fields[1], fields[4]
		path := strings.Join(fields[5:], " ")
		if len(perms) != 4 || perms[0] != 'r' || perms[1] != '-' || perms[3] != 'p' ||
			inode == "0" || !strings.HasPrefix(path, "/") || strings.HasSuffix(path, " (deleted)") {
			continue
		}
		lo, hi, ok := strings.Cut(addr, "-")
		if !ok {
			return nil, fmt.Errorf("smaps: bad address range %q", addr)
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			return nil, fmt.Errorf("smaps: bad address range %q", addr)
		}
		out = append(out, mapping{start: uintptr(start), end: uintptr(end), path: path})
		chosen = true
	}
	return out, sc.Err()
}
