package studio

import (
	"math"
	"os"
	"os/user"
	"slices"
	"strings"

	"github.com/minisgg/studio-worker/engine"
)

// EngineMulti is the capabilities' engine value: the dispatcher over every
// backend this build has (§3.3).
const EngineMulti = "multi"

// capsInput is everything the capabilities are made of, gathered by the
// worker from live settings, the pause flag and the runner.
type capsInput struct {
	MachineName    string
	Username       string
	Version        string
	VRAMTotalGB    float64 // 0 when unknown
	BudgetGB       float64
	Paused         bool // held by any control: autoEnabled false
	OnlyWhenIdle   bool
	UserPresence   string // "idle", "active", "" when unknown
	AutoStart      bool
	StartMinimised bool
	AutoUpdate     bool // the updater checks for and installs new versions (6.1)
	Kinds          []engine.TaskKind
	Models         map[engine.TaskKind][]string
}

// buildCapabilities follows §3.3. Only kinds that are really served are
// advertised: a kind with no working engine would make the studio offer jobs
// that can only fail.
func buildCapabilities(in capsInput) Capabilities {
	kinds := servedKinds(in.Kinds)
	perKind := make(map[engine.TaskKind][]string, len(kinds))
	var flat []string
	for _, k := range kinds {
		models := dedupSorted(in.Models[k])
		perKind[k] = models
		flat = append(flat, models...)
	}
	return Capabilities{
		MachineName:            in.MachineName,
		Username:               in.Username,
		AgentVersion:           in.Version,
		Engine:                 EngineMulti,
		VRAMTotalGB:            in.VRAMTotalGB,
		VRAMThresholdGB:        in.BudgetGB,
		AutoEnabled:            !in.Paused,
		OnlyWhenIdle:           in.OnlyWhenIdle,
		UserPresence:           in.UserPresence,
		AutoStart:              in.AutoStart,
		StartMinimised:         in.StartMinimised,
		AutoUpdate:             in.AutoUpdate,
		SupportedModels:        dedupSorted(flat),
		TaskKinds:              kinds,
		SupportedModelsPerKind: perKind,
	}
}

// servedKinds keeps valid kinds once each, in the protocol's order, and
// never returns nil so that the JSON says [] rather than null.
func servedKinds(in []engine.TaskKind) []engine.TaskKind {
	out := []engine.TaskKind{}
	for _, k := range engine.AllKinds {
		if slices.Contains(in, k) {
			out = append(out, k)
		}
	}
	return out
}

func dedupSorted(in []string) []string {
	out := make([]string, 0, len(in))
	for _, s := range in {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// bytesToGB turns a byte count into the GiB figure the studio compares
// with vramGbEstimate, rounded to two decimals so heartbeats stay stable.
func bytesToGB(b uint64) float64 {
	return math.Round(float64(b)/(1<<30)*100) / 100
}

// hostName and userName never fail: an unknown value is sent as "unknown"
// because the studio shows these on its dashboard and an empty cell helps
// nobody.
func hostName() string {
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "unknown"
}

func userName() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		// Windows reports DOMAIN\user; the studio only needs the user.
		if i := strings.LastIndexByte(u.Username, '\\'); i >= 0 {
			return u.Username[i+1:]
		}
		return u.Username
	}
	for _, v := range []string{"USER", "USERNAME", "LOGNAME"} {
		if s := os.Getenv(v); s != "" {
			return s
		}
	}
	return "unknown"
}

// enginesServing reads the "<engine>:*" sentinels a runner lists for a kind
// (e.g. "llama-cpp:*" for llm) to learn which modelSource.engine values it
// can route that kind to. ok is false when the list names no engine, and
// then the runner's own Admit is the only judge.
func enginesServing(models []string) (engines []engine.EngineName, ok bool) {
	for _, m := range models {
		if name, found := strings.CutSuffix(m, ":*"); found && name != "" {
			engines = append(engines, engine.EngineName(name))
		}
	}
	return engines, len(engines) > 0
}
