package gpuwatch

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// listProc reads every process's names from a Linux proc file system at
// root. Processes that end while it reads, or whose files it may not
// read, give what could be read (often comm and cmdline only).
func listProc(ctx context.Context, root string) ([]procNames, error) {
	pids, err := procPIDs(root)
	if err != nil {
		return nil, err
	}
	out := make([]procNames, 0, len(pids))
	for i, pid := range pids {
		if i%64 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		pn := readProcNames(root, pid)
		if len(pn.Names) > 0 || pn.Comm != "" {
			out = append(out, pn)
		}
	}
	return out, nil
}

// procPIDs lists the numeric entries of root.
func procPIDs(root string) ([]int, error) {
	ents, err := os.ReadDir(root)
	if err != nil {
		return nil, unknownf("the process list (%s) cannot be read: %v", root, err)
	}
	pids := make([]int, 0, len(ents))
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil && pid > 0 {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// readProcNames reads exe, argv[0] and comm of one process.
func readProcNames(root string, pid int) procNames {
	dir := filepath.Join(root, strconv.Itoa(pid))
	pn := procNames{PID: pid}
	if exe, err := os.Readlink(filepath.Join(dir, "exe")); err == nil {
		// A replaced or removed executable reads "/path/name (deleted)".
		exe = strings.TrimSuffix(exe, " (deleted)")
		if b := baseName(exe); b != "" {
			pn.Names = append(pn.Names, b)
		}
	}
	if a := readArgv0(filepath.Join(dir, "cmdline")); a != "" {
		if b := baseName(a); b != "" {
			pn.Names = append(pn.Names, b)
		}
	}
	if c, err := os.ReadFile(filepath.Join(dir, "comm")); err == nil {
		pn.Comm = strings.TrimRight(string(c), "\n")
		pn.CommMax = linuxCommMax
	}
	return pn
}

// readArgv0 returns the first NUL-terminated string of a cmdline file,
// reading at most 4 KiB of it.
func readArgv0(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	buf := make([]byte, 4096)
	n, _ := io.ReadFull(f, buf)
	buf = buf[:n]
	if i := bytes.IndexByte(buf, 0); i >= 0 {
		buf = buf[:i]
	}
	return string(buf)
}

// procName is the name a GPU process is shown by: its executable's base
// name, else argv[0]'s, else comm; "" when none can be read.
func procName(root string, pid int) string {
	pn := readProcNames(root, pid)
	if len(pn.Names) > 0 {
		return pn.Names[0]
	}
	return pn.Comm
}
