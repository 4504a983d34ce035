package gpuwatch

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestProgramsRealProcess starts a real process under a distinctive name
// (a copy of cat, blocked reading a pipe the test holds) and looks for it
// in the real /proc.
func TestProgramsRealProcess(t *testing.T) {
	cat, err := exec.LookPath("cat")
	if err != nil {
		t.Skip("no cat program to copy")
	}
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	// 17 bytes: longer than comm's 15, so the full name comes from exe.
	name := "fakegame-" + hex.EncodeToString(b)
	bin := filepath.Join(t.TempDir(), name)
	data, err := os.ReadFile(cat)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
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

	// End it: cat exits at the end of its input; Wait reaps it.
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
}
