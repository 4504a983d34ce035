package engine

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestTaskMaxTokensAbsentIsNotZero(t *testing.T) {
	var absent, zero Task
	if err := json.Unmarshal([]byte(`{"kind":"llm","messages":[{"role":"user","content":"hi"}]}`), &absent); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(`{"kind":"llm","messages":[],"maxTokens":0}`), &zero); err != nil {
		t.Fatal(err)
	}
	if absent.LLM.MaxTokens != nil {
		t.Fatalf("absent maxTokens decoded as %d", *absent.LLM.MaxTokens)
	}
	if zero.LLM.MaxTokens == nil || *zero.LLM.MaxTokens != 0 {
		t.Fatal("an explicit maxTokens 0 must stay visible so that the engine can refuse it")
	}
	out, err := json.Marshal(zero)
	if err != nil || !strings.Contains(string(out), `"maxTokens":0`) {
		t.Fatalf("re-encoded: %s %v", out, err)
	}
}

func TestTaskRejectsUnknownKindAndMissingFields(t *testing.T) {
	for _, in := range []string{
		`{"kind":"sculpture","prompt":"x"}`,
		`{"prompt":"x"}`,
		`{"kind":"image"}`,
		`{"kind":"llm","messages":null}`,
		`{"kind":"audio_stt"}`,
	} {
		var task Task
		if err := json.Unmarshal([]byte(in), &task); err == nil {
			t.Errorf("%s: accepted", in)
		}
	}
}

func TestTaskPromptIsTheFullLastMessage(t *testing.T) {
	long := strings.Repeat("a long prompt ", 100)
	task := Task{Kind: KindLLM, LLM: &LLMParams{Messages: []ChatMessage{{Role: "system", Content: "s"}, {Role: "user", Content: long}}}}
	if task.Prompt() != long {
		t.Fatal("prompt was not the full last message")
	}
}
