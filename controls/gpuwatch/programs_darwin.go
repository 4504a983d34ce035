package gpuwatch

import (
	"context"
	"os/exec"
	"time"
)

// platformList runs `ps -axo comm=`: one executable path (or name) a line.
func (p *Programs) platformList(ctx context.Context) ([]procNames, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ps", "-axo", "comm=").Output()
	if err != nil {
		return nil, unknownf("the process list cannot be read (ps): %v", err)
	}
	return parsePSComm(out), nil
}
