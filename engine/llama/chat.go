package llama

import (
	"strings"

	"github.com/minisgg/studio-worker/engine"
)

// The fallback chat template, used when a model carries no template of its
// own (or one llama.cpp cannot apply). It is ChatML: every turn is
//
//	<|im_start|>{role}\n{content}<|im_end|>\n
//
// and the prompt ends with "<|im_start|>assistant\n" for the reply. ChatML is
// the most widely trained chat format, and for a model that never saw it the
// plain "role, newline, content" lines still read as a transcript. Because
// such a model may write the end marker as ordinary text, fallbackStop is
// added to the stop strings.
const (
	fallbackTemplateName = "ChatML (fallback)"
	fallbackStop         = "<|im_end|>"
)

func formatFallback(msgs []engine.ChatMessage) string {
	var b strings.Builder
	for _, m := range msgs {
		b.WriteString("<|im_start|>")
		b.WriteString(m.Role)
		b.WriteString("\n")
		b.WriteString(m.Content)
		b.WriteString("<|im_end|>\n")
	}
	b.WriteString("<|im_start|>assistant\n")
	return b.String()
}

// chatMessages puts the task's system text first as a system turn.
func chatMessages(p *engine.LLMParams) []engine.ChatMessage {
	msgs := make([]engine.ChatMessage, 0, len(p.Messages)+1)
	if strings.TrimSpace(p.System) != "" {
		msgs = append(msgs, engine.ChatMessage{Role: "system", Content: p.System})
	}
	return append(msgs, p.Messages...)
}

const (
	thinkOpen  = "<think>"
	thinkClose = "</think>"
)

// splitThink moves a leading <think>…</think> block out of a reply. When
// the prompt already opened the block (templates of reasoning models end
// the generation prompt with "<think>"), the reply starts inside it. An
// unclosed block (the reply hit its length limit while thinking) is all
// reasoning. A reply without a leading block is returned unchanged.
func splitThink(reply string, promptOpened bool) (content, reasoning string) {
	rest := strings.TrimLeft(reply, " \t\r\n")
	switch {
	case strings.HasPrefix(rest, thinkOpen):
		rest = rest[len(thinkOpen):]
	case promptOpened:
	default:
		return reply, ""
	}
	end := strings.Index(rest, thinkClose)
	if end < 0 {
		return "", strings.TrimSpace(rest)
	}
	return strings.TrimLeft(rest[end+len(thinkClose):], " \t\r\n"), strings.TrimSpace(rest[:end])
}

// promptOpensThink reports whether a formatted prompt ends inside a think
// block that the model is expected to close.
func promptOpensThink(prompt string) bool {
	return strings.HasSuffix(strings.TrimRight(prompt, " \t\r\n"), thinkOpen)
}

// stopScanner finds the first stop string in generated text as it grows.
type stopScanner struct {
	stops  []string
	maxLen int
}

func newStopScanner(stops []string) stopScanner {
	s := stopScanner{}
	for _, st := range stops {
		if st == "" {
			continue
		}
		s.stops = append(s.stops, st)
		s.maxLen = max(s.maxLen, len(st))
	}
	return s
}

// scan looks for a stop string that ends in text[added:], where added is
// where the newest piece starts, and returns the index the reply must be cut
// at, or -1.
func (s stopScanner) scan(text string, added int) int {
	if len(s.stops) == 0 {
		return -1
	}
	from := max(0, added-s.maxLen+1)
	cut := -1
	for _, st := range s.stops {
		if i := strings.Index(text[from:], st); i >= 0 && (cut < 0 || from+i < cut) {
			cut = from + i
		}
	}
	return cut
}
