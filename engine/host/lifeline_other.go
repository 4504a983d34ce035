//go:build !linux && !windows

package host

import "os/exec"

// lifeline: macOS and the BSDs have no parent-death signal. The child's
// stdin is the watched pipe: when the parent dies, however it dies, the
// kernel closes the pipe's other end and the child's reader sees the end
// of its input and exits (see Serve and ChildMain). That reader is a
// goroutine of its own, so native code busy in another thread cannot stop
// it.
func lifeline(*exec.Cmd) {}

func adopt(*exec.Cmd) error { return nil }

func startCmd(cmd *exec.Cmd) error { return cmd.Start() }
