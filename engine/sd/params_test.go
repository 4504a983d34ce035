package sd

import (
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/minisgg/studio-worker/engine"
)

func fixedSeed() int64 { return 4242 }

func f64(v float64) *float64 { return &v }
func u64(v uint64) *uint64   { return &v }
func bptr(v bool) *bool      { return &v }

func TestResolveImageProtocolDefaults(t *testing.T) {
	s, notes, err := resolveImage(&engine.ImageParams{Prompt: "a cat"}, nil, nil, fixedSeed)
	if err != nil {
		t.Fatal(err)
	}
	if s.Width != 512 || s.Height != 512 || s.Steps != 20 || s.Ext != "webp" {
		t.Fatalf("defaults = %dx%d %d steps %s, want 512x512 20 steps webp", s.Width, s.Height, s.Steps, s.Ext)
	}
	if !math.IsNaN(s.CfgScale) || !math.IsNaN(s.FlowShift) || s.Sampler != sampleMethodCount {
		t.Fatalf("cfg/flow/sampler should be left to the library, got %v %v %d", s.CfgScale, s.FlowShift, s.Sampler)
	}
	if s.Seed != 4242 || len(notes) != 0 {
		t.Fatalf("seed %d notes %v", s.Seed, notes)
	}
}

func TestResolveImageCliDefaultsThenTask(t *testing.T) {
	cd := &engine.CliDefaults{CfgScale: 1, Steps: 8, Width: 1024, Height: 768, SamplingMethod: "euler", FlowShift: f64(3)}
	s, _, err := resolveImage(&engine.ImageParams{Prompt: "p"}, cd, nil, fixedSeed)
	if err != nil {
		t.Fatal(err)
	}
	if s.Width != 1024 || s.Height != 768 || s.Steps != 8 || s.CfgScale != 1 || s.Sampler != 0 || s.FlowShift != 3 {
		t.Fatalf("cliDefaults not applied: %+v", s)
	}
	task := &engine.ImageParams{Prompt: "p", Width: 640, Height: 512, Steps: 4, CfgScale: f64(2.5),
		SamplingMethod: "DPM++2M", Seed: u64(7), Ext: "PNG", NegativePrompt: "blurry"}
	s, _, err = resolveImage(task, cd, nil, fixedSeed)
	if err != nil {
		t.Fatal(err)
	}
	if s.Width != 640 || s.Height != 512 || s.Steps != 4 || s.CfgScale != 2.5 || s.Sampler != 5 ||
		s.Seed != 7 || s.Ext != "png" || s.NegativePrompt != "blurry" || s.FlowShift != 3 {
		t.Fatalf("task values must win over cliDefaults: %+v", s)
	}
}

func TestSamplerMapping(t *testing.T) {
	want := map[string]int32{"euler": 0, "euler_a": 1, "heun": 2, "dpm2": 3, "dpm++2s_a": 4, "dpm++2m": 5,
		"dpm++2mv2": 6, "ipndm": 7, "ipndm_v": 8, "lcm": 9, "ddim_trailing": 10, "tcd": 11, "lms": 20}
	for name, v := range want {
		got, err := samplerEnum(name)
		if err != nil || got != v {
			t.Errorf("samplerEnum(%q) = %d, %v; want %d", name, got, err, v)
		}
	}
	if len(samplers) != int(sampleMethodCount) {
		t.Errorf("%d samplers mapped, the release has %d", len(samplers), sampleMethodCount)
	}
	seen := map[int32]string{}
	for n, v := range samplers {
		if v < 0 || v >= sampleMethodCount {
			t.Errorf("%s -> %d is outside the enum", n, v)
		}
		if o, dup := seen[v]; dup {
			t.Errorf("%s and %s share value %d", n, o, v)
		}
		seen[v] = n
	}
	_, _, err := resolveImage(&engine.ImageParams{Prompt: "p", SamplingMethod: "k_magic"}, nil, nil, fixedSeed)
	if !engine.IsCannotServe(err) || !strings.Contains(err.Error(), "k_magic") || !strings.Contains(err.Error(), "euler_a") {
		t.Fatalf("unknown sampler: %v", err)
	}
}

func TestResolveImageRefusals(t *testing.T) {
	cases := []struct {
		name        string
		p           engine.ImageParams
		cannotServe bool
		words       string
	}{
		{"mask without init", engine.ImageParams{Prompt: "p", MaskURL: "https://x/m.png"}, false, "maskUrl: a mask needs"},
		{"denoise above 1", engine.ImageParams{Prompt: "p", InitImageURL: "https://x/i.png", Denoise: f64(1.5)}, false, "denoise: denoise 1.5 is outside 0 to 1"},
		{"negative denoise", engine.ImageParams{Prompt: "p", InitImageURL: "https://x/i.png", Denoise: f64(-0.1)}, false, "denoise"},
		{"width not a multiple of 8", engine.ImageParams{Prompt: "p", Width: 100, Height: 72}, false, "width: image size 100x72: each side must be a multiple of 8"},
		{"empty prompt", engine.ImageParams{Prompt: "  "}, false, "prompt is empty"},
		{"nul", engine.ImageParams{Prompt: "a\x00b"}, false, "NUL"},
		{"huge width", engine.ImageParams{Prompt: "p", Width: 100000}, false, "outside"},
		{"negative height", engine.ImageParams{Prompt: "p", Height: -5}, false, "outside"},
		{"too many pixels", engine.ImageParams{Prompt: "p", Width: 4096, Height: 4096}, false, "larger"},
		{"zero-ish steps", engine.ImageParams{Prompt: "p", Steps: -1}, false, "steps"},
		{"absurd steps", engine.ImageParams{Prompt: "p", Steps: 100000}, false, "steps"},
		{"nan cfg", engine.ImageParams{Prompt: "p", CfgScale: f64(math.NaN())}, false, ""},
		{"inf cfg", engine.ImageParams{Prompt: "p", CfgScale: f64(math.Inf(1))}, false, "cfg"},
		{"negative cfg", engine.ImageParams{Prompt: "p", CfgScale: f64(-1)}, false, "cfg"},
		{"jpeg", engine.ImageParams{Prompt: "p", Ext: "jpg"}, true, "jpg"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := c.p
			_, _, err := resolveImage(&p, nil, nil, fixedSeed)
			if c.name == "nan cfg" {
				// NaN is not a number a job can mean; it must not reach
				// the library as "use the default" silently either.
				if err == nil {
					t.Fatal("NaN cfg scale accepted")
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			if engine.IsCannotServe(err) != c.cannotServe {
				t.Fatalf("cannot-serve = %v for %v", engine.IsCannotServe(err), err)
			}
			if engine.IsRetryable(err) {
				t.Fatalf("a bad job would be retried: %v", err)
			}
			if !strings.Contains(err.Error(), c.words) {
				t.Fatalf("error %q lacks %q", err, c.words)
			}
		})
	}
}

func TestSeedHandling(t *testing.T) {
	s, _, _ := resolveImage(&engine.ImageParams{Prompt: "p", Seed: u64(0)}, nil, nil, fixedSeed)
	if s.Seed != 0 {
		t.Fatalf("explicit seed 0 replaced by %d", s.Seed)
	}
	s, notes, _ := resolveImage(&engine.ImageParams{Prompt: "p", Seed: u64(math.MaxUint64)}, nil, nil, fixedSeed)
	if s.Seed < 0 || s.Seed != math.MaxInt64 || len(notes) != 1 {
		t.Fatalf("u64 seed folded to %d, notes %v", s.Seed, notes)
	}
	a, b := randomSeed(), randomSeed()
	if a < 0 || b < 0 || a >= 1<<53 || b >= 1<<53 {
		t.Fatalf("random seeds %d %d out of range", a, b)
	}
}

func TestContextSpecRoles(t *testing.T) {
	files := map[engine.FileRole]string{
		engine.RoleDiffusionModel:    "/m/unet.gguf",
		engine.RoleTextEncoder:       "/m/qwen.gguf",
		engine.RoleTextEncoderVision: "/m/mmproj.gguf",
		engine.RoleVAE:               "/m/ae.safetensors",
		engine.RoleLoRA:              "/m/style.safetensors",
	}
	s, err := contextSpec(files, &engine.CliDefaults{OffloadToCPU: bptr(true), ZeroCondT: bptr(true)}, 3)
	if err != nil {
		t.Fatal(err)
	}
	if s.DiffusionModelPath != "/m/unet.gguf" || s.LLMPath != "/m/qwen.gguf" || s.LLMVisionPath != "/m/mmproj.gguf" ||
		s.VAEPath != "/m/ae.safetensors" || s.ModelPath != "" || len(s.LoRAFiles) != 1 || s.Threads != 3 ||
		!s.OffloadToCPU || !s.ZeroCondT {
		t.Fatalf("roles mapped wrongly: %+v", s)
	}
	if got := len(s.paths()); got != 4 {
		t.Fatalf("paths() = %d files, want 4 (LoRAs load per job)", got)
	}
	other := s
	other.LoRAFiles = nil
	if other.key() != s.key() {
		t.Fatal("LoRAs must not force a reload")
	}
	other.VAEPath = "/m/other.safetensors"
	if other.key() == s.key() {
		t.Fatal("a different VAE must not reuse the warm context")
	}

	if _, err := contextSpec(map[engine.FileRole]string{engine.RoleVAE: "/v"}, nil, 1); !engine.IsCannotServe(err) {
		t.Fatalf("no model file: %v", err)
	}
	if _, err := contextSpec(map[engine.FileRole]string{engine.RoleModel: "/m", "weird": "/w"}, nil, 1); !engine.IsCannotServe(err) {
		t.Fatalf("unknown role: %v", err)
	}
	s, _ = contextSpec(map[engine.FileRole]string{engine.RoleModel: "/m/sd15.safetensors"}, nil, 1)
	if s.ModelPath != "/m/sd15.safetensors" || s.OffloadToCPU || s.ZeroCondT {
		t.Fatalf("single-file model: %+v", s)
	}
}

func TestExtractLoRAs(t *testing.T) {
	dir := t.TempDir()
	style := filepath.Join(dir, "style.safetensors")
	files := []string{style}

	prompt, uses, notes := extractLoRAs("a cat <lora:style:0.8>, oil <lora:style.safetensors:0.2> <lora:../../etc/passwd:1> <lora:missing:1> <lora:style:abc>", files)
	if strings.Contains(prompt, "<lora") {
		t.Fatalf("tags left in prompt: %q", prompt)
	}
	if len(uses) != 1 || uses[0].Path != style || math.Abs(float64(uses[0].Multiplier)-1.0) > 1e-6 {
		t.Fatalf("uses = %+v, want style at 1.0 (0.8+0.2)", uses)
	}
	if len(notes) != 3 {
		t.Fatalf("notes = %q, want 3 (path, missing, bad multiplier)", notes)
	}
	prompt, uses, notes = extractLoRAs("plain <lora:style:1>", nil)
	if prompt != "plain " || len(uses) != 0 || len(notes) != 1 || !strings.Contains(notes[0], "no LoRA file") {
		t.Fatalf("without LoRA files: %q %v %q", prompt, uses, notes)
	}
}
