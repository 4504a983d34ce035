package studio

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/minisgg/studio-worker/engine"
)

func wireCaps() Capabilities {
	return Capabilities{
		MachineName: "box", Username: "ann", AgentVersion: "0.1.0", Engine: "multi",
		VRAMTotalGB: 24, VRAMThresholdGB: 12.5, AutoEnabled: true, StartMinimised: true,
		UserPresence:    "idle",
		SupportedModels: []string{"llama-cpp:*", "sd-cpp:*"},
		TaskKinds:       []engine.TaskKind{engine.KindImage, engine.KindLLM},
		SupportedModelsPerKind: map[engine.TaskKind][]string{
			engine.KindImage: {"sd-cpp:*"},
			engine.KindLLM:   {"llama-cpp:*"},
		},
	}
}

const wireCapsJSON = `"machineName":"box","username":"ann","agentVersion":"0.1.0","engine":"multi",` +
	`"vramTotalGb":24,"vramThresholdGb":12.5,"autoEnabled":true,"autoStart":false,"autoUpdate":false,` +
	`"startMinimised":true,"onlyWhenIdle":false,"userPresence":"idle",` +
	`"supportedModels":["llama-cpp:*","sd-cpp:*"],"taskKinds":["image","llm"],` +
	`"supportedModelsPerKind":{"image":["sd-cpp:*"],"llm":["llama-cpp:*"]}`

func u64(v uint64) *uint64 { return &v }

func wireClaim() JobOfferClaim {
	return JobOfferClaim{
		JobID: "job-1", GameID: "g1", AssetName: "game/creatures/x", Model: "z.gguf", VRAMGBEstimate: 4,
		Task: &engine.Task{Kind: engine.KindImage, Image: &engine.ImageParams{
			Prompt: "a cat", Width: 1024, Height: 1024, Steps: 8, Seed: u64(7),
		}},
		ModelSource: &engine.ModelSource{
			Engine: engine.EngineSDCpp,
			Files: []engine.ModelFile{{
				Role: engine.RoleDiffusionModel, URL: "https://h.example/z.gguf", Filename: "z.gguf",
				ApproxBytes: 2700000000, SHA256: "ab12",
			}},
			CliDefaults: &engine.CliDefaults{CfgScale: 1, Steps: 8, Width: 1024, Height: 1024, SamplingMethod: "euler"},
		},
	}
}

const wireClaimJSON = `{"jobId":"job-1","gameId":"g1","assetName":"game/creatures/x","model":"z.gguf","vramGbEstimate":4,` +
	`"task":{"kind":"image","prompt":"a cat","width":1024,"height":1024,"steps":8,"seed":7},` +
	`"modelSource":{"engine":"sd-cpp","files":[{"role":"diffusion-model","url":"https://h.example/z.gguf",` +
	`"filename":"z.gguf","approxBytes":2700000000,"sha256":"ab12"}],` +
	`"cliDefaults":{"cfgScale":1,"steps":8,"width":1024,"height":1024,"samplingMethod":"euler"}}}`

// Every frame, both directions, pinned to its exact wire text.
var wireCases = []struct {
	name   string
	frame  any // a pointer, as the decoders return
	json   string
	worker bool // worker → studio
}{
	{"hello", &Hello{AuthToken: "tok", Capabilities: wireCaps()},
		`{"type":"hello","authToken":"tok",` + wireCapsJSON + `}`, true},
	{"heartbeat idle", &Heartbeat{Capabilities: wireCaps()},
		`{"type":"heartbeat","capabilities":{` + wireCapsJSON + `}}`, true},
	{"heartbeat busy", &Heartbeat{Capabilities: wireCaps(), CurrentJobID: "job-1"},
		`{"type":"heartbeat","capabilities":{` + wireCapsJSON + `},"currentJobId":"job-1"}`, true},
	{"accept", &Accept{JobID: "job-1"}, `{"type":"accept","jobId":"job-1"}`, true},
	{"reject with code", &Reject{JobID: "job-1", Reason: ReasonBusy, Code: RejectBusy},
		`{"type":"reject","jobId":"job-1","reason":"worker already has an in-flight job","code":"busy"}`, true},
	{"reject without code", &Reject{JobID: "job-1", Reason: "needs 12 GB, budget 8 GB"},
		`{"type":"reject","jobId":"job-1","reason":"needs 12 GB, budget 8 GB"}`, true},
	{"completeJson", &CompleteJSON{JobID: "job-1", Result: json.RawMessage(`{"object":"chat.completion"}`), Prompt: "hi"},
		`{"type":"completeJson","jobId":"job-1","result":{"object":"chat.completion"},"prompt":"hi"}`, true},
	{"completeJson without prompt", &CompleteJSON{JobID: "job-1", Result: json.RawMessage(`{"text":"x"}`)},
		`{"type":"completeJson","jobId":"job-1","result":{"text":"x"}}`, true},
	{"fail retryable", &Fail{JobID: "job-1", Error: "out of memory", Retryable: true},
		`{"type":"fail","jobId":"job-1","error":"out of memory","retryable":true}`, true},
	{"fail final", &Fail{JobID: "job-1", Error: "sd-cpp engine cannot serve video tasks"},
		`{"type":"fail","jobId":"job-1","error":"sd-cpp engine cannot serve video tasks","retryable":false}`, true},
	{"logBatch", &LogBatch{Entries: []LogEntry{
		{TS: "2025-01-02T03:04:05.678Z", Level: "info", Category: "ws", Message: "connected"},
		{TS: "2025-01-02T03:04:06.000Z", Level: "warn", Category: "worker", Message: "slow", JobID: "job-1"},
	}}, `{"type":"logBatch","entries":[{"ts":"2025-01-02T03:04:05.678Z","level":"info","category":"ws","message":"connected"},` +
		`{"ts":"2025-01-02T03:04:06.000Z","level":"warn","category":"worker","message":"slow","jobId":"job-1"}]}`, true},

	{"welcome", &Welcome{WorkerID: "w-1", ServerTime: "2025-01-02T03:04:05.678Z"},
		`{"type":"welcome","workerId":"w-1","serverTime":"2025-01-02T03:04:05.678Z"}`, false},
	{"offer", &Offer{Claim: wireClaim()}, `{"type":"offer","claim":` + wireClaimJSON + `}`, false},
	{"heartbeatAck", &HeartbeatAck{}, `{"type":"heartbeatAck"}`, false},
	{"completeAck", &CompleteAck{JobID: "job-1"}, `{"type":"completeAck","jobId":"job-1"}`, false},
	{"failAck", &FailAck{JobID: "job-1"}, `{"type":"failAck","jobId":"job-1"}`, false},
	{"error", &ErrorFrame{Code: ErrCodeProtocolViolation, Message: "session not authenticated"},
		`{"type":"error","code":"protocol_violation","message":"session not authenticated"}`, false},
}

func decodeFor(worker bool) func([]byte) (any, error) {
	if worker {
		return DecodeWorkerFrame
	}
	return DecodeServerFrame
}

func TestWireExactJSON(t *testing.T) {
	for _, tc := range wireCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Encode(tc.frame)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.json {
				t.Fatalf("Encode:\n got %s\nwant %s", got, tc.json)
			}
			// The value form encodes the same as the pointer form.
			byValue, err := Encode(reflect.ValueOf(tc.frame).Elem().Interface())
			if err != nil || string(byValue) != tc.json {
				t.Fatalf("Encode by value: %s, %v", byValue, err)
			}
			back, err := decodeFor(tc.worker)([]byte(tc.json))
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !reflect.DeepEqual(back, tc.frame) {
				t.Fatalf("decode:\n got %#v\nwant %#v", back, tc.frame)
			}
			// A frame of one direction is not a frame of the other.
			if _, err := decodeFor(!tc.worker)([]byte(tc.json)); !errors.Is(err, ErrUnknownFrame) {
				t.Fatalf("other direction decoded %s: %v", tc.name, err)
			}
		})
	}
}

func TestWireUnknownFieldsIgnored(t *testing.T) {
	cases := map[string]any{
		`{"type":"welcome","workerId":"w","serverTime":"t","region":"eu","extra":{"a":[1]}}`:                         &Welcome{WorkerID: "w", ServerTime: "t"},
		`{"type":"heartbeatAck","at":123}`:                                                                           &HeartbeatAck{},
		`{"serverTime":"t","type":"completeAck","jobId":"j"}`:                                                        &CompleteAck{JobID: "j"},
		`{"type":"offer","v":2,"claim":` + strings.TrimSuffix(wireClaimJSON, "}") + `,"priority":3,"prompt":"old"}}`: &Offer{Claim: wireClaim()},
	}
	for in, want := range cases {
		got, err := DecodeServerFrame([]byte(in))
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s:\n got %#v\nwant %#v", in, got, want)
		}
	}
}

func TestWireNullAcceptedInbound(t *testing.T) {
	hb, err := DecodeWorkerFrame([]byte(`{"type":"heartbeat","capabilities":{"machineName":"m","userPresence":null,` +
		`"taskKinds":null,"supportedModelsPerKind":null},"currentJobId":null}`))
	if err != nil {
		t.Fatal(err)
	}
	if h := hb.(*Heartbeat); h.CurrentJobID != "" || h.Capabilities.UserPresence != "" || h.Capabilities.MachineName != "m" {
		t.Fatalf("heartbeat with nulls: %#v", h)
	}
	rj, err := DecodeWorkerFrame([]byte(`{"type":"reject","jobId":"j","reason":"r","code":null}`))
	if err != nil || rj.(*Reject).Code != "" {
		t.Fatalf("reject with null code: %#v, %v", rj, err)
	}
	hello, err := DecodeWorkerFrame([]byte(`{"type":"hello","authToken":"t","userPresence":null,"engine":"multi"}`))
	if err != nil || hello.(*Hello).Capabilities.Engine != "multi" || hello.(*Hello).AuthToken != "t" {
		t.Fatalf("hello with null: %#v, %v", hello, err)
	}
	offer := strings.Replace(wireClaimJSON, `"sha256":"ab12"`, `"sha256":null`, 1)
	offer = strings.Replace(offer, `"seed":7`, `"seed":null,"negativePrompt":null`, 1)
	f, err := DecodeServerFrame([]byte(`{"type":"offer","claim":` + offer + `}`))
	if err != nil {
		t.Fatal(err)
	}
	c := f.(*Offer).Claim
	if c.ModelSource.Files[0].SHA256 != "" || c.Task.Image.Seed != nil {
		t.Fatalf("offer with nulls: %#v", c)
	}
	if ack, err := DecodeServerFrame([]byte(`{"type":"completeAck","jobId":null}`)); err != nil || ack.(*CompleteAck).JobID != "" {
		t.Fatalf("completeAck with null: %#v, %v", ack, err)
	}
}

func TestWireRejectsBadFrames(t *testing.T) {
	noTask := strings.Replace(wireClaimJSON, `"task":{"kind":"image","prompt":"a cat","width":1024,"height":1024,"steps":8,"seed":7},`, ``, 1)
	cases := []struct {
		name, in string
		unknown  bool // must be ErrUnknownFrame
		inMsg    string
	}{
		{"unknown type", `{"type":"progress","jobId":"j"}`, true, "progress"},
		{"worker frame from the studio", `{"type":"accept","jobId":"j"}`, true, "accept"},
		{"legacy readyForMore from the studio", `{"type":"readyForMore"}`, true, ""},
		{"type with wrong case", `{"type":"Welcome","workerId":"w"}`, true, ""},
		{"missing type", `{"workerId":"w"}`, false, "missing type"},
		{"null type", `{"type":null}`, false, "missing type"},
		{"not JSON", `{"type":"welcome",`, false, "malformed"},
		{"not an object", `["welcome"]`, false, "malformed"},
		{"empty", ``, false, "malformed"},
		{"wrong field type", `{"type":"welcome","workerId":5}`, false, "malformed welcome"},
		{"offer without claim", `{"type":"offer"}`, false, "malformed offer"},
		{"offer whose claim has no jobId", `{"type":"offer","claim":` + strings.Replace(noTask, `"jobId":"job-1"`, `"jobId":""`, 1) + `}`, false, "without jobId"},
		{"offer whose claim is not an object", `{"type":"offer","claim":[1]}`, false, "malformed offer"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, err := DecodeServerFrame([]byte(tc.in))
			if err == nil {
				t.Fatalf("decoded %#v", f)
			}
			if tc.unknown != errors.Is(err, ErrUnknownFrame) {
				t.Fatalf("error %v: unknown-type = %v, want %v", err, errors.Is(err, ErrUnknownFrame), tc.unknown)
			}
			if !strings.Contains(err.Error(), tc.inMsg) {
				t.Fatalf("error %q does not mention %q", err, tc.inMsg)
			}
		})
	}
}

// TestWireUnusableOffers: an offer whose claim names its job but carries a
// field the worker cannot use decodes as an *UnusableOffer naming that
// field, so the worker can answer that job alone (issue 10, item 6).
func TestWireUnusableOffers(t *testing.T) {
	noTask := strings.Replace(wireClaimJSON, `"task":{"kind":"image","prompt":"a cat","width":1024,"height":1024,"steps":8,"seed":7},`, ``, 1)
	noSource := wireClaimJSON[:strings.Index(wireClaimJSON, `,"modelSource"`)] + `}`
	parts := strings.Replace(wireClaimJSON, `"task":{"kind":"image","prompt":"a cat","width":1024,"height":1024,"steps":8,"seed":7}`,
		`"task":{"kind":"llm","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}`, 1)
	cases := []struct {
		name, claim, field, inMsg string
	}{
		{"no task", noTask, "task", "missing"},
		{"null task", strings.Replace(wireClaimJSON, `"task":{"kind":"image","prompt":"a cat","width":1024,"height":1024,"steps":8,"seed":7}`, `"task":null`, 1), "task", "missing"},
		{"no modelSource", noSource, "modelSource", "missing"},
		{"unknown task kind", strings.Replace(wireClaimJSON, `"kind":"image"`, `"kind":"3d"`, 1), "task", "unknown kind"},
		{"task missing prompt", strings.Replace(wireClaimJSON, `"prompt":"a cat",`, ``, 1), "task", "prompt"},
		{"steps as a string", strings.Replace(wireClaimJSON, `"steps":8`, `"steps":"eight"`, 1), "task.steps", "JSON string"},
		{"content parts of an unusable type", parts, "task.messages[0].content[0].type", `content parts of type "image_url" are not supported`},
		{"content neither text nor parts", strings.Replace(parts, `[{"type":"image_url","image_url":{"url":"x"}}]`, `{"parts":"x"}`, 1), "task.messages[0].content", "must be a string or a list of content parts"},
		{"vramGbEstimate as a string", strings.Replace(wireClaimJSON, `"vramGbEstimate":`, `"vramGbEstimate":"x","ignored":`, 1), "vramGbEstimate", "JSON string"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, err := DecodeServerFrame([]byte(`{"type":"offer","claim":` + tc.claim + `}`))
			if err != nil {
				t.Fatalf("error %v, want an *UnusableOffer", err)
			}
			u, ok := f.(*UnusableOffer)
			if !ok {
				t.Fatalf("decoded %#v, want an *UnusableOffer", f)
			}
			if u.JobID != "job-1" || !strings.HasPrefix(u.Field, tc.field) || !strings.Contains(u.Problem(), tc.inMsg) {
				t.Fatalf("%+v (problem %q), want field %s mentioning %q", u, u.Problem(), tc.field, tc.inMsg)
			}
			if !strings.HasPrefix(u.Problem(), u.Field+": ") {
				t.Fatalf("problem %q does not start with the field", u.Problem())
			}
		})
	}
}

func TestWireLegacyReadyForMore(t *testing.T) {
	f, err := DecodeWorkerFrame([]byte(`{"type":"readyForMore"}`))
	if err != nil || !IsReadyForMore(f) {
		t.Fatalf("readyForMore: %#v, %v", f, err)
	}
	if IsReadyForMore(&Accept{}) {
		t.Fatal("accept reported as readyForMore")
	}
}

func TestEncodeRejectsNonFrames(t *testing.T) {
	for _, v := range []any{nil, 5, struct{}{}, JobOfferClaim{}, &Capabilities{}} {
		if b, err := Encode(v); err == nil {
			t.Fatalf("Encode(%T) = %s", v, b)
		}
	}
}

func TestCloseCodeFor(t *testing.T) {
	for code, want := range map[string]int{
		ErrCodeAuthFailed: 4001, ErrCodeProtocolViolation: 4002, ErrCodeDuplicateWorker: 4003,
		ErrCodeWorkerDeleted: 4004, ErrCodeInternalError: 1000, "other": 1000,
	} {
		if got := CloseCodeFor(code); got != want {
			t.Errorf("CloseCodeFor(%s) = %d, want %d", code, got, want)
		}
	}
}

func BenchmarkEncode(b *testing.B) {
	hb := Heartbeat{Capabilities: wireCaps(), CurrentJobID: "job-1"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Encode(hb); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	data := []byte(`{"type":"offer","claim":` + wireClaimJSON + `}`)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeServerFrame(data); err != nil {
			b.Fatal(err)
		}
	}
}
