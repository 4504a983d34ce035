package gpuwatch

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"

	"github.com/minisgg/studio-worker/controls"
)

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
	got, err := p.list(context.Background())
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
