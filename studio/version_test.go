package studio

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/BurntSushi/toml"
)

// FyneApp.toml feeds the packaged app's metadata and Version feeds the
// studio's agentVersion; a release must not tell them apart.
func TestVersionMatchesFyneApp(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "FyneApp.toml"))
	if err != nil {
		t.Fatalf("reading FyneApp.toml: %v", err)
	}
	var meta struct {
		Details struct {
			Version string
			ID      string
			Name    string
			Build   int
		}
	}
	if err := toml.Unmarshal(data, &meta); err != nil {
		t.Fatalf("FyneApp.toml: %v", err)
	}
	if meta.Details.Version != Version {
		t.Errorf("FyneApp.toml Version %q != studio.Version %q", meta.Details.Version, Version)
	}
	if meta.Details.ID == "" || meta.Details.Name == "" || meta.Details.Build < 1 {
		t.Errorf("FyneApp.toml details incomplete: %+v", meta.Details)
	}
	if UserAgent() != "studio-worker/"+Version {
		t.Errorf("UserAgent = %q", UserAgent())
	}
}
