package studio

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/minisgg/studio-worker/engine"
)

func TestBuildCapabilitiesAdvertisesOnlyServedKinds(t *testing.T) {
	caps := buildCapabilities(capsInput{
		MachineName: "box", Username: "ann", Version: "1.2.3",
		VRAMTotalGB: 7.79, BudgetGB: 6, Paused: true, AutoStart: true, StartMinimised: true,
		// llm listed twice and a bogus kind: both must be cleaned up.
		Kinds: []engine.TaskKind{engine.KindLLM, engine.KindImage, engine.KindLLM, "dance"},
		Models: map[engine.TaskKind][]string{
			engine.KindLLM:   {"llama-cpp:*", "tiny.gguf", "tiny.gguf", " "},
			engine.KindImage: {"sd-cpp:*"},
			// Models of a kind that is not served must not leak out.
			engine.KindAudioSTT: {"whisper-base"},
		},
	})
	if caps.Engine != "multi" || caps.MachineName != "box" || caps.Username != "ann" || caps.AgentVersion != "1.2.3" {
		t.Errorf("identity fields: %+v", caps)
	}
	if caps.VRAMTotalGB != 7.79 || caps.VRAMThresholdGB != 6 {
		t.Errorf("vram fields: %v / %v", caps.VRAMTotalGB, caps.VRAMThresholdGB)
	}
	if caps.AutoEnabled {
		t.Error("autoEnabled must be false while paused")
	}
	if !caps.AutoStart || !caps.StartMinimised {
		t.Error("autoStart/startMinimised not carried")
	}
	if want := []engine.TaskKind{engine.KindImage, engine.KindLLM}; !slices.Equal(caps.TaskKinds, want) {
		t.Errorf("taskKinds = %v, want %v (protocol order, deduplicated)", caps.TaskKinds, want)
	}
	if want := []string{"llama-cpp:*", "sd-cpp:*", "tiny.gguf"}; !slices.Equal(caps.SupportedModels, want) {
		t.Errorf("supportedModels = %v, want %v", caps.SupportedModels, want)
	}
	if len(caps.SupportedModelsPerKind) != 2 || !slices.Equal(caps.SupportedModelsPerKind[engine.KindLLM], []string{"llama-cpp:*", "tiny.gguf"}) {
		t.Errorf("supportedModelsPerKind = %v", caps.SupportedModelsPerKind)
	}
}

func TestBuildCapabilitiesNothingServedIsEmptyNotNull(t *testing.T) {
	caps := buildCapabilities(capsInput{BudgetGB: 12})
	if !caps.AutoEnabled {
		t.Error("autoEnabled must be true when not paused")
	}
	data, err := json.Marshal(caps)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"taskKinds":[]`, `"supportedModels":[]`, `"supportedModelsPerKind":{}`, `"vramTotalGb":0`} {
		if !strings.Contains(string(data), want) {
			t.Errorf("capabilities JSON %s lacks %s", data, want)
		}
	}
	if strings.Contains(string(data), "userPresence") {
		t.Error("userPresence must be left out when unknown")
	}
}

func TestEnginesServing(t *testing.T) {
	got, ok := enginesServing([]string{"llama-cpp:*", "tiny.gguf", ":*"})
	if !ok || !slices.Equal(got, []engine.EngineName{engine.EngineLlamaCpp}) {
		t.Errorf("got %v %v", got, ok)
	}
	if _, ok := enginesServing([]string{"tiny.gguf"}); ok {
		t.Error("a list without sentinels names no engine")
	}
}

func TestBytesToGB(t *testing.T) {
	if got := bytesToGB(8 << 30); got != 8 {
		t.Errorf("8 GiB -> %v", got)
	}
	if got := bytesToGB(8589934592 - 1<<20); got != 8 {
		t.Errorf("rounding: %v", got)
	}
}

func TestHostAndUserNeverEmpty(t *testing.T) {
	if hostName() == "" || userName() == "" {
		t.Error("machineName and username must never be empty")
	}
}
