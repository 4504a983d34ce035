package engine

// Held is what one engine holds in memory now, for the Status page.
type Held struct {
	Engine EngineName
	// Model is the path of the model file held; "" when none.
	Model string
	// Bytes is the memory the engine holds, wherever it lives: its
	// process's resident set for an engine in a child process (engine/host),
	// else the held model's size. VRAMBytes is the part on the GPU.
	Bytes, VRAMBytes uint64
	// PID is the engine's process; 0 when it runs in this one, or when no
	// process runs (then nothing is held).
	PID int
}

// heldReporter is an engine that can say what it holds (engine/host).
type heldReporter interface{ Held() Held }

// Held lists what each engine holds in memory now; an engine holding
// nothing is left out.
func (r *Runner) Held() []Held {
	var out []Held
	for _, e := range r.router.Engines() {
		h := Held{Engine: e.Name(), VRAMBytes: e.ResidentVRAMBytes()}
		if hr, ok := e.(heldReporter); ok {
			h = hr.Held()
		}
		if h.Bytes == 0 && h.VRAMBytes == 0 && h.PID == 0 && h.Model == "" {
			continue
		}
		out = append(out, h)
	}
	return out
}
