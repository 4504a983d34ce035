package sd

import (
	"fmt"

	"github.com/minisgg/studio-worker/engine"
)

// BareGenerator loads model into a context of its own and returns a
// function that calls generate_image directly for p (no engine, no
// encoding, no progress), for benchmarks in package sd_test to compare a
// whole job against.
func BareGenerator(e *Engine, model string, threads int, p engine.ImageParams) (gen func() error, free func(), err error) {
	if e.lib == nil {
		return nil, nil, e.loadErr
	}
	gs, _, err := resolveImage(&p, nil, nil, randomSeed)
	if err != nil {
		return nil, nil, err
	}
	runSlot <- struct{}{}
	h, err := e.lib.newContext(ctxSpec{ModelPath: model, Threads: threads})
	<-runSlot
	if err != nil {
		return nil, nil, err
	}
	gen = func() error {
		runSlot <- struct{}{}
		defer func() { <-runSlot }()
		img, err := e.lib.generate(h, gs)
		if err == nil && (img.Rect.Dx() != gs.Width || img.Rect.Dy() != gs.Height) {
			err = fmt.Errorf("bare generate made %v", img.Rect)
		}
		return err
	}
	free = func() {
		runSlot <- struct{}{}
		e.lib.freeContext(h)
		<-runSlot
	}
	return gen, free, nil
}
