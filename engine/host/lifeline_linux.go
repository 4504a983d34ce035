package host

import (
	"os/exec"
	"runtime"
	"sync"
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

// The parent-death signal fires when the thread that started the child
// ends, not the process (prctl(2)); Go ends a thread when a goroutine
// locked to it returns. So children are started from one goroutine that
// holds its thread for the life of the process.
var spawner struct {
	once sync.Once
	req  chan func()
}

// startCmd starts cmd on the spawner's thread.
func startCmd(cmd *exec.Cmd) error {
	spawner.once.Do(func() {
		spawner.req = make(chan func())
		go func() {
			runtime.LockOSThread() // never unlocked: the thread lives as long as the process
			for f := range spawner.req {
				f()
			}
		}()
	})
	done := make(chan error, 1)
	spawner.req <- func() { done <- cmd.Start() }
	return <-done
}
