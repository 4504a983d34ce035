package stack

import (
	"fmt"
	"strings"
	"sync"

	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/settings"
)

// Controller holds the live settings and saves them: to the file, to the
// login entry, to the engines and to the worker, without a restart where
// the parts allow it.
type Controller struct {
	store *settings.Store
	stack *Stack

	mu  sync.Mutex
	cur settings.Settings
}

// Current is the settings in force now.
func (c *Controller) Current() settings.Settings {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur
}

// override changes the settings in force for this run only (the dev
// studio's URL); the file keeps what the donor saved.
func (c *Controller) override(f func(*settings.Settings)) {
	c.mu.Lock()
	f(&c.cur)
	c.mu.Unlock()
}

// Save validates, persists and applies s. The note tells the donor how
// the change applies: what waits for a restart, and what a new models
// folder means for the models in the old one.
func (c *Controller) Save(s settings.Settings) (string, error) {
	st := c.stack
	detected := 0.0
	if st.Runner != nil {
		if v := st.Runner.VRAM(); v.Known {
			detected = v.TotalGB()
		}
	}
	if err := s.Validate(detected); err != nil {
		return "", err
	}
	if err := c.store.Save(s); err != nil {
		return "", err
	}
	c.mu.Lock()
	old := c.cur
	c.cur = s
	c.mu.Unlock()

	var problems, later, notes []string
	if st.opts.Autostart && (s.StartAtLogin != old.StartAtLogin || s.StartAtLogin) {
		if err := st.loginStart().Apply(s.StartAtLogin); err != nil {
			problems = append(problems, err.Error())
		}
	}
	if !st.opts.Autostart && st.opts.DevStudio && s.StartAtLogin && !old.StartAtLogin {
		notes = append(notes, "Start at login is saved, but no login entry is written while Studio Worker runs against the dev studio (make run): an entry made now would start this test setup at every login. The installed app writes it.")
	}
	if s.Threads != old.Threads {
		if st.Llama != nil {
			st.Llama.SetThreads(s.Threads)
		}
		if st.Image != nil && st.Image.LoadError() == nil {
			// stable-diffusion.cpp takes its thread count when it loads.
			later = append(later, "the new thread count for image jobs")
		}
	}
	if st.Runner != nil && st.useModelsDir(s.ModelsDir) {
		notes = append(notes, "New jobs use the new models folder; models downloaded to the old one stay there (move their folders over to use them without downloading again).")
		if st.Worker != nil && st.Worker.Snapshot().Current != nil {
			notes = append(notes, "The job running now finishes with the old folder.")
		}
	}
	if s.ModelsDiskBudgetBytes() != old.ModelsDiskBudgetBytes() && st.Runner != nil {
		st.logDiskBudget()
		if u, err := st.Runner.Store().BudgetUse(); err == nil && u.Over() > 0 {
			notes = append(notes, fmt.Sprintf("The models the worker downloaded take %s, over the new disk budget by %s: the ones used longest ago are deleted when the next download needs room.",
				engine.FormatSize(u.UsedBytes), engine.FormatSize(u.Over())))
		}
	}
	if s.LlamaLibDir != old.LlamaLibDir || s.SDLibPath != old.SDLibPath {
		later = append(later, "the new engine libraries")
	}
	if s.LocalAPIOff != old.LocalAPIOff || s.APIPort() != old.APIPort() {
		st.applyLocalAPI(s)
	}
	if st.Worker != nil {
		final := isFinal(st.Worker.Snapshot())
		st.Worker.ApplySettings()
		// A worker that stopped on an unusable setting (a bad studio
		// address) starts again with the new one.
		if final {
			st.restartAfterStop(true)
		}
	}
	st.Log.Info("settings saved and applied", "op", "settings")
	note := notes
	if len(later) > 0 {
		note = append(note, "Studio Worker uses "+strings.Join(later, " and ")+" from its next start.")
	}
	if len(problems) > 0 {
		note = append(note, "But: "+strings.Join(problems, "; ")+".")
	}
	return strings.Join(note, " "), nil
}
