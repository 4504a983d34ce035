package sd

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"github.com/minisgg/studio-worker/engine"
)

// These tests run against the real library when STUDIO_WORKER_SD_LIB names
// it. They prove that the Go mirrors of the C structs match the library:
// values written from Go come back in the right fields of the library's
// own *_to_str renderings.

func testLibrary(t *testing.T) *Library {
	t.Helper()
	path := os.Getenv(EnvLib)
	if path == "" {
		t.Skip("needs " + LibFile() + " (stable-diffusion.cpp " + PinnedVersion + "): run `make runtime`, or set " + EnvLib)
	}
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func wantLines(t *testing.T, text string, lines ...string) {
	t.Helper()
	have := map[string]bool{}
	for _, l := range strings.Split(text, "\n") {
		have[l] = true
	}
	for _, l := range lines {
		if !have[l] {
			t.Errorf("library text lacks line %q", l)
		}
	}
	if t.Failed() {
		t.Logf("library text:\n%s", text)
	}
}

func TestLibraryVersion(t *testing.T) {
	l := testLibrary(t)
	if l.Version() != PinnedVersion || !strings.HasPrefix(PinnedCommit, l.Commit()) {
		t.Fatalf("loaded %s %s", l.Version(), l.Commit())
	}
}

func TestLibraryCtxParamsLayout(t *testing.T) {
	l := testLibrary(t)
	p := new(cCtxParams)
	l.ctxParamsInit(unsafe.Pointer(p))
	wantLines(t, l.ctxParamsText(p), "model_path: ", "wtype: NONE", "rng_type: cuda", "sampler_rng_type: NONE",
		"prediction: NONE", "vae_format: auto", "flash_attn: false")

	s := cString
	p.ModelPath, p.ClipLPath, p.ClipGPath, p.ClipVisionPath = s("v-model"), s("v-clip-l"), s("v-clip-g"), s("v-clip-vision")
	p.T5XXLPath, p.LLMPath, p.LLMVisionPath, p.DiffusionModelPath = s("v-t5"), s("v-llm"), s("v-llm-vision"), s("v-diffusion")
	p.HighNoiseDiffusionModelPath, p.UncondDiffusionModelPath = s("v-high-noise"), s("v-uncond")
	p.EmbeddingsConnectorsPath, p.VAEPath, p.AudioVAEPath, p.TAESDPath = s("v-emb-conn"), s("v-vae"), s("v-audio-vae"), s("v-taesd")
	p.ControlNetPath, p.PhotoMakerPath, p.PulidWeightsPath, p.TensorTypeRules = s("v-cn"), s("v-pm"), s("v-pulid"), s("v-rules")
	p.NThreads, p.WType, p.RNGType, p.SamplerRNGType, p.Prediction = 13, 1, 2, 0, 3
	p.FlashAttn, p.DiffusionFlashAttn = true, false
	p.VAEFormat = 1
	p.MaxVRAM, p.Backend, p.ParamsBackend, p.SplitMode, p.ModelArgs = s("v-vram"), s("v-backend"), s("v-pbackend"), s("v-split"), s("v-args")
	p.StreamLayers, p.EagerLoad, p.AutoFit = true, false, true
	wantLines(t, l.ctxParamsText(p),
		"model_path: v-model", "clip_l_path: v-clip-l", "clip_g_path: v-clip-g", "clip_vision_path: v-clip-vision",
		"t5xxl_path: v-t5", "llm_path: v-llm", "llm_vision_path: v-llm-vision", "diffusion_model_path: v-diffusion",
		"high_noise_diffusion_model_path: v-high-noise", "uncond_diffusion_model_path: v-uncond",
		"embeddings_connectors_path: v-emb-conn", "vae_path: v-vae", "audio_vae_path: v-audio-vae", "taesd_path: v-taesd",
		"control_net_path: v-cn", "photo_maker_path: v-pm", "pulid_weights_path: v-pulid", "tensor_type_rules: v-rules",
		"n_threads: 13", "wtype: f16", "rng_type: cpu", "sampler_rng_type: std_default", "prediction: sd3_flow",
		"max_vram: v-vram", "stream_layers: true", "eager_load: false", "backend: v-backend", "params_backend: v-pbackend",
		"split_mode: v-split", "model_args: v-args", "auto_fit: true", "flash_attn: true", "diffusion_flash_attn: false",
		"vae_format: sd3")

	// What the engine itself writes for a job.
	spec := ctxSpec{DiffusionModelPath: "/m/unet.gguf", VAEPath: "/m/ae.safetensors", LLMPath: "/m/te.gguf",
		LLMVisionPath: "/m/mmproj.gguf", Threads: 3, OffloadToCPU: true, ZeroCondT: true}
	wantLines(t, l.ctxParamsText(l.newCtxParams(spec)),
		"model_path: ", "diffusion_model_path: /m/unet.gguf", "vae_path: /m/ae.safetensors", "llm_path: /m/te.gguf",
		"llm_vision_path: /m/mmproj.gguf", "n_threads: 3", "params_backend: *=cpu", "model_args: qwen_image_zero_cond_t=true")
}

func TestLibraryImgGenParamsLayout(t *testing.T) {
	l := testLibrary(t)
	p := new(cImgGenParams)
	l.imgGenParamsInit(unsafe.Pointer(p))
	s := cString
	p.Prompt, p.NegativePrompt, p.ClipSkip, p.Width, p.Height = s("v-prompt"), s("v-negative"), 2, 320, 192
	sp := &p.SampleParams
	sp.Guidance.TxtCfg, sp.Guidance.ImgCfg, sp.Guidance.DistilledGuidance = 4.5, 3.25, 2.75
	sp.Guidance.SLG.LayerStart, sp.Guidance.SLG.LayerEnd, sp.Guidance.SLG.Scale = 0.05, 0.3, 0.6
	sp.Scheduler, sp.SampleMethod, sp.SampleSteps, sp.Eta, sp.ShiftedTimestep = 1, 5, 7, 0.5, 11
	sp.FlowShift, sp.ExtraSampleArgs = 1.75, s("v-extra")
	p.Strength, p.Seed, p.BatchCount, p.QwenImageLayers = 0.33, 1234567890123, 3, 5
	p.RefImageArgs, p.ControlStrength = s("v-ref-args"), 0.42
	p.PMParams.StyleStrength, p.PMParams.IDEmbedPath = 12.5, s("v-pm-embed")
	p.VAETilingParams.Enabled, p.VAETilingParams.TemporalTiling, p.VAETilingParams.ExtraTilingArgs = true, false, s("v-tiling")
	p.CircularX, p.CircularY = false, true
	h := &p.Hires
	h.Enabled, h.Upscaler, h.ModelPath, h.Scale = true, 7, s("v-hires"), 1.5
	h.TargetWidth, h.TargetHeight, h.Steps, h.DenoisingStrength = 640, 384, 9, 0.55
	p.Cache.Mode, p.Cache.ReuseThreshold, p.Cache.StartPercent, p.Cache.EndPercent = 1, 0.3, 0.2, 0.8
	wantLines(t, l.imgGenParamsText(p),
		"prompt: v-prompt", "negative_prompt: v-negative", "clip_skip: 2", "width: 320", "height: 192",
		"sample_params: (txt_cfg: 4.50, img_cfg: 3.25, distilled_guidance: 2.75, slg.layer_count: 0, slg.layer_start: 0.05, "+
			"slg.layer_end: 0.30, slg.scale: 0.60, scheduler: karras, sample_method: dpm++2m, sample_steps: 7, eta: 0.50, "+
			"shifted_timestep: 11, flow_shift: 1.75, extra_sample_args: v-extra)",
		"strength: 0.33", "seed: 1234567890123", "batch_count: 3", "qwen_image_layers: 5", "ref_images_count: 0",
		"ref_image_args: v-ref-args", "control_strength: 0.42",
		"photo maker: {style_strength = 12.50, id_images_count = 0, id_embed_path = v-pm-embed}",
		"VAE tiling: true (temporal=false, extra_tiling_args=v-tiling)", "circular_x: false", "circular_y: true",
		"hires: {enabled=true, upscaler=Lanczos, model_path=v-hires, scale=1.50, target=640x384, steps=9, denoising_strength=0.55}",
		"cache: easycache (threshold=0.300, start=0.20, end=0.80)")

	// What the engine itself writes for a job.
	gs, _, err := resolveImage(&engine.ImageParams{Prompt: "a red fox <lora:x:1>", NegativePrompt: "blur", Width: 640, Height: 384,
		Steps: 6, CfgScale: f64(6.5), SamplingMethod: "euler_a", Seed: u64(99)},
		&engine.CliDefaults{CfgScale: 1, Steps: 8, Width: 1024, Height: 1024, FlowShift: f64(3)}, nil, fixedSeed)
	if err != nil {
		t.Fatal(err)
	}
	text := l.imgGenParamsText(l.newImgGenParams(gs))
	wantLines(t, text, "prompt: a red fox ", "negative_prompt: blur", "width: 640", "height: 384", "seed: 99", "batch_count: 1",
		"strength: 0.75", "clip_skip: -1")
	// Input images and denoise reach the library's fields.
	rgb := cImageData{W: 64, H: 64, C: 3, Pix: make([]byte, 64*64*3)}
	grey := cImageData{W: 64, H: 64, C: 1, Pix: make([]byte, 64*64)}
	withInputs := gs
	withInputs.Init, withInputs.Mask, withInputs.Strength = &rgb, &grey, 0.3
	withInputs.Refs = []cImageData{rgb, rgb}
	wantLines(t, l.imgGenParamsText(l.newImgGenParams(withInputs)), "strength: 0.30", "ref_images_count: 2")
	for _, frag := range []string{"txt_cfg: 6.50", "sample_method: euler_a", "sample_steps: 6", "flow_shift: 3.00", "scheduler: NONE"} {
		if !strings.Contains(text, frag) {
			t.Errorf("request lacks %q:\n%s", frag, text)
		}
	}
}

func TestLibrarySamplerNames(t *testing.T) {
	l := testLibrary(t)
	for name, v := range samplers {
		if got := l.sampleMethodName(v); got != name {
			t.Errorf("enum %d is %q in the library, %q here", v, got, name)
		}
	}
	if got := l.sampleMethodName(sampleMethodCount); got != "NONE" {
		t.Errorf("SAMPLE_METHOD_COUNT is %q, want NONE (the release has more samplers than mapped?)", got)
	}
}

// A well-formed GGUF file that is no image model: the library refuses it
// through its own error path, its log reaches ours through the callback,
// the failure is the job's (a bad model file), and the engine keeps serving.
// A file that is not even GGUF never reaches the library.
func TestLibraryEngineRejectsBadModel(t *testing.T) {
	l := testLibrary(t)
	rec := &recorder{}
	e := New(Config{LibPath: l.Path(), Threads: 1, Log: slog.New(rec)})
	if e.LoadError() != nil || len(e.Kinds()) != 1 {
		t.Fatalf("engine with library: %v %v", e.Kinds(), e.LoadError())
	}
	dir := t.TempDir()
	broken := filepath.Join(dir, "broken.gguf")
	if err := os.WriteFile(broken, []byte("GGUF but not really a model file at all"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := e.Run(context.Background(), imageJob("bad-0", map[engine.FileRole]string{engine.RoleModel: broken},
		engine.ImageParams{Prompt: "p", Width: 64, Height: 64, Steps: 1}), nil)
	if err == nil || engine.IsRetryable(err) || !strings.Contains(err.Error(), "broken.gguf: the GGUF file is malformed") {
		t.Fatalf("a file that is not GGUF: %v", err)
	}
	bad := filepath.Join(dir, "no-model.gguf")
	if err := os.WriteFile(bad, smallModelFile(t, bad, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	job := imageJob("bad-1", map[engine.FileRole]string{engine.RoleModel: bad}, engine.ImageParams{Prompt: "p", Width: 64, Height: 64, Steps: 1})
	for i := 0; i < 2; i++ {
		_, err := e.Run(context.Background(), job, nil)
		var mf *engine.ModelFileError
		if err == nil || engine.IsRetryable(err) || !strings.Contains(err.Error(), "could not load the model: ") || !errors.As(err, &mf) {
			t.Fatalf("run %d: %v", i, err)
		}
	}
	if e.ResidentVRAMBytes() != 0 {
		t.Fatal("a failed load left something resident")
	}
	found := false
	rec.mu.Lock()
	for _, r := range rec.recs {
		if attr(r, "op") == "sd-cpp" && attr(r, "src") != "" && attr(r, "job") == "bad-1" {
			found = true
		}
	}
	rec.mu.Unlock()
	if !found {
		t.Fatal("no library log line reached the job's logger")
	}
	if err := e.Release(); err != nil {
		t.Fatal(err)
	}
}
