//go:build unix

package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minisgg/studio-worker/settings"
)

// noSessionBus makes the test's process look like a machine without a
// D-Bus session bus.
func noSessionBus(t *testing.T) {
	t.Setenv("DBUS_SESSION_BUS_ADDRESS", "")
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
}

// TestCLIRegisterReset: unreadable credentials stopped headless `run` with
// advice to log out, which headless cannot do. The advice now names
// `studio-worker register --reset`, and that command exists and works.
func TestCLIRegisterReset(t *testing.T) {
	noSessionBus(t)
	cfg := t.TempDir()
	creds := filepath.Join(cfg, settings.CredentialsFileName)
	if err := os.WriteFile(creds, []byte("{half a file"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errs := runCLI(t, "register", "--config", cfg)
	if code != 1 || out != "" {
		t.Fatalf("register on a damaged file: %d %q %q", code, out, errs)
	}
	oneLine(t, errs, "studio-worker register --reset")

	code, out, errs = runCLI(t, "register", "--reset", "--config", cfg)
	if code != 0 || errs != "" || !strings.Contains(out, "forgot this computer's studio credentials") {
		t.Fatalf("register --reset: %d %q %q", code, out, errs)
	}
	if _, err := os.Stat(creds); !os.IsNotExist(err) {
		t.Fatalf("the credentials file is still there: %v", err)
	}
	code, out, _ = runCLI(t, "register", "--config", cfg)
	if code != 0 || !strings.HasPrefix(out, "not registered") {
		t.Fatalf("register after the reset: %d %q", code, out)
	}
	if err := settings.NewFileCredentialStore(cfg).Save(settings.Credentials{WorkerID: "w-7", AuthToken: "t"}); err != nil {
		t.Fatal(err)
	}
	if code, out, _ = runCLI(t, "register", "--config", cfg); code != 0 || !strings.Contains(out, "registered as worker w-7") {
		t.Fatalf("register when registered: %d %q", code, out)
	}
	if code, _, errs = runCLI(t, "register", "--bogus"); code != 2 {
		t.Fatalf("register --bogus: %d %q", code, errs)
	}
}

func TestCLIHeadlessAdviceNamesACommand(t *testing.T) {
	got := headlessAdvice("the studio deleted this worker; log out and register again (gone)")
	if strings.Contains(got, "log out") || !strings.Contains(got, "studio-worker register --reset") {
		t.Fatalf("%q", got)
	}
}

// TestCLIRunChild is the child process of TestCLIRunStartsNoBus; on its
// own it does nothing.
func TestCLIRunChild(t *testing.T) {
	if os.Getenv("STUDIO_WORKER_RUN_CHILD") == "" {
		t.Skip("only the child of TestCLIRunStartsNoBus")
	}
	os.Exit(cli(strings.Split(os.Getenv("STUDIO_WORKER_RUN_CHILD"), "\x1f"), os.Stdout, os.Stderr))
}

// markedProcesses counts the processes whose environment holds mark: the
// ones started, directly or not, by the run under test (a forked
// dbus-daemon keeps the environment it was started with).
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

// TestCLIRunStartsNoBus is issue 10's item 10: each `studio-worker run` on
// a machine without a session bus left one `dbus-daemon --fork` running.
// The run here has a dbus-launch of the test's own first in PATH, which
// leaves a process behind the way the real one does; the count of such
// processes is the same before `run` starts and after it stops.
func TestCLIRunStartsNoBus(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the session bus rule is for Linux desktops; needs /proc")
	}
	bin := t.TempDir()
	ran := filepath.Join(bin, "dbus-launch-ran")
	script := "#!/bin/sh\ntouch '" + ran + "'\nsleep 120 >/dev/null 2>&1 &\nexit 1\n"
	if err := os.WriteFile(filepath.Join(bin, "dbus-launch"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	mark := fmt.Sprintf("STUDIO_WORKER_RUN_MARK=%d-%d", os.Getpid(), time.Now().UnixNano())
	t.Cleanup(func() {
		for _, pid := range markedProcesses(t, mark) {
			_ = syscall.Kill(pid, syscall.SIGKILL) // only what this run left behind
		}
	})
	home := t.TempDir()
	args := strings.Join([]string{"run", "--config", filepath.Join(home, "cfg"), "--studio", "http://127.0.0.1:1/"}, "\x1f")
	before := len(markedProcesses(t, mark))

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestCLIRunChild$")
	env := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DBUS_SESSION_BUS_ADDRESS=") && !strings.HasPrefix(kv, "PATH=") &&
			!strings.HasPrefix(kv, "XDG_RUNTIME_DIR=") && !strings.HasPrefix(kv, "XDG_STATE_HOME=") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, mark, "STUDIO_WORKER_RUN_CHILD="+args,
		"PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"),
		"XDG_RUNTIME_DIR="+t.TempDir(), "XDG_STATE_HOME="+filepath.Join(home, "state"))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = os.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	started, readDone := make(chan struct{}), make(chan struct{})
	var lines []string
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines = append(lines, sc.Text())
			if strings.Contains(sc.Text(), "started; studio") {
				close(started)
			}
		}
	}()
	select {
	case <-started:
	case <-ctx.Done():
		t.Fatal("`run` did not start")
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-readDone // the child closed its stderr: it has ended
	if err := cmd.Wait(); err != nil {
		t.Fatalf("`run` ended with %v:\n%s", err, strings.Join(lines, "\n"))
	}
	if _, err := os.Stat(ran); err == nil {
		t.Error("`run` ran dbus-launch")
	}
	if after := len(markedProcesses(t, mark)); after != before {
		t.Fatalf("%d processes left behind by `run` (before it: %d)", after, before)
	}
}
