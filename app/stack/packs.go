package stack

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/engine/host/hosted"
	"github.com/minisgg/studio-worker/engine/llama"
	"github.com/minisgg/studio-worker/engine/packs"
	"github.com/minisgg/studio-worker/release"
)

// Runtime packs (issue #14, item 2): a runtime missing from this install
// is fetched from the signed release feed on the first job that needs it,
// and a CPU-only llama.cpp runtime beside the program is joined by a GPU
// pack for this computer's GPU, fetched at start in the background.

// packProbeTimeout bounds the start's look at the feed.
const packProbeTimeout = 30 * time.Second

// setUpPacks wraps the engines so that their runtimes can be fetched as
// packs; it returns the engines to run. Without a feed (Options.NoPacks)
// they are returned as they are.
func (st *Stack) setUpPacks(opts Options) []engine.Engine {
	engines := []engine.Engine{st.Llama, st.Image}
	if opts.NoPacks {
		return engines
	}
	url := opts.FeedURL
	if url == "" {
		// The feed the updater reads (the update_feed_url setting, or the
		// release's own): one feed lists the app and its runtime packs.
		url = release.FeedURL(st.Settings.Current().UpdateFeedURL)
	}
	exe := opts.EngineExe
	if exe == "" {
		exe, _ = os.Executable()
	}
	st.packs = packs.NewInstaller(packs.Config{
		FeedURL: url,
		Client:  &http.Client{Timeout: 0}, // downloads are long; contexts bound them
		Trusted: opts.FeedKeys,
		Machine: packs.DetectMachine(context.Background()),
		Check:   hosted.CheckPack(exe),
		Log:     st.Log,
	})
	st.Log.Info("this computer, for runtime packs: "+st.packs.Machine().String(), "op", "packs")
	st.packsProbed = make(chan struct{})
	st.textPack = packs.NewOnDemand(st.Llama, st.packs, engine.RuntimeLlama, []engine.TaskKind{engine.KindLLM}, "the text runtime", st.Log)
	st.imagePack = packs.NewOnDemand(st.Image, st.packs, engine.RuntimeSD, []engine.TaskKind{engine.KindImage}, "the image runtime", st.Log)
	return []engine.Engine{st.textPack, st.imagePack}
}

// startPacks runs in the background from Start: for a runtime that is
// missing, it asks the feed whether a pack would serve this computer (and
// the engine then offers its kinds; the first job fetches it); for a
// llama.cpp CPU build installed beside the program on a computer with a
// GPU, it fetches the best GPU pack, tries it in a child process, and has
// the text engine use it from its next job.
func (st *Stack) startPacks(ctx context.Context) {
	if st.packs == nil {
		return
	}
	var off []string // "text", "image": missing, and no pack to fetch
	var offErr error
	for _, od := range []*packs.OnDemand{st.textPack, st.imagePack} {
		if !od.Missing() {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, packProbeTimeout)
		err := od.Probe(pctx)
		cancel()
		if err != nil {
			why := err.Error()
			if w, ok := release.Explain(err); ok {
				why = "the release feed cannot be reached: " + w
				st.Log.Debug(fmt.Sprintf("no runtime pack for %s: %v", od.Name().Words(), err), "op", "packs")
			}
			st.Log.Warn(fmt.Sprintf("%s is off, and no runtime pack can be fetched for it: %s", od.Name().Words(), why), "op", "packs")
			if ctx.Err() == nil {
				kind := "image"
				if od == st.textPack {
					kind = "text"
				}
				off, offErr = append(off, kind), err
			}
		} else {
			st.Log.Info(fmt.Sprintf("%s is not installed; its runtime will be fetched from the release feed for the first job that needs it", od.Name().Words()), "op", "packs")
		}
	}
	if len(off) > 0 {
		// The first-run notice promised a fetch that cannot happen now.
		st.lateNotice(packsOffNotice(off, offErr))
	}
	// The kinds offered reach the studio with the next heartbeat.
	close(st.packsProbed)
	if st.textPack.Missing() {
		return
	}
	dir, err := llama.FindLibDir(st.Settings.Current().LlamaLibDir)
	if err != nil {
		return
	}
	info, _ := llama.ReadRuntimeInfo(dir)
	if !gpuPackWanted(dir, info, st.packs.Machine()) {
		return
	}
	rec, err := st.packs.Ensure(ctx, engine.RuntimeLlama, packs.Options{GPUOnly: true}, nil)
	switch {
	case errors.Is(err, packs.ErrNoGPUPack), errors.Is(err, packs.ErrNoPack):
		st.Log.Info("text jobs stay on the CPU runtime: "+err.Error(), "op", "packs")
		return
	case err != nil:
		st.Log.Warn("no GPU runtime pack was fetched for text jobs: "+err.Error(), "op", "packs")
		return
	}
	// Between jobs: Reload waits for a running one to end.
	if err := st.Llama.Reload(ctx); err != nil {
		st.Log.Warn(fmt.Sprintf("the text engine did not start with %s: %v", rec.Describe(), err), "op", "packs")
		return
	}
	st.Log.Info("text jobs now run on "+rec.Describe()+": "+st.Llama.Hello().Runtime, "op", "packs")
}

// packsOffNotice says, in a donor's words, that the kinds of job in off
// ("text", "image") stay off because err kept their runtime packs from
// being found in the release feed.
func packsOffNotice(off []string, err error) string {
	jobs := "Text jobs"
	switch {
	case len(off) == 2:
		jobs = "Text and image jobs"
	case off[0] == "image":
		jobs = "Image jobs"
	}
	if why, ok := release.Explain(err); ok {
		return jobs + " stay off: what they need cannot be fetched, because the release feed cannot be reached: " + why + ". Studio Worker looks again when it next starts."
	}
	return jobs + " stay off: the release feed has nothing they need for this computer (" + err.Error() + "). The Logs page has the details."
}

// gpuPackWanted says whether a GPU pack should join the llama.cpp runtime
// in dir: it is a CPU build installed with the program (a setting or the
// environment naming a folder is the donor's choice, and a source tree's
// runtime is a developer's), and this computer has a GPU a pack could use.
func gpuPackWanted(dir string, info llama.RuntimeInfo, m packs.Machine) bool {
	if info.GPU() {
		return false
	}
	if rec, err := engine.CurrentPack("", engine.RuntimeLlama); err == nil && rec.Dir == dir {
		return false // already the pack chosen for this computer
	}
	exe, err := os.Executable()
	if err != nil {
		return false
	}
	if real, err := filepath.EvalSymlinks(exe); err == nil {
		exe = real
	}
	beside := false
	for _, d := range []string{filepath.Join(filepath.Dir(exe), "lib"), filepath.Join(filepath.Dir(exe), "runtime", "llama", engine.PlatformVariant())} {
		if a, err := filepath.Abs(d); err == nil && a == dir {
			beside = true
		}
	}
	return beside && (m.NVIDIADriver != "" || m.VulkanLoader || m.AppleSilicon)
}
