package studio_test

import (
	"context"
	"strings"
	"testing"

	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/studio"
)

// idleLLM is an engine double that serves llm jobs and holds nothing.
type idleLLM struct{}

func (idleLLM) Name() engine.EngineName   { return engine.EngineLlamaCpp }
func (idleLLM) Kinds() []engine.TaskKind  { return []engine.TaskKind{engine.KindLLM} }
func (idleLLM) Release() error            { return nil }
func (idleLLM) ResidentVRAMBytes() uint64 { return 0 }
func (idleLLM) Run(context.Context, engine.Job, engine.ProgressFunc) (engine.Result, error) {
	return engine.Result{JSON: []byte(`{}`)}, nil
}

type unknownVRAM struct{}

func (unknownVRAM) Probe(context.Context) engine.VRAMInfo { return engine.VRAMInfo{} }

// An offer whose model is bigger than the models folder budget is turned
// down before accept, with no reject code (the studio offers it elsewhere
// without counting an attempt), and the worker's idle line says why.
func TestIntegrationOfferOverTheDiskBudgetIsTurnedDown(t *testing.T) {
	rs := startRawStudio(t)
	store := engine.NewStore(t.TempDir(), engine.StoreOptions{Budget: func() uint64 { return 6 << 30 }})
	runner := engine.NewRunner(engine.RunnerConfig{Store: store, Engines: []engine.Engine{idleLLM{}},
		BudgetGB: func() float64 { return 100 }, Probe: unknownVRAM{}})
	tw := rawWorker(t, rs, runner)
	rc := rs.nextConn(t)

	claim := rawClaim("huge", 1)
	src := *claim.ModelSource
	src.Files = []engine.ModelFile{{Role: engine.RoleModel, URL: "https://models.example/huge.gguf", Filename: "huge.gguf",
		ApproxBytes: 79 * (1 << 30) / 10}}
	claim.ModelSource = &src
	rc.offer(t, claim)
	const why = "this job's model needs 7.90 GB; the models folder budget you set in Settings is 6.00 GB"
	r, ok := rc.next(t).(*studio.Reject)
	if !ok || r.JobID != "huge" || r.Code != "" || r.Reason != why {
		t.Fatalf("want a reject without code saying %q, got %#v", why, r)
	}
	waitSnap(t, tw.w, "idle with the disk budget reason", func(s studio.Snapshot) bool {
		return s.IdleReason == "last offer turned down: "+why
	})
	if !strings.Contains(tw.w.Snapshot().LastReject, "models folder budget") {
		t.Fatalf("last reject %q", tw.w.Snapshot().LastReject)
	}
}
