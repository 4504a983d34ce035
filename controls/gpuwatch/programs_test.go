package gpuwatch

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"testing"
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

// TestProgramsFindsItself looks for this test program in the real process
// list of whatever system runs it (Linux /proc, the Windows snapshot,
// macOS ps).
func TestProgramsFindsItself(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Skipf("this system does not say which program runs: %v", err)
	}
	self := filepath.Base(exe)
	got, err := NewPrograms(ProgramsOptions{}).Running(context.Background(), []string{"no-such-program-here", self})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, []string{self}) {
		t.Fatalf("Running = %q, want [%q]", got, self)
	}
}
