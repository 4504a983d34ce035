package gpuwatch

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"testing"

	"github.com/minisgg/studio-worker/controls"
)

func TestMatchPrograms(t *testing.T) {
	procs := []procNames{
		{PID: 1, Names: []string{"blender"}, Comm: "blender"},
		// Wine: exe is the loader, argv[0] the Windows path.
		{PID: 2, Names: []string{"wine64-preloader", `Z:\games\Cyber Game\CyberGame.exe`}, Comm: "CyberGame.exe"},
		// A long name the kernel cut in comm, with the full name from exe.
		{PID: 3, Names: []string{"steamwebhelper-extra"}, Comm: "steamwebhelper-"},
		// Only comm readable, cut to 15 bytes.
		{PID: 4, Comm: "VeryLongGameNam"},
		{PID: 5, Comm: "Resolve.exe"},
	}
	cases := []struct {
		names []string
		want  []string
	}{
		{[]string{"Blender"}, []string{"Blender"}},
		{[]string{"blender.exe"}, []string{"blender.exe"}},
		{[]string{"/usr/bin/blender"}, []string{"/usr/bin/blender"}},
		{[]string{"cybergame"}, []string{"cybergame"}},
		{[]string{"CYBERGAME.EXE", "cybergame"}, []string{"CYBERGAME.EXE"}}, // one name, once
		{[]string{`C:\Games\CyberGame.exe`}, []string{`C:\Games\CyberGame.exe`}},
		{[]string{"wine64-preloader"}, []string{"wine64-preloader"}},
		{[]string{"VeryLongGameName"}, []string{"VeryLongGameName"}},
		{[]string{"VeryLongGameName.exe"}, []string{"VeryLongGameName.exe"}},
		{[]string{"resolve"}, []string{"resolve"}},
		// comm "steamwebhelper-" is the start of the process's own longer
		// name, so it matches no other long name by prefix.
		{[]string{"steamwebhelper-other"}, nil},
		{[]string{"steamwebhelper-extra"}, []string{"steamwebhelper-extra"}},
		// Prefixes of real names are not names.
		{[]string{"blend", "Cyber", "VeryLong"}, nil},
		{[]string{"", "  ", "notrunning"}, nil},
		{nil, nil},
	}
	for _, c := range cases {
		if got := matchPrograms(c.names, procs); !reflect.DeepEqual(got, c.want) {
			t.Errorf("matchPrograms(%q) = %q, want %q", c.names, got, c.want)
		}
	}
}

func TestParsePSComm(t *testing.T) {
	out := []byte("/sbin/launchd\n/Applications/Some Game.app/Contents/MacOS/Some Game\nkernel_task\n\n")
	got := matchPrograms([]string{"some game", "launchd", "kernel_task", "Finder"}, parsePSComm(out))
	if want := []string{"some game", "launchd", "kernel_task"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// writeProc makes one process directory in a fixture proc root.
func writeProc(t *testing.T, root string, pid int, exe, cmdline, comm string) string {
	t.Helper()
	dir := filepath.Join(root, strconv.Itoa(pid))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if exe != "" {
		if err := os.Symlink(exe, filepath.Join(dir, "exe")); err != nil {
			t.Fatal(err)
		}
	}
	if cmdline != "" {
		if err := os.WriteFile(filepath.Join(dir, "cmdline"), []byte(cmdline), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if comm != "" {
		if err := os.WriteFile(filepath.Join(dir, "comm"), []byte(comm+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestProgramsFixtureProc(t *testing.T) {
	root := t.TempDir()
	writeProc(t, root, 10, "/opt/game/bin/SpaceGame (deleted)", "/opt/game/bin/SpaceGame\x00--fullscreen\x00", "SpaceGame")
	writeProc(t, root, 11, "", "Z:\\games\\LongWindowsGameName.exe\x00", "LongWindowsGame")
	writeProc(t, root, 12, "", "", "VeryLongGameNam") // a process with only comm left
	writeProc(t, root, 13, "", "", "")                // gone while read
	if err := os.MkdirAll(filepath.Join(root, "self"), 0o755); err != nil {
		t.Fatal(err)
	}
	p := NewPrograms(ProgramsOptions{ProcRoot: root})
	got, err := p.platformListOrSkip(t)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("listed %d processes, want 3: %+v", len(got), got)
	}
	run, err := p.Running(context.Background(), []string{"spacegame.exe", "LongWindowsGameName", "verylonggamename", "Xorg"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"spacegame.exe", "LongWindowsGameName", "verylonggamename"}; !reflect.DeepEqual(run, want) {
		t.Fatalf("Running = %q, want %q", run, want)
	}

	// A proc root that cannot be read is "cannot tell", not "none runs".
	p = NewPrograms(ProgramsOptions{ProcRoot: filepath.Join(root, "missing")})
	if _, err := p.Running(context.Background(), []string{"game"}); !errors.Is(err, controls.ErrUnknown) {
		t.Fatalf("missing proc root: err = %v, want ErrUnknown", err)
	}
	// No names: nothing is read, nothing fails.
	if run, err := p.Running(context.Background(), []string{" "}); err != nil || run != nil {
		t.Fatalf("no names: %q, %v", run, err)
	}
}

// platformListOrSkip lists a fixture proc root; only Linux reads /proc.
func (p *Programs) platformListOrSkip(t *testing.T) ([]procNames, error) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skipf("the proc file system is read on Linux only, not %s", runtime.GOOS)
	}
	return p.list(context.Background())
}
