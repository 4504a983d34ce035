//go:build !windows

package gpuwatch

import "os/exec"

func hideWindow(*exec.Cmd) {}

func smiCandidates() []string { return nil }
