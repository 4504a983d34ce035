package update

import (
	"errors"
	"os/exec"
	"syscall"
)

// execProgram is not how Windows restarts (the installer's script does).
func execProgram(exe string, args, env []string) error {
	return errors.New("a Windows program cannot replace itself; the installer restarts it")
}

// startDetached starts the script in a new, hidden console process group
// that outlives this program.
func startDetached(script string) error {
	const detached = 0x00000008 // DETACHED_PROCESS
	cmd := exec.Command("cmd.exe", "/C", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{CreationFlags: detached | syscall.CREATE_NEW_PROCESS_GROUP, HideWindow: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	return cmd.Process.Release()
}
