package engine

import "encoding/json"

// EngineName is the kebab-case wire value of modelSource.engine.
type EngineName string

const (
	EngineSDCpp     EngineName = "sd-cpp"
	EngineLlamaCpp  EngineName = "llama-cpp"
	EngineONNX      EngineName = "onnx"
	EngineParakeet  EngineName = "parakeet"
	EngineSynthetic EngineName = "synthetic"
)

// Words names the engine for donors, lower case: "the text engine
// (llama.cpp)", "the image engine (stable-diffusion.cpp)"; any other
// engine is "the <wire value> engine".
func (n EngineName) Words() string {
	switch n {
	case EngineLlamaCpp:
		return "the text engine (llama.cpp)"
	case EngineSDCpp:
		return "the image engine (stable-diffusion.cpp)"
	}
	return "the " + string(n) + " engine"
}

// FileRole says what a model file is for (kebab-case on the wire).
type FileRole string

const (
	RoleDiffusionModel    FileRole = "diffusion-model"
	RoleTextEncoder       FileRole = "text-encoder"
	RoleTextEncoderVision FileRole = "text-encoder-vision"
	RoleVAE               FileRole = "vae"
	RoleLoRA              FileRole = "lora"
	RoleModel             FileRole = "model"
)

// ModelSource says which engine runs a model and which files it needs.
type ModelSource struct {
	Engine      EngineName   `json:"engine"`
	Files       []ModelFile  `json:"files"`
	CliDefaults *CliDefaults `json:"cliDefaults,omitempty"`
}

// ModelFile is one downloadable file of a model.
type ModelFile struct {
	Role        FileRole `json:"role"`
	URL         string   `json:"url"`
	Filename    string   `json:"filename"`
	ApproxBytes uint64   `json:"approxBytes,omitempty"`
	SHA256      string   `json:"sha256,omitempty"`
}

// CliDefaults are the model's own defaults; a task's values win over them.
// The first four are required on the wire.
type CliDefaults struct {
	CfgScale           float64         `json:"cfgScale"`
	Steps              int             `json:"steps"`
	Width              int             `json:"width"`
	Height             int             `json:"height"`
	SamplingMethod     string          `json:"samplingMethod,omitempty"`
	FlowShift          *float64        `json:"flowShift,omitempty"`
	ZeroCondT          *bool           `json:"zeroCondT,omitempty"`
	OffloadToCPU       *bool           `json:"offloadToCpu,omitempty"`
	ContextSize        int             `json:"contextSize,omitempty"`
	ChatTemplateKwargs json.RawMessage `json:"chatTemplateKwargs,omitempty"`
}

// File returns the first file with the given role.
func (s ModelSource) File(role FileRole) (ModelFile, bool) {
	for _, f := range s.Files {
		if f.Role == role {
			return f, true
		}
	}
	return ModelFile{}, false
}
