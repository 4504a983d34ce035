package host

import (
	"os/exec"
	"syscall"
)

// lifeline ties the child to the parent beyond the end of its stdin: the
// kernel sends it SIGKILL when the parent dies (PR_SET_PDEATHSIG), even
// while native code in it ignores everything else. Go sets it between fork
// and exec and checks that the parent did not die in between.
func lifeline(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
}

// adopt is the lifeline's second half after the child started; Linux needs
// none.
func adopt(*exec.Cmd) error { return nil }
