package gpuwatch

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
)

// blockEnv makes this test program a stand-in game: it waits until its
// standard input is closed, then exits.
const blockEnv = "GPUWATCH_TEST_STAND_IN_GAME"

func TestMain(m *testing.M) {
	if os.Getenv(blockEnv) == "1" {
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}
	if mode := os.Getenv(fakeSMIEnv); mode != "" {
		os.Exit(fakeSMIMain(mode, os.Args[1:]))
	}
	os.Exit(m.Run())
}

func TestMatchPrograms(t *testing.T) {
	procs := []procNames{
		{PID: 1, Names: []string{"blender"}, Comm: "blender"},
		// Wine: exe is the loader, argv[0] the Windows path.
		{PID: 2, Names: []string{"wine64-preloader", `Z:\games\Cyber Game\CyberGame.exe`}, Comm: "CyberGame.exe"},
		// A long name the kernel cut in comm, with the full name from exe.
		{PID: 3, Names: []string{"steamwebhelper-extra"}, Comm: "steamwebhelper-", CommMax: linuxCommMax},
		// Only comm readable, cut to 15 bytes.
		{PID: 4, Comm: "VeryLongGameNam", CommMax: linuxCommMax},
		{PID: 5, Comm: "Resolve.exe", CommMax: linuxCommMax},
		// A 15-byte executable name: its comm is whole, not cut.
		{PID: 6, Names: []string{"fifteen-letters"}, Comm: "fifteen-letters", CommMax: linuxCommMax},
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
		{[]string{"fifteen-letters-and-more"}, nil},
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
	out := []byte("/sbin/launchd\n/Applications/Some Game.app/Contents/MacOS/Some Game\nkernel_task\n\n" +
		"  (mdworker_shared)\nAVeryLongGameNam\n()\n")
	got := matchPrograms([]string{"some game", "launchd", "kernel_task", "Finder", "mdworker_shared", "AVeryLongGameName", "AVeryLong"}, parsePSComm(out))
	if want := []string{"some game", "launchd", "kernel_task", "mdworker_shared", "AVeryLongGameName"}; !reflect.DeepEqual(got, want) {
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

// TestProgramsRealProcess starts a real process under a distinctive name
// (a copy of this test program that waits on a pipe the test holds) and
// looks for it in the real process list (/proc, the Windows snapshot,
// ps); after the test closes the pipe and the process is reaped, it is
// gone from the list.
func TestProgramsRealProcess(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Skipf("this system does not say which program runs: %v", err)
	}
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	// 17 bytes: longer than Linux's 15-byte comm, so the full name comes
	// from exe.
	name := "fakegame-" + hex.EncodeToString(b)
	// Not t.TempDir: Wine 8 cannot remove folders the way Go 1.26 asks,
	// and a left-over copy in the temp folder is harmless.
	dir, err := os.MkdirTemp("", "gpuwatch-test-")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, name)
	if runtime.GOOS == "windows" {
		bin += ".exe"
	}
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), blockEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ended := false
	t.Cleanup(func() {
		if !ended {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		_ = os.RemoveAll(dir)
	})

	p := NewPrograms(ProgramsOptions{})
	ctx := context.Background()
	asked := []string{strings.ToUpper(name) + ".exe", "not-" + name}
	got, err := p.Running(ctx, asked)
	if err != nil {
		t.Fatal(err)
	}
	if want := asked[:1]; !reflect.DeepEqual(got, want) {
		t.Fatalf("while %s runs (pid %d): Running = %q, want %q", name, cmd.Process.Pid, got, want)
	}

	// End it: it exits at the end of its input; Wait reaps it.
	if err := stdin.Close(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	ended = true
	got, err = p.Running(ctx, asked)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Fatalf("after %s ended: Running = %q, want none", name, got)
	}
	t.Logf("found %s (pid %d) while it ran, not after", name, cmd.Process.Pid)
}
