package gpuwatch

import (
	"context"
	"fmt"
	"strings"

	"github.com/minisgg/studio-worker/controls"
)

// Programs is the controls.ProgramProbe of this machine: it lists the
// running processes' executable names and matches the donor's names
// against them.
//
// Matching (controls.ProgramProbe): by base name, case-insensitive, with
// or without ".exe" ("Game", "game.exe" and "GAME.EXE" are one name), and a
// path the donor typed counts by its base name. Sources by platform:
//   - Linux: for every /proc/<pid>, the base name of /proc/<pid>/exe (only
//     readable for the donor's own processes), of argv[0] in
//     /proc/<pid>/cmdline (readable for all; Wine and Proton games show
//     their Windows path there, "Z:\games\Game.exe", while exe is Wine's
//     loader) and /proc/<pid>/comm. comm is cut to 15 bytes by the kernel
//     (TASK_COMM_LEN, proc(5)): a 15-byte comm that is not the start of
//     another name of the same process matches a longer donor name by
//     prefix.
//   - Windows: the process snapshot (CreateToolhelp32Snapshot,
//     PROCESSENTRY32W.szExeFile).
//   - macOS: `ps -axo comm=` (the executable's path, or its short name
//     cut to 16 bytes, matched the same way as Linux's comm).
//
// The zero value is not usable; call NewPrograms.
type Programs struct {
	procRoot string
	list     func(ctx context.Context) ([]procNames, error)
}

// ProgramsOptions configures NewPrograms.
type ProgramsOptions struct {
	// ProcRoot is the proc file system read on Linux; "" means "/proc".
	// Tests point it at a fixture tree.
	ProcRoot string
}

// NewPrograms returns the program probe for this machine.
func NewPrograms(opts ProgramsOptions) *Programs {
	p := &Programs{procRoot: opts.ProcRoot}
	if p.procRoot == "" {
		p.procRoot = "/proc"
	}
	p.list = p.platformList
	return p
}

var _ controls.ProgramProbe = (*Programs)(nil)

// Running returns those of names that run now, spelled as given, each
// once, in the order given. Empty names are ignored; no names means no
// look at the process list. An error wraps controls.ErrUnknown when the
// process list cannot be read on this machine.
func (p *Programs) Running(ctx context.Context, names []string) ([]string, error) {
	wanted := false
	for _, n := range names {
		if normName(n) != "" {
			wanted = true
			break
		}
	}
	if !wanted {
		return nil, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	procs, err := p.list(ctx)
	if err != nil {
		return nil, err
	}
	return matchPrograms(names, procs), nil
}

// procNames are the names one process is known by: full names (an
// executable's base name, argv[0]'s base name) and the kernel's short
// name (comm), which may be cut to CommMax bytes.
type procNames struct {
	PID     int
	Names   []string
	Comm    string
	CommMax int
}

// The longest short names the kernels keep: Linux's comm (TASK_COMM_LEN
// 16 with its NUL; proc(5) /proc/pid/comm) and macOS's p_comm (MAXCOMLEN,
// sys/param.h), which ps shows where it cannot read the executable's path.
const (
	linuxCommMax  = 15
	darwinCommMax = 16
)

// baseName returns the last element of a path written with '/' or '\'
// (a Windows path read on any platform).
func baseName(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexAny(s, `/\`); i >= 0 {
		s = s[i+1:]
	}
	return s
}

// normName is the form names are compared in: base name, lower case,
// without ".exe".
func normName(s string) string {
	s = strings.ToLower(baseName(s))
	return strings.TrimSuffix(s, ".exe")
}

// matchPrograms returns the names (as given, each once) that one of procs
// is known by.
func matchPrograms(names []string, procs []procNames) []string {
	full := make(map[string]bool)
	var cut []string // lower-cased 15-byte comms without a longer name
	for _, pr := range procs {
		var longs []string
		for _, n := range pr.Names {
			if k := normName(n); k != "" {
				full[k] = true
				longs = append(longs, strings.ToLower(baseName(n)))
			}
		}
		c := strings.ToLower(pr.Comm)
		if c == "" {
			continue
		}
		full[strings.TrimSuffix(c, ".exe")] = true
		if pr.CommMax > 0 && len(c) == pr.CommMax && !hasPrefixOf(longs, c) {
			cut = append(cut, c)
		}
	}
	var out []string
	seen := make(map[string]bool)
	for _, n := range names {
		k := normName(n)
		if k == "" || seen[k] {
			continue
		}
		hit := full[k]
		if !hit {
			// The kernel cut the comm of "VeryLongGameName.exe" to
			// "verylonggamenam": compare the donor's name with and
			// without ".exe" against such cut names.
			for _, c := range cut {
				if len(k) > len(c) && strings.HasPrefix(k, c) || strings.HasPrefix(k+".exe", c) {
					hit = true
					break
				}
			}
		}
		if hit {
			seen[k] = true
			out = append(out, n)
		}
	}
	return out
}

func hasPrefixOf(longs []string, prefix string) bool {
	for _, l := range longs {
		if len(l) >= len(prefix) && strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

// unknownf wraps controls.ErrUnknown with a reason a donor can read.
func unknownf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", controls.ErrUnknown, fmt.Sprintf(format, args...))
}

// parsePSComm reads the output of `ps -axo comm=` (macOS): one executable
// path a line, or, where ps cannot read the path, the short name (p_comm,
// at most 16 bytes; in parentheses for a process that is ending). The PID
// is not asked for and left 0.
func parsePSComm(out []byte) []procNames {
	var procs []procNames
	for _, line := range strings.Split(string(out), "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "(") && strings.HasSuffix(line, ")") {
			line = strings.TrimSpace(line[1 : len(line)-1])
		}
		if line == "" {
			continue
		}
		if strings.Contains(line, "/") {
			if b := baseName(line); b != "" {
				procs = append(procs, procNames{Names: []string{b}})
			}
			continue
		}
		procs = append(procs, procNames{Comm: line, CommMax: darwinCommMax})
	}
	return procs
}
