//go:build !linux && !windows && !darwin

package gpuwatch

import (
	"context"
	"runtime"
)

func (p *Programs) platformList(ctx context.Context) ([]procNames, error) {
	return nil, unknownf("running programs are not listed on %s", runtime.GOOS)
}
