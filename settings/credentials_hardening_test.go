package settings

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// markedProcesses lists the processes whose environment holds mark: the
// ones started, directly or not, by the code under test.
func markedProcesses(t *testing.T, mark string) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Skip("needs /proc: " + err.Error())
	}
	var pids []int
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil || pid == os.Getpid() {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err == nil && bytes.Contains(env, []byte(mark)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// TestNoSessionBusNoKeychainProbe is issue 10's item 10: each `run` on a
// machine without a session bus left a dbus-daemon behind, because the
// keychain probe's D-Bus client ran dbus-launch. A dbus-launch of our own
// in PATH records being run and leaves a process behind the way the real
// one does; with no session bus the store must not run it, and the count
// of processes it would have left is the same before and after.
func TestNoSessionBusNoKeychainProbe(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the session bus rule is for Linux desktops; needs /proc")
	}
	resetProbe()
	t.Cleanup(resetProbe)
	bin := t.TempDir()
	ran := filepath.Join(bin, "dbus-launch-ran")
	mark := fmt.Sprintf("STUDIO_WORKER_BUS_TEST=%d", os.Getpid())
	script := "#!/bin/sh\ntouch '" + ran + "'\nsleep 60 >/dev/null 2>&1 &\nexit 1\n"
	if err := os.WriteFile(filepath.Join(bin, "dbus-launch"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	t.Setenv("DBUS_SESSION_BUS_ADDRESS", "")
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir()) // no bus socket in it
	t.Setenv("STUDIO_WORKER_BUS_TEST", strings.TrimPrefix(mark, "STUDIO_WORKER_BUS_TEST="))
	t.Cleanup(func() {
		for _, pid := range markedProcesses(t, mark) {
			if p, err := os.FindProcess(pid); err == nil {
				_ = p.Kill() // only what this test's dbus-launch left
			}
		}
	})
	before := len(markedProcesses(t, mark))
	var logs bytes.Buffer
	cs := NewCredentialStore(t.TempDir(), slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if _, ok := cs.(*FileCredentialStore); !ok {
		t.Fatalf("without a session bus got %T, want the file store", cs)
	}
	if _, err := os.Stat(ran); err == nil {
		t.Fatal("the keychain probe ran dbus-launch")
	}
	if after := len(markedProcesses(t, mark)); after != before {
		t.Fatalf("%d processes left behind (before %d)", after, before)
	}
	if !strings.Contains(logs.String(), "no D-Bus session bus") {
		t.Fatalf("the choice is not logged: %s", logs.String())
	}
	// The probe itself (what NewCredentialStore skips) would have run it:
	// this is what the test guards against.
	probeKeyring()
	if _, err := os.Stat(ran); err != nil {
		t.Skip("the keychain library did not run dbus-launch even when asked; nothing more to compare")
	}
}

// TestCredentialsFileOthersCanReadIsTightened: a credentials file with
// mode 0644 was used without a word. It is made 0600 and the log says so.
func TestCredentialsFileOthersCanReadIsTightened(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no mode bits on Windows")
	}
	dir := t.TempDir()
	fs := NewFileCredentialStore(dir)
	var logs bytes.Buffer
	fs.SetLog(slog.New(slog.NewTextHandler(&logs, nil)))
	want := Credentials{WorkerID: "w-1", AuthToken: "t-1"}
	if err := fs.Save(want); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(fs.Path(), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := fs.Load()
	if err != nil || got != want {
		t.Fatalf("Load = %v, %v", got, err)
	}
	fi, err := os.Stat(fs.Path())
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode after Load: %v, %v", fi.Mode().Perm(), err)
	}
	if !strings.Contains(logs.String(), "mode 0644") || !strings.Contains(logs.String(), "0600") {
		t.Fatalf("not said in the log: %s", logs.String())
	}
	logs.Reset()
	if _, err := fs.Load(); err != nil || logs.Len() != 0 {
		t.Fatalf("a private file is reported again: %v %s", err, logs.String())
	}
}

// TestUnreadableCredentialsAdviceNamesACommand: headless `run` has no
// window to log out in, so the advice names a command that exists.
func TestUnreadableCredentialsAdviceNamesACommand(t *testing.T) {
	dir := t.TempDir()
	fs := NewFileCredentialStore(dir)
	if err := os.WriteFile(fs.Path(), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := fs.Load()
	if err == nil || !strings.Contains(err.Error(), "studio-worker register --reset") {
		t.Fatalf("Load = %v", err)
	}
}
