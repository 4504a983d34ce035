package update

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// pendingName is the marker beside a per-user install that says an update
// restarted into a new version which has not yet said it started. The new
// version removes it once it runs (ConfirmStarted); one that dies before
// that leaves it, and the next start puts the old version back
// (RecoverFailedStart).
const pendingName = ".studio-worker-update-pending"

type pendingUpdate struct {
	From   string `json:"from"`
	To     string `json:"to"`
	App    string `json:"app"`
	Backup string `json:"backup"`
}

func pendingPath(app string) string { return filepath.Join(filepath.Dir(app), pendingName) }

func writePending(p pendingUpdate) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return os.WriteFile(pendingPath(p.App), b, 0o600)
}

// installDir is the folder of the running program (links resolved).
func installDir() (string, bool) {
	exe, err := os.Executable()
	if err != nil {
		return "", false
	}
	if real, err := filepath.EvalSymlinks(exe); err == nil {
		exe = real
	}
	return filepath.Dir(exe), true
}

// ConfirmStarted is called by the version an update restarted into, once
// it runs: the update is then final and the marker goes.
func ConfirmStarted() {
	if app, ok := installDir(); ok {
		_ = os.Remove(pendingPath(app))
	}
}

// RecoverFailedStart runs first in the commands that start the app (the
// window, `run`, `update`). When the last update restarted into this
// version and it never confirmed that it started (it died on the way),
// the previous version is put back and started in its place with the same
// arguments; the line saying so goes to stderr. It returns normally when
// there is nothing to recover or the recovery could not be done.
func RecoverFailedStart(current string, args []string, stderr io.Writer) {
	if os.Getenv(UpdatedFromEnv) != "" {
		return // the restart itself: it confirms once it runs
	}
	app, ok := installDir()
	if !ok {
		return
	}
	b, err := os.ReadFile(pendingPath(app))
	if err != nil {
		return
	}
	var p pendingUpdate
	if json.Unmarshal(b, &p) != nil || p.App != app || p.To != current || p.Backup == "" {
		_ = os.Remove(pendingPath(app)) // another install's or stale
		return
	}
	if err := swapBack(app, p.Backup); err != nil {
		fmt.Fprintf(stderr, "studio-worker: Studio Worker %s did not start after the update, and %s could not be put back from %s: %v\n", p.To, p.From, p.Backup, err)
		return
	}
	_ = os.Remove(pendingPath(app))
	fmt.Fprintf(stderr, "studio-worker: Studio Worker %s did not start after the update; %s was put back and starts instead\n", p.To, p.From)
	exe := filepath.Join(app, "studio-worker")
	if err := execProgram(exe, args, os.Environ()); err != nil {
		fmt.Fprintf(stderr, "studio-worker: %s could not be started: %v\n", exe, err)
	}
}
