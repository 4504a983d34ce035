package sd

import (
	"fmt"
	"math"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/minisgg/studio-worker/engine"
)

// samplers maps the studio's samplingMethod names to the pinned release's
// enum sample_method_t. The names are the library's own
// (sample_method_to_str); the layout test checks each value against
// sd_sample_method_name in the library.
var samplers = map[string]int32{
	"euler":          0,
	"euler_a":        1,
	"heun":           2,
	"dpm2":           3,
	"dpm++2s_a":      4,
	"dpm++2m":        5,
	"dpm++2mv2":      6,
	"ipndm":          7,
	"ipndm_v":        8,
	"lcm":            9,
	"ddim_trailing":  10,
	"tcd":            11,
	"res_multistep":  12,
	"res_2s":         13,
	"er_sde":         14,
	"euler_cfg_pp":   15,
	"euler_a_cfg_pp": 16,
	"euler_ge":       17,
	"dpm++2m_sde":    18,
	"dpm++2m_sde_bt": 19,
	"lms":            20,
}

// SamplerNames lists the sampling methods this worker accepts, sorted.
func SamplerNames() []string {
	names := make([]string, 0, len(samplers))
	for n := range samplers {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// samplerEnum resolves a samplingMethod. Empty means "the model's default",
// which the library picks (SAMPLE_METHOD_COUNT).
func samplerEnum(name string) (int32, error) {
	n := strings.ToLower(strings.TrimSpace(name))
	if n == "" {
		return sampleMethodCount, nil
	}
	if v, ok := samplers[n]; ok {
		return v, nil
	}
	return 0, fmt.Errorf("unknown sampling method %q (this worker knows %s)", name, strings.Join(SamplerNames(), ", "))
}

// Limits on what a job may ask for: beyond them a request is refused with a
// clear error rather than handed to the library, which would try to allocate
// whatever it is told to.
const (
	MinSide      = 64
	MaxSide      = 4096
	MaxPixels    = 2048 * 2048
	MaxSteps     = 150
	MaxCfgScale  = 100.0
	maxPromptLen = 64 << 10
)

// genSpec is one fully resolved txt2img request.
type genSpec struct {
	Prompt         string
	NegativePrompt string
	Width, Height  int
	Steps          int
	CfgScale       float64 // NaN: the library's default
	Sampler        int32
	SamplerName    string // as asked, for logs; "" = model default
	Seed           int64
	FlowShift      float64 // NaN: the library's default
	Ext            string  // "png" or "webp"
	LoRAs          []loraUse

	// Input images (URLs as the task gave them; fetched by the engine).
	InitURL, MaskURL, RefURL string
	// Strength is the task's denoise (img2img and inpainting): how much of
	// the init image may change, 0 to 1.
	Strength float64
	// SizeGiven says the task or the model set width/height; without it an
	// init image's own size is used.
	SizeGiven bool

	// The decoded input images, set by the engine after fetching.
	Init, Mask *cImageData
	Refs       []cImageData
}

// DefaultStrength is the denoise of an img2img job that gives none (the
// library's own default, sd-cli --strength).
const DefaultStrength = 0.75

// loraUse is one `<lora:name:multiplier>` tag resolved to a file.
type loraUse struct {
	Path       string
	Multiplier float32
}

// ctxSpec is what a loaded sd_ctx depends on: two jobs with equal specs
// share a warm context.
type ctxSpec struct {
	ModelPath          string
	DiffusionModelPath string
	VAEPath            string
	LLMPath            string
	LLMVisionPath      string
	LoRAFiles          []string // not part of the context; prompt tags pick from them
	Threads            int
	OffloadToCPU       bool
	ZeroCondT          bool
}

// key identifies the context a spec loads (LoRAFiles are excluded: LoRAs
// are applied per generation in this release).
func (s ctxSpec) key() string {
	return strings.Join([]string{s.ModelPath, s.DiffusionModelPath, s.VAEPath, s.LLMPath, s.LLMVisionPath,
		strconv.Itoa(s.Threads), strconv.FormatBool(s.OffloadToCPU), strconv.FormatBool(s.ZeroCondT)}, "\x00")
}

// roles maps each model file the context reads to its role.
func (s ctxSpec) roles() map[engine.FileRole]string {
	out := map[engine.FileRole]string{}
	for role, p := range map[engine.FileRole]string{engine.RoleModel: s.ModelPath, engine.RoleDiffusionModel: s.DiffusionModelPath,
		engine.RoleVAE: s.VAEPath, engine.RoleTextEncoder: s.LLMPath, engine.RoleTextEncoderVision: s.LLMVisionPath} {
		if p != "" {
			out[role] = p
		}
	}
	return out
}

// paths lists the model files the context reads.
func (s ctxSpec) paths() []string {
	var out []string
	for _, p := range []string{s.ModelPath, s.DiffusionModelPath, s.VAEPath, s.LLMPath, s.LLMVisionPath} {
		if p != "" {
			out = append(out, p)
		}
	}
	return out
}

// cannotServe builds the typed error for things this worker can never do.
func cannotServe(reason string) error {
	return &engine.CannotServeError{Engine: string(engine.EngineSDCpp), Kind: engine.KindImage, Reason: reason}
}

// contextSpec maps the job's file roles to the context's model paths (the
// roles' sd-cli flags, studio-protocol §4.4) and applies the context-level
// cliDefaults.
func contextSpec(files map[engine.FileRole]string, cd *engine.CliDefaults, threads int) (ctxSpec, error) {
	s := ctxSpec{Threads: threads}
	for role, path := range files {
		switch role {
		case engine.RoleModel:
			s.ModelPath = path
		case engine.RoleDiffusionModel:
			s.DiffusionModelPath = path
		case engine.RoleVAE:
			s.VAEPath = path
		case engine.RoleTextEncoder:
			s.LLMPath = path
		case engine.RoleTextEncoderVision:
			s.LLMVisionPath = path
		case engine.RoleLoRA:
			s.LoRAFiles = append(s.LoRAFiles, path)
		default:
			return ctxSpec{}, cannotServe(fmt.Sprintf("model file role %q is not known to the image engine", role))
		}
	}
	if s.ModelPath == "" && s.DiffusionModelPath == "" {
		return ctxSpec{}, cannotServe("the model names neither a `model` nor a `diffusion-model` file")
	}
	if cd != nil {
		s.OffloadToCPU = cd.OffloadToCPU != nil && *cd.OffloadToCPU
		s.ZeroCondT = cd.ZeroCondT != nil && *cd.ZeroCondT
	}
	return s, nil
}

// resolveImage merges, in order of precedence, the task's values, the
// model's cliDefaults and the protocol's defaults, and checks the result.
// randomSeed is called only when neither the task nor anything else gives a
// seed.
func resolveImage(p *engine.ImageParams, cd *engine.CliDefaults, loraFiles []string, randomSeed func() int64) (genSpec, []string, error) {
	var notes []string
	if p == nil {
		return genSpec{}, nil, fmt.Errorf("image task without parameters")
	}
	if strings.TrimSpace(p.Prompt) == "" {
		return genSpec{}, nil, engine.Invalid("prompt", "the prompt is empty")
	}
	if len(p.Prompt) > maxPromptLen || len(p.NegativePrompt) > maxPromptLen {
		return genSpec{}, nil, engine.Invalid("prompt", "the prompt is longer than %d bytes", maxPromptLen)
	}
	if strings.ContainsRune(p.Prompt, 0) || strings.ContainsRune(p.NegativePrompt, 0) {
		return genSpec{}, nil, engine.Invalid("prompt", "the prompt contains a NUL character")
	}
	// Input images: studio-protocol §4.3. A reference edit replaces the
	// init/strength/mask path, as it does in sd-cli.
	switch {
	case p.RefImageURL != "" && (p.InitImageURL != "" || p.MaskURL != ""):
		notes = append(notes, "refImageUrl given: initImageUrl, maskUrl and denoise are not used for a reference edit")
	case p.MaskURL != "" && p.InitImageURL == "":
		return genSpec{}, nil, engine.Invalid("maskUrl", "a mask needs the image it applies to (initImageUrl)")
	}
	s0 := genSpec{RefURL: p.RefImageURL, Strength: DefaultStrength}
	if p.RefImageURL == "" {
		s0.InitURL, s0.MaskURL = p.InitImageURL, p.MaskURL
	}
	if p.Denoise != nil {
		d := *p.Denoise
		if math.IsNaN(d) || d < 0 || d > 1 {
			return genSpec{}, nil, engine.Invalid("denoise", "denoise %v is outside 0 to 1", d)
		}
		s0.Strength = d
	}

	s := genSpec{
		InitURL: s0.InitURL, MaskURL: s0.MaskURL, RefURL: s0.RefURL, Strength: s0.Strength,
		SizeGiven:      p.Width != 0 || p.Height != 0 || (cd != nil && (cd.Width > 0 || cd.Height > 0)),
		Prompt:         p.Prompt,
		NegativePrompt: p.NegativePrompt,
		Width:          engine.DefaultImageSize,
		Height:         engine.DefaultImageSize,
		Steps:          engine.DefaultImageSteps,
		CfgScale:       math.NaN(),
		FlowShift:      math.NaN(),
		Ext:            engine.DefaultImageExt,
	}
	sampler := ""
	if cd != nil {
		if cd.Width > 0 {
			s.Width = cd.Width
		}
		if cd.Height > 0 {
			s.Height = cd.Height
		}
		if cd.Steps > 0 {
			s.Steps = cd.Steps
		}
		// cfgScale is a required cliDefaults field; 0 would switch
		// guidance off, which no model ships as its default.
		if cd.CfgScale > 0 {
			s.CfgScale = cd.CfgScale
		}
		sampler = cd.SamplingMethod
		if cd.FlowShift != nil {
			if math.IsNaN(*cd.FlowShift) {
				return genSpec{}, nil, engine.Invalid("cliDefaults.flowShift", "the model's flow shift is not a number")
			}
			s.FlowShift = *cd.FlowShift
		}
	}
	if p.Width != 0 {
		s.Width = p.Width
	}
	if p.Height != 0 {
		s.Height = p.Height
	}
	if p.Steps != 0 {
		s.Steps = p.Steps
	}
	if p.CfgScale != nil {
		if math.IsNaN(*p.CfgScale) {
			return genSpec{}, nil, engine.Invalid("cfgScale", "cfg scale is not a number")
		}
		s.CfgScale = *p.CfgScale
	}
	if p.SamplingMethod != "" {
		sampler = p.SamplingMethod
	}
	if p.Ext != "" {
		s.Ext = p.Ext
	}

	if err := checkSize(s.Width, s.Height); err != nil {
		return genSpec{}, nil, err
	}
	if s.Steps < 1 || s.Steps > MaxSteps {
		return genSpec{}, nil, engine.Invalid("steps", "%d steps is outside what this worker runs (1 to %d)", s.Steps, MaxSteps)
	}
	if !math.IsNaN(s.CfgScale) && (math.IsInf(s.CfgScale, 0) || s.CfgScale < 0 || s.CfgScale > MaxCfgScale) {
		return genSpec{}, nil, engine.Invalid("cfgScale", "cfg scale %v is outside 0 to %v", s.CfgScale, MaxCfgScale)
	}
	if math.IsInf(s.FlowShift, 0) {
		return genSpec{}, nil, engine.Invalid("cliDefaults.flowShift", "flow shift must be a finite number")
	}

	var err error
	if s.Sampler, err = samplerEnum(sampler); err != nil {
		return genSpec{}, nil, cannotServe(err.Error())
	}
	s.SamplerName = strings.ToLower(strings.TrimSpace(sampler))

	switch strings.ToLower(s.Ext) {
	case "png":
		s.Ext = "png"
	case "webp":
		s.Ext = "webp"
	default:
		return genSpec{}, nil, cannotServe(fmt.Sprintf("output format %q is not supported (png or webp)", s.Ext))
	}

	switch {
	case p.Seed == nil:
		s.Seed = randomSeed()
	case *p.Seed > math.MaxInt64:
		// The library takes a signed seed and treats a negative one as
		// "pick at random"; fold instead so the job stays reproducible.
		s.Seed = int64(*p.Seed & math.MaxInt64)
		notes = append(notes, fmt.Sprintf("seed %d is beyond the library's range; used %d", *p.Seed, s.Seed))
	default:
		s.Seed = int64(*p.Seed)
	}

	var loraNotes []string
	s.Prompt, s.LoRAs, loraNotes = extractLoRAs(s.Prompt, loraFiles)
	notes = append(notes, loraNotes...)
	return s, notes, nil
}

// SizeMultiple is what every image side must be a multiple of: the
// autoencoders' factor of 8. A model may need more (SDXS-shaped models 64);
// stable-diffusion.cpp would then round the size up, which the engine
// refuses (see Engine.Run) rather than deliver another size.
const SizeMultiple = 8

// checkSize applies the size limits to a width and height.
func checkSize(w, h int) error {
	field := "width"
	if w >= MinSide && w <= MaxSide {
		field = "height"
	}
	switch {
	case w < MinSide || w > MaxSide || h < MinSide || h > MaxSide:
		return engine.Invalid(field, "image size %dx%d is outside what this worker makes (each side %d to %d pixels)", w, h, MinSide, MaxSide)
	case w*h > MaxPixels:
		return engine.Invalid("width", "image size %dx%d is larger than this worker makes (at most %d pixels, e.g. 2048x2048)", w, h, MaxPixels)
	case w%SizeMultiple != 0 || h%SizeMultiple != 0:
		if w%SizeMultiple == 0 {
			field = "height"
		} else {
			field = "width"
		}
		return engine.Invalid(field, "image size %dx%d: each side must be a multiple of %d pixels", w, h, SizeMultiple)
	}
	return nil
}

// loraTag is sd-cli's prompt syntax for applying a LoRA from
// --lora-model-dir: <lora:name:multiplier>.
var loraTag = regexp.MustCompile(`<lora:([^:>]+):([^>]+)>`)

// extractLoRAs removes the LoRA tags from a prompt and resolves each name to
// one of the model's `lora` files (by file name, with or without its
// extension), as sd-cli does with --lora-model-dir. Unlike sd-cli it never
// follows a path: the prompt comes from the network. Tags that resolve to
// nothing are dropped with a note, as sd-cli drops them with a warning.
func extractLoRAs(prompt string, files []string) (string, []loraUse, []string) {
	var uses []loraUse
	var notes []string
	index := map[string]int{}
	out := loraTag.ReplaceAllStringFunc(prompt, func(tag string) string {
		m := loraTag.FindStringSubmatch(tag)
		name, raw := m[1], m[2]
		mult, err := strconv.ParseFloat(strings.TrimSpace(raw), 32)
		if err != nil || math.IsNaN(mult) || math.IsInf(mult, 0) {
			notes = append(notes, fmt.Sprintf("ignored LoRA tag %q: multiplier is not a number", tag))
			return ""
		}
		path, ok := resolveLoRA(files, name)
		if !ok {
			if len(files) == 0 {
				notes = append(notes, fmt.Sprintf("ignored LoRA tag %q: the model ships no LoRA file", tag))
			} else {
				notes = append(notes, fmt.Sprintf("ignored LoRA tag %q: no such LoRA among the model's files", tag))
			}
			return ""
		}
		if i, seen := index[path]; seen {
			uses[i].Multiplier += float32(mult)
			return ""
		}
		index[path] = len(uses)
		uses = append(uses, loraUse{Path: path, Multiplier: float32(mult)})
		return ""
	})
	return out, uses, notes
}

func resolveLoRA(files []string, name string) (string, bool) {
	name = strings.TrimSpace(name)
	for _, f := range files {
		base := filepath.Base(f)
		if name == base || name == strings.TrimSuffix(base, filepath.Ext(base)) {
			return f, true
		}
	}
	return "", false
}
