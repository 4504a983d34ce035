package sd

import "unsafe"

// The one stable-diffusion.cpp release this binding is written for. Its C
// structs change between releases without any version field in them, so a
// library built from anything else would be handed structs of the wrong
// shape: it is refused at load time instead (see checkRelease).
const (
	// PinnedVersion is what sd_version() returns for the release (the
	// output of `git describe --tags` when it was built).
	PinnedVersion = "master-827-97d2990"
	// PinnedCommit is the release's full commit; sd_commit() returns an
	// abbreviation of it.
	PinnedCommit = "97d2990807fe6d558e395f8764198d7c7e7b411c"
)

// The Go types below mirror the C structs of stable-diffusion.h at the
// pinned release, field for field and in the same order. Go lays out
// bool/int32/float32/int64/pointer fields with the same sizes and alignment
// as C does on every 64-bit platform we ship for, so the offsets match; the
// tests pin each offset and size to what a C compiler reports for the
// release's header, and the layout test checks them against the library
// itself. Pointer fields hold either C memory or Go heap memory that is kept
// alive for the duration of the call that uses it.

// Enum values of the pinned release.
const (
	sdTypeCount       int32 = 42 // SD_TYPE_COUNT: "let the library choose"
	rngCUDA           int32 = 1  // CUDA_RNG
	rngTypeCount      int32 = 3  // RNG_TYPE_COUNT
	predictionCount   int32 = 7  // PREDICTION_COUNT
	sampleMethodCount int32 = 21 // SAMPLE_METHOD_COUNT: "model's default"
	schedulerCount    int32 = 16 // SCHEDULER_COUNT: "model's default"
	vaeFormatAuto     int32 = -1 // SD_VAE_FORMAT_AUTO
	cancelAll         int32 = 0  // SD_CANCEL_ALL
	logDebug          int32 = 0  // SD_LOG_DEBUG
	logInfo           int32 = 1  // SD_LOG_INFO
	logWarn           int32 = 2  // SD_LOG_WARN
	logError          int32 = 3  // SD_LOG_ERROR
)

// cCtxParams mirrors sd_ctx_params_t.
type cCtxParams struct {
	ModelPath                   *byte
	ClipLPath                   *byte
	ClipGPath                   *byte
	ClipVisionPath              *byte
	T5XXLPath                   *byte
	LLMPath                     *byte
	LLMVisionPath               *byte
	DiffusionModelPath          *byte
	HighNoiseDiffusionModelPath *byte
	UncondDiffusionModelPath    *byte
	EmbeddingsConnectorsPath    *byte
	VAEPath                     *byte
	AudioVAEPath                *byte
	TAESDPath                   *byte
	ControlNetPath              *byte
	IPAdapterPath               *byte
	MotionModulePath            *byte
	Embeddings                  unsafe.Pointer // const sd_embedding_t*
	EmbeddingCount              uint32
	PhotoMakerPath              *byte
	PulidWeightsPath            *byte
	TensorTypeRules             *byte
	NThreads                    int32
	WType                       int32
	RNGType                     int32
	SamplerRNGType              int32
	Prediction                  int32
	LoRAApplyMode               int32
	EnableMmap                  bool
	FlashAttn                   bool
	DiffusionFlashAttn          bool
	TAEPreviewOnly              bool
	DiffusionConvDirect         bool
	VAEConvDirect               bool
	ForceSDXLVAEConvScale       bool
	VAEFormat                   int32
	MaxVRAM                     *byte
	StreamLayers                bool
	EagerLoad                   bool
	Backend                     *byte
	ParamsBackend               *byte
	SplitMode                   *byte
	AutoFit                     bool
	RPCServers                  *byte
	ModelArgs                   *byte
}

// cImage mirrors sd_image_t.
type cImage struct {
	Width   uint32
	Height  uint32
	Channel uint32
	Data    *byte
}

// cSLGParams mirrors sd_slg_params_t.
type cSLGParams struct {
	Layers     *int32
	LayerCount uintptr // size_t
	LayerStart float32
	LayerEnd   float32
	Scale      float32
}

// cGuidanceParams mirrors sd_guidance_params_t.
type cGuidanceParams struct {
	TxtCfg            float32
	ImgCfg            float32
	DistilledGuidance float32
	SLG               cSLGParams
}

// cSampleParams mirrors sd_sample_params_t.
type cSampleParams struct {
	Guidance          cGuidanceParams
	Scheduler         int32
	SampleMethod      int32
	SampleSteps       int32
	Eta               float32
	ShiftedTimestep   int32
	CustomSigmas      *float32
	CustomSigmasCount int32
	FlowShift         float32
	ExtraSampleArgs   *byte
}

// cPMParams mirrors sd_pm_params_t (PhotoMaker).
type cPMParams struct {
	IDImages      *cImage
	IDImagesCount int32
	IDEmbedPath   *byte
	StyleStrength float32
}

// cPulidParams mirrors sd_pulid_params_t.
type cPulidParams struct {
	IDEmbeddingPath *byte
	IDWeight        float32
}

// cTilingParams mirrors sd_tiling_params_t.
type cTilingParams struct {
	Enabled         bool
	TemporalTiling  bool
	TileSizeX       int32
	TileSizeY       int32
	TargetOverlap   float32
	RelSizeX        float32
	RelSizeY        float32
	ExtraTilingArgs *byte
}

// cCacheParams mirrors sd_cache_params_t.
type cCacheParams struct {
	Mode                     int32
	ReuseThreshold           float32
	StartPercent             float32
	EndPercent               float32
	ErrorDecayRate           float32
	UseRelativeThreshold     bool
	ResetErrorOnCompute      bool
	FnComputeBlocks          int32
	BnComputeBlocks          int32
	ResidualDiffThreshold    float32
	MaxWarmupSteps           int32
	MaxCachedSteps           int32
	MaxContinuousCachedSteps int32
	TaylorseerNDerivatives   int32
	TaylorseerSkipInterval   int32
	SCMMask                  *byte
	SCMPolicyDynamic         bool
	SpectrumW                float32
	SpectrumM                int32
	SpectrumLam              float32
	SpectrumWindowSize       int32
	SpectrumFlexWindow       float32
	SpectrumWarmupSteps      int32
	SpectrumStopPercent      float32
}

// cHiresParams mirrors sd_hires_params_t.
type cHiresParams struct {
	Enabled           bool
	Upscaler          int32
	ModelPath         *byte
	Scale             float32
	TargetWidth       int32
	TargetHeight      int32
	Steps             int32
	DenoisingStrength float32
	UpscaleTileSize   int32
	CustomSigmas      *float32
	CustomSigmasCount int32
}

// cLoRA mirrors sd_lora_t.
type cLoRA struct {
	IsHighNoise bool
	Multiplier  float32
	Path        *byte
}

// cImgGenParams mirrors sd_img_gen_params_t.
type cImgGenParams struct {
	LoRAs             *cLoRA
	LoRACount         uint32
	Prompt            *byte
	NegativePrompt    *byte
	ClipSkip          int32
	InitImage         cImage
	RefImages         *cImage
	RefImagesCount    int32
	RefImageArgs      *byte
	MaskImage         cImage
	Width             int32
	Height            int32
	SampleParams      cSampleParams
	Strength          float32
	Seed              int64
	BatchCount        int32
	ControlImage      cImage
	ControlStrength   float32
	IPAdapterImage    cImage
	IPAdapterStrength float32
	PMParams          cPMParams
	PulidParams       cPulidParams
	VAETilingParams   cTilingParams
	Cache             cCacheParams
	Hires             cHiresParams
	QwenImageLayers   int32
	CircularX         bool
	CircularY         bool
}
