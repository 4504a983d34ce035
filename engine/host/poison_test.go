package host_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/engine/gguf"
	"github.com/minisgg/studio-worker/engine/host"
)

// TestPoisonRuleThroughARealChild runs the whole parent side, the runner,
// the model store and a real child, on a job that aborts its child: the
// first crash fails retryably, the second fails for good and takes the
// model file out of use, and the next job downloads it afresh and runs in
// a fresh child.
func TestPoisonRuleThroughARealChild(t *testing.T) {
	model, err := gguf.Ensure(gguf.Tiny())
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(model)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	var downloads atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			downloads.Add(1)
		}
		http.ServeContent(w, r, "tiny.gguf", time.Unix(0, 0), strings.NewReader(string(data)))
	}))
	defer srv.Close()
	c := fakeClient(t, host.Limits{}, -1)
	store := engine.NewStore(t.TempDir(), engine.StoreOptions{})
	defer store.Sync() // a verified file's record may still be on its way to disk
	r := engine.NewRunner(engine.RunnerConfig{Store: store, Engines: []engine.Engine{c},
		BudgetGB: func() float64 { return 8 }, Probe: noGPU{}})
	job := func(id, prompt string) engine.Job {
		j := chatJob(id, prompt)
		j.Source.Files = []engine.ModelFile{{Role: engine.RoleModel, URL: srv.URL + "/tiny.gguf", Filename: "tiny.gguf", SHA256: hex.EncodeToString(sum[:])}}
		return j
	}

	_, err = r.Run(context.Background(), job("p1", "abort"), nil)
	var ce *engine.CrashError
	if !errors.As(err, &ce) || !engine.IsRetryable(err) {
		t.Fatalf("first crash: %#v", err)
	}
	_, err = r.Run(context.Background(), job("p1", "abort"), nil)
	var je *engine.JobError
	if !errors.As(err, &je) || engine.IsRetryable(err) || !strings.HasPrefix(err.Error(), "this job has crashed the text engine twice, so it is not tried again: the text engine crashed while generating with model tiny.gguf") {
		t.Fatalf("second crash of the same job: %v", err)
	}
	if downloads.Load() != 1 {
		t.Fatalf("%d downloads before the rule applied, want 1", downloads.Load())
	}
	res, err := r.Run(context.Background(), job("p2", "fine"), nil)
	if err != nil || !strings.Contains(string(res.JSON), "fine") {
		t.Fatalf("the next job: %v", err)
	}
	if downloads.Load() != 2 {
		t.Errorf("the model file that crashed twice should have been downloaded afresh (%d downloads)", downloads.Load())
	}
	if c.Starts() != 3 {
		t.Errorf("two crashes and a job took %d children, want 3", c.Starts())
	}
}

type noGPU struct{}

func (noGPU) Probe(context.Context) engine.VRAMInfo { return engine.VRAMInfo{} }
