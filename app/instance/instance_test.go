package instance

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSecondLaunchAsksFirstToShow(t *testing.T) {
	dir := t.TempDir()
	shown := make(chan string, 1)
	first, err := Acquire(dir, "", func(page string) { shown <- page })
	if err != nil {
		t.Fatal(err)
	}
	second, err := Acquire(dir, "Logs", func(string) { t.Error("second instance must not serve") })
	if !errors.Is(err, ErrRunning) || second != nil {
		t.Fatalf("second Acquire = %v, %v; want ErrRunning", second, err)
	}
	select {
	case page := <-shown:
		if page != "Logs" {
			t.Errorf("first instance asked for page %q, want Logs", page)
		}
	default:
		t.Fatal("the first instance was not asked to show its window before the second returned")
	}
	if err := first.Release(); err != nil {
		t.Fatal(err)
	}
	// After release a new launch becomes the first one.
	third, err := Acquire(dir, "", nil)
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	_ = third.Release()
}

func TestStaleSocketIsReplaced(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, socketName), []byte("left over"), 0o600); err != nil {
		t.Fatal(err)
	}
	in, err := Acquire(dir, "", nil)
	if err != nil {
		t.Fatalf("stale socket file should not block the first launch: %v", err)
	}
	_ = in.Release()
}

func TestUnansweredLockStillReportsRunning(t *testing.T) {
	dir := t.TempDir()
	first, err := Acquire(dir, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Release()
	// Simulate a holder whose socket vanished: the second launch must still
	// refuse to start, and say the other one did not answer.
	if err := os.Remove(filepath.Join(dir, socketName)); err != nil {
		t.Fatal(err)
	}
	_, err = Acquire(dir, "", nil)
	if !errors.Is(err, ErrRunning) {
		t.Fatalf("got %v, want ErrRunning", err)
	}
	if !strings.Contains(err.Error(), "did not answer") {
		t.Errorf("error should say the first instance did not answer: %v", err)
	}
}
