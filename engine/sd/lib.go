package sd

import (
	"errors"
	"fmt"
	"image"
	"math"
	"os"
	"runtime"
	"strings"
	"sync"
	"unsafe"

	"github.com/ebitengine/purego"
)

// EnvLib names the environment variable that points at the library when
// the settings do not.
const EnvLib = "STUDIO_WORKER_SD_LIB"

// Library is a loaded stable-diffusion.cpp shared library of the pinned
// release. The library keeps process-wide state (its log and progress
// callbacks), so one process loads it once per path and runs one generation
// at a time.
type Library struct {
	path    string
	handle  uintptr
	version string
	commit  string

	ctxParamsInit     func(p unsafe.Pointer)
	ctxParamsToStr    func(p unsafe.Pointer) *byte
	newCtx            func(p unsafe.Pointer) uintptr
	freeCtx           func(ctx uintptr)
	imgGenParamsInit  func(p unsafe.Pointer)
	imgGenParamsToStr func(p unsafe.Pointer) *byte
	generateImage     func(ctx uintptr, p unsafe.Pointer, out **cImage, n *int32) bool
	freeImages        func(images *cImage, n int32)
	setLogCallback    func(cb uintptr, data uintptr)
	setProgressCB     func(cb uintptr, data uintptr)
	cancelGeneration  func(ctx uintptr, mode int32)
	sampleMethodName  func(m int32) string
	sdVersion         func() string
	sdCommit          func() string
	// cFree is the C library's free, found through the library's own
	// dependencies; nil where that lookup is not possible (then the few
	// bytes of a *_to_str text are left to the process).
	cFree func(p unsafe.Pointer)
}

// The library's calls say only that they failed; the engine adds the
// library's own error line from its log.
var (
	errLoadFailed = errors.New("stable-diffusion.cpp could not load the model")
	errNoImage    = errors.New("stable-diffusion.cpp made no image")
)

var (
	libsMu sync.Mutex
	libs   = map[string]*Library{}
)

// Open loads the library at path and checks that it is the pinned release.
// A library that loaded once is returned again for the same path. A refused
// library stays mapped: unloading a C++ library whose static constructors
// may have started threads is not safe, and nothing in it is ever called.
func Open(path string) (*Library, error) {
	libsMu.Lock()
	defer libsMu.Unlock()
	if l, ok := libs[path]; ok {
		return l, nil
	}
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("stable-diffusion.cpp library %s: %w", path, err)
	}
	handle, err := openLibrary(path)
	if err != nil {
		return nil, fmt.Errorf("stable-diffusion.cpp library %s could not be loaded: %w", path, err)
	}
	l := &Library{path: path, handle: handle}
	if err := l.bind(); err != nil {
		// A library without the pinned release's symbols is some other
		// release (or not sd.cpp at all); say so in those words.
		return nil, fmt.Errorf("%s is not stable-diffusion.cpp %s: %w", path, PinnedVersion, err)
	}
	l.version = strings.TrimSpace(l.sdVersion())
	l.commit = strings.TrimSpace(l.sdCommit())
	if err := checkRelease(l.version, l.commit); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := l.selfCheck(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	installCallbacks(l)
	libs[path] = l
	return l, nil
}

// Path is where the library was loaded from.
func (l *Library) Path() string { return l.path }

// Version is the library's sd_version().
func (l *Library) Version() string { return l.version }

// Commit is the library's sd_commit().
func (l *Library) Commit() string { return l.commit }

func (l *Library) bind() error {
	syms := []struct {
		name string
		fn   any
	}{
		{"sd_version", &l.sdVersion},
		{"sd_commit", &l.sdCommit},
		{"sd_ctx_params_init", &l.ctxParamsInit},
		{"sd_ctx_params_to_str", &l.ctxParamsToStr},
		{"new_sd_ctx", &l.newCtx},
		{"free_sd_ctx", &l.freeCtx},
		{"sd_img_gen_params_init", &l.imgGenParamsInit},
		{"sd_img_gen_params_to_str", &l.imgGenParamsToStr},
		{"generate_image", &l.generateImage},
		{"free_sd_images", &l.freeImages},
		{"sd_set_log_callback", &l.setLogCallback},
		{"sd_set_progress_callback", &l.setProgressCB},
		{"sd_cancel_generation", &l.cancelGeneration},
		{"sd_sample_method_name", &l.sampleMethodName},
	}
	var missing []string
	for _, s := range syms {
		addr, err := lookupSymbol(l.handle, s.name)
		if err != nil || addr == 0 {
			missing = append(missing, s.name)
			continue
		}
		purego.RegisterFunc(s.fn, addr)
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing functions %s", strings.Join(missing, ", "))
	}
	if addr, err := lookupSymbol(l.handle, "free"); err == nil && addr != 0 {
		purego.RegisterFunc(&l.cFree, addr)
	}
	return nil
}

// checkRelease refuses every library but the pinned release. sd_version()
// is `git describe` of the build (a "+" suffix marks a modified tree) and
// sd_commit() an abbreviated hash, both "unknown" when built outside git.
func checkRelease(version, commit string) error {
	want := fmt.Sprintf("this worker needs stable-diffusion.cpp %s (commit %s)", PinnedVersion, PinnedCommit[:7])
	if version != PinnedVersion {
		return fmt.Errorf("library reports version %q, commit %q; %s", version, commit, want)
	}
	c := strings.ToLower(commit)
	if len(c) < 7 || len(c) > len(PinnedCommit) || !strings.HasPrefix(PinnedCommit, c) {
		return fmt.Errorf("library reports version %q but commit %q; %s", version, commit, want)
	}
	return nil
}

// selfCheck lets the library's own init functions write into buffers laid
// out as our Go structs, with guard bytes behind them: a C struct larger
// than ours would write into the guard, and the values the release's init
// functions are known to set must land on our fields. It is a cheap,
// always-on check that a release mix-up cannot get past silently.
func (l *Library) selfCheck() error {
	const guard = 64
	const fill = 0xA5

	check := func(name string, size uintptr, init func(unsafe.Pointer), verify func(unsafe.Pointer) error) error {
		words := make([]uint64, (size+guard+7)/8) // pointer-free memory, 8-aligned
		buf := unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), len(words)*8)
		for i := range buf {
			buf[i] = fill
		}
		init(unsafe.Pointer(&words[0]))
		for i := size; i < uintptr(len(buf)); i++ {
			if buf[i] != fill {
				return fmt.Errorf("%s of this library is larger than this worker's (%d bytes); refusing it", name, size)
			}
		}
		if err := verify(unsafe.Pointer(&words[0])); err != nil {
			return fmt.Errorf("%s of this library does not match this worker's: %v", name, err)
		}
		runtime.KeepAlive(words)
		return nil
	}

	var cp cCtxParams
	err := check("sd_ctx_params_t", unsafe.Sizeof(cp), l.ctxParamsInit, func(p unsafe.Pointer) error {
		switch {
		case readI32(p, unsafe.Offsetof(cp.NThreads)) <= 0:
			return errors.New("n_threads not set by init")
		case readI32(p, unsafe.Offsetof(cp.WType)) != sdTypeCount:
			return errors.New("wtype")
		case readI32(p, unsafe.Offsetof(cp.RNGType)) != rngCUDA:
			return errors.New("rng_type")
		case readI32(p, unsafe.Offsetof(cp.VAEFormat)) != vaeFormatAuto:
			return errors.New("vae_format")
		case readU64(p, unsafe.Offsetof(cp.ModelArgs)) != 0:
			return errors.New("model_args (last field)")
		}
		return nil
	})
	if err != nil {
		return err
	}

	var gp cImgGenParams
	sp := unsafe.Offsetof(gp.SampleParams)
	return check("sd_img_gen_params_t", unsafe.Sizeof(gp), l.imgGenParamsInit, func(p unsafe.Pointer) error {
		switch {
		case readI32(p, unsafe.Offsetof(gp.ClipSkip)) != -1:
			return errors.New("clip_skip")
		case readI32(p, unsafe.Offsetof(gp.Width)) != 512 || readI32(p, unsafe.Offsetof(gp.Height)) != 512:
			return errors.New("width/height")
		case readI32(p, sp+unsafe.Offsetof(gp.SampleParams.SampleSteps)) != 20:
			return errors.New("sample_params.sample_steps")
		case readI32(p, sp+unsafe.Offsetof(gp.SampleParams.SampleMethod)) != sampleMethodCount:
			return errors.New("sample_params.sample_method")
		case readI64(p, unsafe.Offsetof(gp.Seed)) != -1:
			return errors.New("seed")
		case readI32(p, unsafe.Offsetof(gp.BatchCount)) != 1:
			return errors.New("batch_count")
		case readF32(p, unsafe.Offsetof(gp.Hires)+unsafe.Offsetof(gp.Hires.Scale)) != 2:
			return errors.New("hires.scale")
		case readI32(p, unsafe.Offsetof(gp.Hires)+unsafe.Offsetof(gp.Hires.UpscaleTileSize)) != 128:
			return errors.New("hires.upscale_tile_size")
		case readI32(p, unsafe.Offsetof(gp.QwenImageLayers)) != 3:
			return errors.New("qwen_image_layers")
		case readU8(p, unsafe.Offsetof(gp.CircularY)) != 0:
			return errors.New("circular_y (last field)")
		}
		return nil
	})
}

func readI32(p unsafe.Pointer, off uintptr) int32 { return *(*int32)(unsafe.Add(p, off)) }
func readI64(p unsafe.Pointer, off uintptr) int64 { return *(*int64)(unsafe.Add(p, off)) }
func readU64(p unsafe.Pointer, off uintptr) uint64 {
	return *(*uint64)(unsafe.Add(p, off))
}
func readU8(p unsafe.Pointer, off uintptr) uint8 { return *(*uint8)(unsafe.Add(p, off)) }
func readF32(p unsafe.Pointer, off uintptr) float32 {
	return math.Float32frombits(*(*uint32)(unsafe.Add(p, off)))
}

// goString copies a NUL-terminated C string.
func goString(p *byte) string {
	if p == nil {
		return ""
	}
	n := 0
	for *(*byte)(unsafe.Add(unsafe.Pointer(p), n)) != 0 {
		n++
	}
	return string(unsafe.Slice(p, n))
}

// cString returns a NUL-terminated copy of s in Go memory, or nil for "".
// The caller keeps the result reachable until C no longer reads it.
func cString(s string) *byte {
	if s == "" {
		return nil
	}
	b := make([]byte, len(s)+1)
	copy(b, s)
	return &b[0]
}

// takeCString copies and frees a string the library allocated.
func (l *Library) takeCString(p *byte) string {
	s := goString(p)
	if p != nil && l.cFree != nil {
		l.cFree(unsafe.Pointer(p))
	}
	return s
}

// newCtxParams returns sd_ctx_params_t as the library initialises it, with
// the spec applied.
func (l *Library) newCtxParams(s ctxSpec) *cCtxParams {
	p := new(cCtxParams)
	l.ctxParamsInit(unsafe.Pointer(p))
	fillCtxParams(p, s)
	return p
}

// newImgGenParams returns sd_img_gen_params_t as the library initialises
// it, with the spec applied.
func (l *Library) newImgGenParams(s genSpec) *cImgGenParams {
	p := new(cImgGenParams)
	l.imgGenParamsInit(unsafe.Pointer(p))
	fillImgGenParams(p, s)
	return p
}

// fillCtxParams sets the fields the engine controls; the rest keep the
// library's defaults.
func fillCtxParams(p *cCtxParams, s ctxSpec) {
	p.ModelPath = cString(s.ModelPath)
	p.DiffusionModelPath = cString(s.DiffusionModelPath)
	p.VAEPath = cString(s.VAEPath)
	p.LLMPath = cString(s.LLMPath)
	p.LLMVisionPath = cString(s.LLMVisionPath)
	if s.Threads > 0 {
		p.NThreads = int32(s.Threads)
	}
	// Read every weight while the model loads (sd-cli --eager-load), so
	// that a truncated or corrupt file fails the load, not the first
	// generation, and the first job's timing holds no loading.
	p.EagerLoad = true
	if s.OffloadToCPU {
		// What sd-cli's --offload-to-cpu does in this release: keep every
		// parameter on the CPU backend and move it in when needed.
		p.ParamsBackend = cString("*=cpu")
	}
	if s.ZeroCondT {
		p.ModelArgs = cString("qwen_image_zero_cond_t=true")
	}
}

// fillImgGenParams sets the fields of a txt2img request; everything else
// keeps the library's defaults.
func fillImgGenParams(p *cImgGenParams, s genSpec) {
	p.Prompt = cString(s.Prompt)
	if p.Prompt == nil {
		// A prompt that held only LoRA tags; the library wants a string.
		empty := []byte{0}
		p.Prompt = &empty[0]
	}
	p.NegativePrompt = cString(s.NegativePrompt)
	p.Width = int32(s.Width)
	p.Height = int32(s.Height)
	p.SampleParams.SampleSteps = int32(s.Steps)
	p.SampleParams.SampleMethod = s.Sampler
	if !math.IsNaN(s.CfgScale) {
		p.SampleParams.Guidance.TxtCfg = float32(s.CfgScale)
	}
	if !math.IsNaN(s.FlowShift) {
		p.SampleParams.FlowShift = float32(s.FlowShift)
	}
	p.Seed = s.Seed
	p.BatchCount = 1
	if s.Init != nil {
		p.InitImage = s.Init.c()
		p.Strength = float32(s.Strength)
	}
	if s.Mask != nil {
		p.MaskImage = s.Mask.c()
	}
	if len(s.Refs) > 0 {
		refs := make([]cImage, len(s.Refs))
		for i := range s.Refs {
			refs[i] = s.Refs[i].c()
		}
		p.RefImages = &refs[0]
		p.RefImagesCount = int32(len(refs))
	}
	if len(s.LoRAs) > 0 {
		loras := make([]cLoRA, len(s.LoRAs))
		for i, u := range s.LoRAs {
			loras[i] = cLoRA{Multiplier: u.Multiplier, Path: cString(u.Path)}
		}
		p.LoRAs = &loras[0]
		p.LoRACount = uint32(len(loras))
	}
}

// ctxParamsText is the library's own rendering of a context's parameters.
func (l *Library) ctxParamsText(p *cCtxParams) string {
	s := l.takeCString(l.ctxParamsToStr(unsafe.Pointer(p)))
	runtime.KeepAlive(p)
	return s
}

// imgGenParamsText is the library's own rendering of a request.
func (l *Library) imgGenParamsText(p *cImgGenParams) string {
	s := l.takeCString(l.imgGenParamsToStr(unsafe.Pointer(p)))
	runtime.KeepAlive(p)
	return s
}

// newContext loads the models of a spec. It cannot be interrupted.
func (l *Library) newContext(s ctxSpec) (uintptr, error) {
	p := l.newCtxParams(s)
	h := l.newCtx(unsafe.Pointer(p))
	runtime.KeepAlive(p)
	if h == 0 {
		return 0, errLoadFailed
	}
	return h, nil
}

func (l *Library) freeContext(h uintptr) {
	if h != 0 {
		l.freeCtx(h)
	}
}

// cancel asks a running generation to stop as soon as it can; it is safe
// from any thread.
func (l *Library) cancel(h uintptr) {
	if h != 0 {
		l.cancelGeneration(h, cancelAll)
	}
}

// generate runs one txt2img request and copies the image out of C memory.
func (l *Library) generate(h uintptr, s genSpec) (*image.NRGBA, error) {
	p := l.newImgGenParams(s)
	var out *cImage
	var n int32
	ok := l.generateImage(h, unsafe.Pointer(p), &out, &n)
	runtime.KeepAlive(p)
	runtime.KeepAlive(&s)
	if out != nil {
		defer l.freeImages(out, n)
	}
	if !ok || out == nil || n < 1 {
		return nil, errNoImage
	}
	first := unsafe.Slice(out, n)[0]
	return toNRGBA(first.Width, first.Height, first.Channel, first.Data)
}

// c describes the image as sd_image_t; its pixels stay in Go memory, which
// the caller keeps reachable while the library reads them.
func (d *cImageData) c() cImage {
	return cImage{Width: uint32(d.W), Height: uint32(d.H), Channel: uint32(d.C), Data: &d.Pix[0]}
}

// toNRGBA copies an sd_image_t's pixels (RGB or RGBA, 8 bits each).
func toNRGBA(w, h, ch uint32, data *byte) (*image.NRGBA, error) {
	if data == nil || w == 0 || h == 0 {
		return nil, errors.New("stable-diffusion.cpp returned an empty image")
	}
	if ch != 3 && ch != 4 {
		return nil, fmt.Errorf("stable-diffusion.cpp returned an image with %d channels", ch)
	}
	if uint64(w)*uint64(h) > MaxPixels*4 {
		return nil, fmt.Errorf("stable-diffusion.cpp returned an image of %dx%d", w, h)
	}
	src := unsafe.Slice(data, int(w)*int(h)*int(ch))
	img := image.NewNRGBA(image.Rect(0, 0, int(w), int(h)))
	if ch == 4 {
		copy(img.Pix, src)
		return img, nil
	}
	for i, j := 0, 0; i < len(src); i, j = i+3, j+4 {
		img.Pix[j] = src[i]
		img.Pix[j+1] = src[i+1]
		img.Pix[j+2] = src[i+2]
		img.Pix[j+3] = 0xff
	}
	return img, nil
}
