package sd

import (
	"strings"
	"testing"
	"unsafe"
)

// The sizes and offsets below are what a C compiler reports for the pinned
// release's stable-diffusion.h on a 64-bit target (offsetof/sizeof). They
// pin the Go mirrors to the header; the library test checks the same
// layout against the library itself.
func TestStructLayoutMatchesPinnedHeader(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) != 8 {
		t.Skip("needs a 64-bit target: the figures are for LP64/LLP64")
	}
	var cp cCtxParams
	var gp cImgGenParams
	var sp cSampleParams
	var cache cCacheParams
	var hires cHiresParams
	cases := []struct {
		name      string
		got, want uintptr
	}{
		{"sizeof sd_ctx_params_t", unsafe.Sizeof(cp), 280},
		{"sd_ctx_params_t.embeddings", unsafe.Offsetof(cp.Embeddings), 136},
		{"sd_ctx_params_t.embedding_count", unsafe.Offsetof(cp.EmbeddingCount), 144},
		{"sd_ctx_params_t.photo_maker_path", unsafe.Offsetof(cp.PhotoMakerPath), 152},
		{"sd_ctx_params_t.n_threads", unsafe.Offsetof(cp.NThreads), 176},
		{"sd_ctx_params_t.lora_apply_mode", unsafe.Offsetof(cp.LoRAApplyMode), 196},
		{"sd_ctx_params_t.enable_mmap", unsafe.Offsetof(cp.EnableMmap), 200},
		{"sd_ctx_params_t.force_sdxl_vae_conv_scale", unsafe.Offsetof(cp.ForceSDXLVAEConvScale), 206},
		{"sd_ctx_params_t.vae_format", unsafe.Offsetof(cp.VAEFormat), 208},
		{"sd_ctx_params_t.max_vram", unsafe.Offsetof(cp.MaxVRAM), 216},
		{"sd_ctx_params_t.stream_layers", unsafe.Offsetof(cp.StreamLayers), 224},
		{"sd_ctx_params_t.backend", unsafe.Offsetof(cp.Backend), 232},
		{"sd_ctx_params_t.auto_fit", unsafe.Offsetof(cp.AutoFit), 256},
		{"sd_ctx_params_t.rpc_servers", unsafe.Offsetof(cp.RPCServers), 264},
		{"sd_ctx_params_t.model_args", unsafe.Offsetof(cp.ModelArgs), 272},

		{"sizeof sd_image_t", unsafe.Sizeof(cImage{}), 24},
		{"sizeof sd_slg_params_t", unsafe.Sizeof(cSLGParams{}), 32},
		{"sizeof sd_guidance_params_t", unsafe.Sizeof(cGuidanceParams{}), 48},
		{"sizeof sd_sample_params_t", unsafe.Sizeof(sp), 96},
		{"sizeof sd_pm_params_t", unsafe.Sizeof(cPMParams{}), 32},
		{"sizeof sd_pulid_params_t", unsafe.Sizeof(cPulidParams{}), 16},
		{"sizeof sd_tiling_params_t", unsafe.Sizeof(cTilingParams{}), 32},
		{"sizeof sd_cache_params_t", unsafe.Sizeof(cache), 96},
		{"sizeof sd_hires_params_t", unsafe.Sizeof(hires), 56},
		{"sizeof sd_lora_t", unsafe.Sizeof(cLoRA{}), 16},
		{"sd_sample_params_t.scheduler", unsafe.Offsetof(sp.Scheduler), 48},
		{"sd_sample_params_t.sample_steps", unsafe.Offsetof(sp.SampleSteps), 56},
		{"sd_sample_params_t.custom_sigmas", unsafe.Offsetof(sp.CustomSigmas), 72},
		{"sd_sample_params_t.flow_shift", unsafe.Offsetof(sp.FlowShift), 84},
		{"sd_sample_params_t.extra_sample_args", unsafe.Offsetof(sp.ExtraSampleArgs), 88},
		{"sd_cache_params_t.scm_mask", unsafe.Offsetof(cache.SCMMask), 56},
		{"sd_cache_params_t.spectrum_stop_percent", unsafe.Offsetof(cache.SpectrumStopPercent), 92},
		{"sd_hires_params_t.model_path", unsafe.Offsetof(hires.ModelPath), 8},
		{"sd_hires_params_t.custom_sigmas", unsafe.Offsetof(hires.CustomSigmas), 40},
		{"sd_hires_params_t.custom_sigmas_count", unsafe.Offsetof(hires.CustomSigmasCount), 48},

		{"sizeof sd_img_gen_params_t", unsafe.Sizeof(gp), 544},
		{"sd_img_gen_params_t.prompt", unsafe.Offsetof(gp.Prompt), 16},
		{"sd_img_gen_params_t.clip_skip", unsafe.Offsetof(gp.ClipSkip), 32},
		{"sd_img_gen_params_t.init_image", unsafe.Offsetof(gp.InitImage), 40},
		{"sd_img_gen_params_t.ref_images", unsafe.Offsetof(gp.RefImages), 64},
		{"sd_img_gen_params_t.ref_image_args", unsafe.Offsetof(gp.RefImageArgs), 80},
		{"sd_img_gen_params_t.mask_image", unsafe.Offsetof(gp.MaskImage), 88},
		{"sd_img_gen_params_t.width", unsafe.Offsetof(gp.Width), 112},
		{"sd_img_gen_params_t.sample_params", unsafe.Offsetof(gp.SampleParams), 120},
		{"sd_img_gen_params_t.strength", unsafe.Offsetof(gp.Strength), 216},
		{"sd_img_gen_params_t.seed", unsafe.Offsetof(gp.Seed), 224},
		{"sd_img_gen_params_t.batch_count", unsafe.Offsetof(gp.BatchCount), 232},
		{"sd_img_gen_params_t.control_image", unsafe.Offsetof(gp.ControlImage), 240},
		{"sd_img_gen_params_t.control_strength", unsafe.Offsetof(gp.ControlStrength), 264},
		{"sd_img_gen_params_t.ip_adapter_image", unsafe.Offsetof(gp.IPAdapterImage), 272},
		{"sd_img_gen_params_t.ip_adapter_strength", unsafe.Offsetof(gp.IPAdapterStrength), 296},
		{"sd_img_gen_params_t.pm_params", unsafe.Offsetof(gp.PMParams), 304},
		{"sd_img_gen_params_t.pulid_params", unsafe.Offsetof(gp.PulidParams), 336},
		{"sd_img_gen_params_t.vae_tiling_params", unsafe.Offsetof(gp.VAETilingParams), 352},
		{"sd_img_gen_params_t.cache", unsafe.Offsetof(gp.Cache), 384},
		{"sd_img_gen_params_t.hires", unsafe.Offsetof(gp.Hires), 480},
		{"sd_img_gen_params_t.qwen_image_layers", unsafe.Offsetof(gp.QwenImageLayers), 536},
		{"sd_img_gen_params_t.circular_x", unsafe.Offsetof(gp.CircularX), 540},
		{"sd_img_gen_params_t.circular_y", unsafe.Offsetof(gp.CircularY), 541},
	}
	for _, c := range cases {
		if c.got != c.want {
			t.Errorf("%s = %d, header says %d", c.name, c.got, c.want)
		}
	}
}

func TestCheckRelease(t *testing.T) {
	cases := []struct {
		version, commit string
		ok              bool
	}{
		{PinnedVersion, PinnedCommit[:7], true},
		{PinnedVersion, PinnedCommit[:8], true},
		{PinnedVersion, PinnedCommit, true},
		{PinnedVersion, "97D29908", true},
		{PinnedVersion + "+", PinnedCommit[:8], false}, // modified tree
		{"master-826-16304cc", "16304cc3", false},      // the release before
		{PinnedVersion, "16304cc3", false},             // tag moved/forged
		{PinnedVersion, "97d", false},                  // too short to mean anything
		{"unknown", "unknown", false},                  // built outside git
		{PinnedVersion, PinnedCommit + "0", false},
		{"", "", false},
	}
	for _, c := range cases {
		err := checkRelease(c.version, c.commit)
		if (err == nil) != c.ok {
			t.Errorf("checkRelease(%q, %q) = %v, want ok=%v", c.version, c.commit, err, c.ok)
		}
		if err != nil && !contains(err.Error(), PinnedVersion) {
			t.Errorf("refusal %q does not name the release it needs", err)
		}
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
