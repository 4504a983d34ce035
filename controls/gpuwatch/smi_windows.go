package gpuwatch

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/windows"
)

// hideWindow keeps nvidia-smi, a console program, from flashing a console
// window over the donor's desktop on every poll (the app is a GUI program).
func hideWindow(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{HideWindow: true, CreationFlags: windows.CREATE_NO_WINDOW}
}

// smiCandidates are where NVIDIA's driver installs nvidia-smi when it is
// not on PATH: System32 (current drivers) and NVSMI (older ones).
func smiCandidates() []string {
	var c []string
	if root := os.Getenv("SystemRoot"); root != "" {
		c = append(c, filepath.Join(root, "System32", "nvidia-smi.exe"))
	}
	if pf := os.Getenv("ProgramFiles"); pf != "" {
		c = append(c, filepath.Join(pf, "NVIDIA Corporation", "NVSMI", "nvidia-smi.exe"))
	}
	return c
}
