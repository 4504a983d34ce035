package stack

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minisgg/studio-worker/engine"
)

// The models folder's disk budget applies when saved, without a restart,
// to the folder in use and to one chosen later; a budget below what the
// downloaded models take now says what happens next.
func TestDiskBudgetFollowsTheSettings(t *testing.T) {
	st, err := New(testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Shutdown(time.Second)
	root := st.Models().Root()
	dir := filepath.Join(root, "m")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// A model as the store keeps it: its id record and one file.
	meta, _ := json.Marshal(map[string]string{"id": "m", "engine": string(engine.EngineLlamaCpp)})
	if err := os.WriteFile(filepath.Join(dir, ".studio-model.json"), meta, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "m.gguf"), make([]byte, 2<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if u, err := st.Models().BudgetUse(); err != nil || u.BudgetBytes != 0 || u.UsedBytes != 2<<20 {
		t.Fatalf("before: %+v, %v", u, err)
	}
	s := st.Settings.Current()
	s.ModelsDiskBudgetGB = 1.0 / 1024 // 1 MiB
	note, err := st.Settings.Save(s)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(note, "take 2.0 MB, over the new disk budget by 1.0 MB") {
		t.Errorf("note %q", note)
	}
	if u, _ := st.Models().BudgetUse(); u.BudgetBytes != 1<<20 {
		t.Fatalf("budget in force %d, want %d", u.BudgetBytes, 1<<20)
	}
	s.ModelsDir = filepath.Join(t.TempDir(), "elsewhere")
	if _, err := st.Settings.Save(s); err != nil {
		t.Fatal(err)
	}
	if u, _ := st.Models().BudgetUse(); u.BudgetBytes != 1<<20 {
		t.Fatalf("a new models folder has budget %d, want %d", u.BudgetBytes, 1<<20)
	}
}
