package stack

import (
	"fmt"
	"os"
	"strings"

	"github.com/minisgg/studio-worker/controls/gpuwatch"
	"github.com/minisgg/studio-worker/controls/presence"
	"github.com/minisgg/studio-worker/engine/host"
	"github.com/minisgg/studio-worker/studio"
)

// controlProbes are the probes the donor's controls read this machine
// with (issue 12): the idle time (controls/presence), the GPUs and the
// running programs (controls/gpuwatch). Options.Probes replaces them
// (tests); under a fake Clock with none given nothing is polled, so that
// the clock's waiters are the test's own.
func (st *Stack) controlProbes(opts Options) *studio.Probes {
	if opts.Probes != nil {
		return opts.Probes
	}
	if opts.Clock != nil {
		return nil
	}
	idle := presence.Auto()
	gpu := gpuwatch.New(gpuwatch.Options{})
	st.closeProbes = func() {
		_ = idle.Close()
		_ = gpu.Close()
	}
	gpuSources := "none (GPU use, temperature and power are unknown)"
	if s := gpu.Sources(); len(s) > 0 {
		gpuSources = strings.Join(s, ", ")
	}
	idleSources := "nowhere (presence is unknown)"
	if s := idle.Sources(); len(s) > 0 {
		idleSources = strings.Join(s, ", then ")
	}
	st.Log.Info(fmt.Sprintf("the controls read the idle time from %s and the GPU from %s", idleSources, gpuSources), "op", "controls")
	return &studio.Probes{
		Idle:     idle,
		GPU:      gpu,
		Programs: gpuwatch.NewPrograms(gpuwatch.ProgramsOptions{}),
		Own:      st.ownProcess,
	}
}

// ownProcess reports whether pid is this program or one of its engine
// processes: they never count as "another process using the GPU".
func (st *Stack) ownProcess(pid int) bool {
	if pid == os.Getpid() {
		return true
	}
	for _, c := range []*host.Client{st.Llama, st.Image} {
		if c != nil && pid != 0 && c.PID() == pid {
			return true
		}
	}
	return false
}
