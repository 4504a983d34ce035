package ui

import (
	"path/filepath"
	"strings"
	"testing"

	"fyne.io/fyne/v2/test"

	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/settings"
)

// The Models page says what the disk budget counts and how much of it is
// used; a folder the worker did not download is marked as never deleted.
func TestModelsPageShowsTheDiskBudget(t *testing.T) {
	h := newHarness(t, idleSnap())
	h.models.budget = 20 << 30
	h.models.models = []engine.StoredModel{
		{ID: "a", Dir: filepath.Join(h.models.root, "a"), Bytes: 12 << 30, Engine: "llama-cpp", Downloaded: true},
		{ID: "b", Dir: filepath.Join(h.models.root, "b"), Bytes: 1 << 29, Engine: "sd-cpp", Downloaded: true},
		{ID: "mine", Dir: filepath.Join(h.models.root, "mine"), Bytes: 5 << 30},
	}
	h.main.Show(PageModels)
	mp := h.main.Models
	want := "Disk budget: 12.50 GB of 20.00 GB used by 2 downloaded models. When a download needs room, the models used longest ago are deleted (never one in use or loaded); files you put in the models folder yourself are not counted and never deleted."
	if got := mp.budget.Text; got != want {
		t.Errorf("budget line %q\nwant %q", got, want)
	}
	markup := test.RenderObjectToMarkup(mp.Content())
	if strings.Count(markup, "the disk budget never deletes it") != 1 {
		t.Error("the donor's own folder (and it alone) should be marked as never deleted by the budget")
	}
	// A budget below what is stored: how far over, and what happens.
	h.models.budget = 20 << 20
	h.models.models = []engine.StoredModel{
		{ID: "a", Dir: filepath.Join(h.models.root, "a"), Bytes: 38<<20 + 300<<10, Engine: "llama-cpp", Downloaded: true},
	}
	mp.Reload()
	want = "Disk budget: 38.3 MB of 20.0 MB used by 1 downloaded model, over the budget by 18.3 MB: the models used longest ago go at the next download that needs room"
	if got := mp.budget.Text; !strings.HasPrefix(got, want) {
		t.Errorf("over the budget %q\nwant %q…", got, want)
	}
	if markup := test.RenderObjectToMarkup(mp.Content()); !strings.Contains(markup, "38.3 MB · llama-cpp") {
		t.Errorf("the model's row does not say 38.3 MB: %s", markup)
	}
	h.models.budget = 0
	h.models.models = []engine.StoredModel{
		{ID: "a", Dir: filepath.Join(h.models.root, "a"), Bytes: 12 << 30, Engine: "llama-cpp", Downloaded: true},
		{ID: "b", Dir: filepath.Join(h.models.root, "b"), Bytes: 1 << 29, Engine: "sd-cpp", Downloaded: true},
	}
	mp.Reload()
	if got := mp.budget.Text; !strings.HasPrefix(got, "Disk budget: 12.50 GB used by 2 downloaded models (no budget set); set one on the Settings page") {
		t.Errorf("without a budget: %q", got)
	}
}

// The disk budget field: a word or a negative number is refused next to
// the field with its own message, alongside another bad field; a number is
// saved; the saved value is shown on Load.
func TestSettingsDiskBudgetField(t *testing.T) {
	h := newHarness(t, idleSnap())
	sp := h.main.Settings
	for _, c := range []struct{ in, want string }{
		{"lots", "Must be a number of GB; 0 means no budget."},
		{"-1", "Must be a number of GB between 0 (no budget) and 100000."},
		{"NaN", "Must be a number of GB between 0 (no budget) and 100000."},
		{"1e9", "Must be a number of GB between 0 (no budget) and 100000."},
	} {
		sp.Load()
		sp.diskBudget.SetText(c.in)
		if sp.diskBudget.Validate() == nil {
			t.Errorf("%q: the entry accepts it while typing", c.in)
		}
		sp.threads.SetText("-2")
		test.Tap(sp.save)
		if len(h.settings.saved) != 0 {
			t.Fatalf("%q was saved", c.in)
		}
		if got := sp.FieldError(settings.FieldModelsDiskBudget); got != c.want {
			t.Errorf("%q: error %q, want %q", c.in, got, c.want)
		}
		if sp.FieldError(settings.FieldThreads) == "" || sp.result.Text != "Not saved: fix the 2 fields marked above." {
			t.Errorf("%q: the other bad field is not marked too: %q", c.in, sp.result.Text)
		}
		test.Type(sp.diskBudget, "0")
		if got := sp.FieldError(settings.FieldModelsDiskBudget); got != "" {
			t.Errorf("error stays after editing: %q", got)
		}
	}
	sp.Load()
	sp.diskBudget.SetText(" 6.5 ")
	test.Tap(sp.save)
	if len(h.settings.saved) != 1 || h.settings.saved[0].ModelsDiskBudgetGB != 6.5 {
		t.Fatalf("saved %+v; result %q", h.settings.saved, sp.result.Text)
	}
	sp.Load()
	if sp.diskBudget.Text != "6.5" {
		t.Errorf("loaded %q", sp.diskBudget.Text)
	}
}
