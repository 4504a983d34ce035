package gpuwatch

import "context"

func (p *Programs) platformList(ctx context.Context) ([]procNames, error) {
	return listProc(ctx, p.procRoot)
}
