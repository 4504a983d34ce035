//go:build linux || freebsd || openbsd || netbsd

// Package xvfbtest starts X servers of a test's own (Xvfb), for the tests
// that need a real X display: the idle-time probe and the app's wiring of
// it. It skips the test, naming what is missing, where Xvfb is absent.
package xvfbtest

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

// Start starts Xvfb (64x64, no TCP) with extra arguments and returns its
// display (":N") and a stop function, which t.Cleanup also calls. With
// display "" Xvfb picks a free number; given one, it takes that (to
// restart a server on the same display). -displayfd writes the number once
// the server listens: that line is the signal that it is ready. An error
// means the server did not come up (the number was taken, for one).
func Start(t testing.TB, display string, extra ...string) (string, func(), error) {
	t.Helper()
	bin, err := exec.LookPath("Xvfb")
	if err != nil {
		t.Skip("needs Xvfb (apt-get install xvfb): " + err.Error())
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"-displayfd", "3", "-nolisten", "tcp", "-screen", "0", "64x64x24"}
	args = append(args, extra...)
	if display != "" {
		args = append([]string{display}, args...)
	}
	cmd := exec.Command(bin, args...)
	cmd.ExtraFiles = []*os.File{w}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			_ = cmd.Process.Signal(syscall.SIGTERM)
			_ = cmd.Wait()
		}
	}
	t.Cleanup(stop)
	line, err := bufio.NewReader(r).ReadString('\n')
	r.Close()
	if err != nil {
		stop()
		return "", nil, fmt.Errorf("Xvfb did not come up: %v", err)
	}
	return ":" + strings.TrimSpace(line), stop, nil
}
