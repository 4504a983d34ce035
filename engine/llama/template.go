package llama

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"runtime/metrics"
	"sort"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/ardanlabs/jinja"
	yz "github.com/hybridgroup/yzma/pkg/llama"

	"github.com/minisgg/studio-worker/engine"
)

// How a chat becomes prompt tokens.
//
// The model's own chat template (GGUF key tokenizer.chat_template) is a
// Jinja program written by the model's authors. It is rendered here with
// github.com/ardanlabs/jinja, a pure-Go Jinja made for chat templates, with
// the variables Hugging Face's apply_chat_template gives it: messages,
// add_generation_prompt (true), bos_token, eos_token, and the job's
// chatTemplateKwargs at the top level (so {"enable_thinking": false} reaches
// a Qwen3 template). When the template cannot be compiled or rendered by
// that library, llama.cpp's built-in templates are the fallback
// (llama_chat_apply_template guesses the format from the template's text;
// logged), and without a template, or when both fail, ChatML (logged; see
// chat.go). A template that refuses the messages itself
// (raise_exception(...), e.g. "roles must alternate") fails the job.
//
// Only the template's own markup may become control tokens. A caller who
// types "<|im_end|>\n<|im_start|>system\n…" into a message must not forge a
// turn. So, before rendering, every occurrence of a control (or unknown)
// token's text in caller text (message roles and contents, the system text,
// string template arguments) is replaced by a placeholder: one code point
// of the supplementary private-use planes (U+F0000–U+10FFFD) per distinct
// text, caller-typed code points of that range being replaced the same way.
// The rendered prompt is then cut at the placeholders: the template's text
// is tokenized with special-token parsing, each replaced text as plain text.
//
// Placeholders rather than sentinels around each message: chat templates
// transform message text (Llama 3 and Gemma trim it, Qwen3 splits an
// assistant turn at "</think>", others test a prefix), and a sentinel
// around the text would defeat a trim and be torn by a split. A placeholder
// stands where the control text stood, is neither whitespace nor a word a
// template looks for, and survives such transforms. What differs from the
// authors' rendering: a template that measures or compares a message that
// contains control-token text sees one code point where that text was.
// Tokenization restarts at each cut, so for SentencePiece vocabularies a
// cut adds the prefix space llama.cpp puts before text that follows a
// special token; that happens only around caller-typed control text. Text
// of user-defined tokens (Qwen's "<think>") is not replaced: llama.cpp
// matches those even without special-token parsing, as Hugging Face does.

// Supplementary private-use planes, used for placeholders.
const (
	placeholderLo1, placeholderHi1 = 0xF0000, 0xFFFFD
	placeholderLo2, placeholderHi2 = 0x100000, 0x10FFFD
	maxPlaceholders                = (placeholderHi1 - placeholderLo1 + 1) + (placeholderHi2 - placeholderLo2 + 1)
)

func isPlaceholder(r rune) bool {
	return (r >= placeholderLo1 && r <= placeholderHi1) || (r >= placeholderLo2 && r <= placeholderHi2)
}

func placeholderRune(i int) rune {
	if n := placeholderHi1 - placeholderLo1 + 1; i >= n {
		return rune(placeholderLo2 + i - n)
	}
	return rune(placeholderLo1 + i)
}

func placeholderIndex(r rune) int {
	if r >= placeholderLo2 {
		return int(r-placeholderLo2) + (placeholderHi1 - placeholderLo1 + 1)
	}
	return int(r - placeholderLo1)
}

// vocabFacts are what prompt building needs from a model's vocabulary,
// read once per load.
type vocabFacts struct {
	// special holds the texts of control and unknown tokens (those llama.cpp
	// matches only with special-token parsing), by first byte.
	special  [256]*textSet
	nSpecial int
	bos, eos string // texts of the BOS and EOS tokens ("" when none)
	addBOS   bool   // tokenizing with add_special puts a BOS first
	addEOS   bool   // … and an EOS last
	// maxTokenBytes bounds the bytes of prompt text one token can stand
	// for: the longest token text. Each byte of a SentencePiece or
	// byte-level BPE token's text stands for at most one byte of input.
	// 0 for other vocabularies (their normalisers may drop input).
	maxTokenBytes int
}

// textSet is the special texts that share a first byte: their distinct
// lengths, longest first, and the texts. A lookup costs one map probe per
// length, however many texts there are (Gemma has thousands of
// "<unused…>" control tokens, all starting with '<').
type textSet struct {
	lengths []int
	texts   map[string]struct{}
}

func (ts *textSet) add(text string) {
	if ts.texts == nil {
		ts.texts = map[string]struct{}{}
	}
	if _, ok := ts.texts[text]; ok {
		return
	}
	ts.texts[text] = struct{}{}
	i := sort.Search(len(ts.lengths), func(i int) bool { return ts.lengths[i] <= len(text) })
	if i < len(ts.lengths) && ts.lengths[i] == len(text) {
		return
	}
	ts.lengths = append(ts.lengths, 0)
	copy(ts.lengths[i+1:], ts.lengths[i:])
	ts.lengths[i] = len(text)
}

// longestAt returns the longest text of the set that s starts with.
func (ts *textSet) longestAt(s string) string {
	for _, n := range ts.lengths {
		if n <= len(s) {
			if _, ok := ts.texts[s[:n]]; ok {
				return s[:n]
			}
		}
	}
	return ""
}

func readVocab(v yz.Vocab) *vocabFacts {
	f := &vocabFacts{addBOS: yz.VocabGetAddBOS(v), addEOS: yz.VocabGetAddEOS(v)}
	n := int(yz.VocabNTokens(v))
	maxLen := 0
	for t := 0; t < n; t++ {
		text := yz.VocabGetText(v, yz.Token(t))
		maxLen = max(maxLen, len(text))
		if text == "" || yz.VocabGetAttr(v, yz.Token(t))&(yz.TokenAttrControl|yz.TokenAttrUnknown) == 0 {
			continue
		}
		if f.special[text[0]] == nil {
			f.special[text[0]] = &textSet{}
		}
		f.special[text[0]].add(text)
		f.nSpecial++
	}
	if b := yz.VocabBOS(v); b >= 0 {
		f.bos = yz.VocabGetText(v, b)
	}
	if e := yz.VocabEOS(v); e >= 0 {
		f.eos = yz.VocabGetText(v, e)
	}
	switch yz.GetVocabType(v) {
	case yz.VocabTypeSPM, yz.VocabTypeBPE:
		f.maxTokenBytes = max(maxLen, 1)
	}
	return f
}

// protector replaces control-token text in caller text by placeholders and
// remembers what each stands for.
type protector struct {
	vf    *vocabFacts
	texts []string
	index map[string]rune
	full  bool // ran out of placeholders
}

func newProtector(vf *vocabFacts) *protector {
	return &protector{vf: vf, index: map[string]rune{}}
}

func (p *protector) placeholder(text string) rune {
	if r, ok := p.index[text]; ok {
		return r
	}
	if len(p.texts) == maxPlaceholders {
		p.full = true
		return utf8.RuneError
	}
	r := placeholderRune(len(p.texts))
	p.texts = append(p.texts, text)
	p.index[text] = r
	return r
}

// protect returns s with every control-token text (leftmost, longest
// first) and every placeholder-range code point replaced by a placeholder.
func (p *protector) protect(s string) string {
	var b *strings.Builder
	last := 0
	for i := 0; i < len(s); {
		match := ""
		if ts := p.vf.special[s[i]]; ts != nil {
			match = ts.longestAt(s[i:])
		}
		if match == "" && s[i] >= 0xF3 { // lead byte of U+C0000 and above
			if r, n := utf8.DecodeRuneInString(s[i:]); isPlaceholder(r) {
				match = s[i : i+n]
			}
		}
		if match == "" {
			i++
			continue
		}
		if b == nil {
			b = &strings.Builder{}
			b.Grow(len(s))
		}
		b.WriteString(s[last:i])
		b.WriteRune(p.placeholder(match))
		i += len(match)
		last = i
	}
	if b == nil {
		return s
	}
	b.WriteString(s[last:])
	return b.String()
}

// protectValue protects every string in a decoded JSON value.
func (p *protector) protectValue(v any) any {
	switch x := v.(type) {
	case string:
		return p.protect(x)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = p.protectValue(e)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = p.protectValue(e)
		}
		return out
	}
	return v
}

// restore puts the original texts back (for words shown to people).
func (p *protector) restore(s string) string {
	var b strings.Builder
	for _, seg := range p.segments(s) {
		b.WriteString(seg.text)
	}
	return b.String()
}

// segment is a run of prompt text: the template's own (tokenized with
// special-token parsing) or caller-typed control text (plain).
type segment struct {
	text  string
	plain bool
}

// segments cuts a rendered prompt at the placeholders. Adjacent runs of
// the same kind are merged.
func (p *protector) segments(rendered string) []segment {
	var segs []segment
	add := func(text string, plain bool) {
		if text == "" {
			return
		}
		if n := len(segs); n > 0 && segs[n-1].plain == plain {
			segs[n-1].text += text
			return
		}
		segs = append(segs, segment{text, plain})
	}
	last := 0
	for i := 0; i < len(rendered); {
		r, n := utf8.DecodeRuneInString(rendered[i:])
		if isPlaceholder(r) {
			if k := placeholderIndex(r); k < len(p.texts) {
				add(rendered[last:i], false)
				add(p.texts[k], true)
				last = i + n
			}
		}
		i += n
	}
	add(rendered[last:], false)
	return segs
}

// chatPrompt is a formatted chat, ready to tokenize.
type chatPrompt struct {
	segments []segment
	template string // which template made it, for the log
}

// text is the prompt as the model reads it.
func (c chatPrompt) text() string {
	var b strings.Builder
	for _, s := range c.segments {
		b.WriteString(s.text)
	}
	return b.String()
}

func (c chatPrompt) bytes() int {
	n := 0
	for _, s := range c.segments {
		n += len(s.text)
	}
	return n
}

// Template names, as logged.
const (
	templateJinja   = "model's own (Jinja)"
	templateBuiltin = "model's own, as llama.cpp's built-in guess"
)

// chatTemplate is a model's template, compiled once per load.
type chatTemplate struct {
	source  string
	jinja   *jinja.Template // nil when source is empty or did not compile
	compErr error
}

func compileTemplate(source string) *chatTemplate {
	ct := &chatTemplate{source: source}
	if source == "" {
		return ct
	}
	func() {
		defer func() {
			if p := recover(); p != nil {
				ct.compErr = fmt.Errorf("the Jinja compiler failed: %v", p)
			}
		}()
		ct.jinja, ct.compErr = jinja.Compile(source)
	}()
	return ct
}

// templateRefusal is the error of a template's raise_exception(...).
type templateRefusal struct{ msg string }

func (e *templateRefusal) Error() string { return e.msg }

// Limits on rendering a model's chat template. A chat template is a
// program from the model file, and github.com/ardanlabs/jinja (v1.8.0)
// runs it with no limit of its own: no context, no step count, no output
// cap. A real template renders a chat in well under a millisecond; a
// hostile one can loop over huge ranges, repeat strings into gigabytes or
// recurse without end. So a render runs in a goroutine of its own, watched:
//   - range() may make at most templateRangeItems items in one render (all
//     calls together, so nested loops count), else it fails at once;
//   - the render may take templateTime, and the process's Go heap and
//     goroutine stacks may grow by templateGrowth (or by what they held
//     before, when that is more) while it runs, sampled every
//     templateSample;
//   - the rendered prompt may be templateOutput bytes at most.
//
// The first and the last fail the job cleanly. Past time or memory, the job
// fails too, but the goroutine cannot be stopped from outside: the error
// then wraps engine.ErrProcessTainted, and the engine-host child that runs
// this engine in production reports it and exits (engine/host), which
// frees the core and the memory. All of them fail the job as the job's
// fault (*engine.JobError, not retryable): the model's template is broken
// or hostile, and another worker would fare no better.
var (
	templateTime       = 2 * time.Second
	templateGrowth     = uint64(256 << 20)
	templateOutput     = 32 << 20
	templateRangeItems = int64(1 << 20)
	templateSample     = 10 * time.Millisecond
)

// templateLimit is a chat template that went past one of the limits.
type templateLimit struct{ what string }

func (e *templateLimit) Error() string { return e.what }

// limitError is the job's error for a template past a limit; tainted says
// its render is still running.
func limitError(what string, tainted bool) error {
	je := &engine.JobError{Field: "model", Reason: "the model's chat template (tokenizer.chat_template) " + what +
		"; it is broken or hostile, so this model cannot be used for chat"}
	if tainted {
		je.Err = engine.ErrProcessTainted
	}
	return je
}

// goMemory is the Go heap's live and unswept objects plus goroutine
// stacks, in bytes: what a runaway render grows.
func goMemory() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/heap/stacks:bytes"}}
	metrics.Read(s)
	var n uint64
	for _, x := range s {
		if x.Value.Kind() == metrics.KindUint64 {
			n += x.Value.Uint64()
		}
	}
	return n
}

// boundedRange is Jinja's range() drawing on budget, the items that all
// range() calls of one render may still make.
func boundedRange(budget *atomic.Int64) jinja.Value {
	return jinja.NewCallable("range", func(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
		if len(args) < 1 || len(args) > 3 {
			return jinja.Undefined(), fmt.Errorf("range: expected 1-3 arguments, got %d", len(args))
		}
		// Whole numbers, as the library's own range() takes them (its **
		// makes floats: range(10**12) must meet the limit, not slip past).
		n64 := make([]int64, len(args))
		for i, a := range args {
			switch {
			case a.IsInt():
				n64[i] = a.AsInt()
			case a.IsFloat() && a.AsFloat() >= math.MinInt64 && a.AsFloat() < math.MaxInt64:
				n64[i] = int64(a.AsFloat())
			default:
				return jinja.Undefined(), fmt.Errorf("range: argument %d is not a whole number", i+1)
			}
		}
		var start, stop, step int64 = 0, 0, 1
		switch len(args) {
		case 1:
			stop = n64[0]
		case 2:
			start, stop = n64[0], n64[1]
		case 3:
			start, stop, step = n64[0], n64[1], n64[2]
		}
		if step == 0 {
			return jinja.Undefined(), errors.New("range: step must not be zero")
		}
		var n uint64 // the item count, in unsigned arithmetic so that no difference overflows
		switch {
		case step > 0 && stop > start:
			n = (uint64(stop)-uint64(start)-1)/uint64(step) + 1
		case step < 0 && stop < start:
			n = (uint64(start)-uint64(stop)-1)/(-uint64(step)) + 1
		}
		if n > uint64(templateRangeItems) || budget.Add(-int64(n)) < 0 {
			return jinja.Undefined(), &templateLimit{fmt.Sprintf("asked range() for more than %d items in all", templateRangeItems)}
		}
		items := make([]jinja.Value, n)
		for i := range items {
			items[i] = jinja.NewInt(start + int64(i)*step)
		}
		return jinja.NewList(items), nil
	})
}

// renderJinja renders the template with protected messages and arguments,
// within the limits above.
func (ct *chatTemplate) renderJinja(msgs []engine.ChatMessage, kwargs map[string]any, vf *vocabFacts, p *protector) (string, error) {
	list := make([]any, len(msgs))
	for i, m := range msgs {
		list[i] = map[string]any{"role": p.protect(m.Role), "content": p.protect(m.Content)}
	}
	data := make(map[string]jinja.Value, len(kwargs)+6)
	for k, v := range kwargs {
		data[k] = jinja.FromGoValue(p.protectValue(v))
	}
	data["messages"] = jinja.FromGoValue(list)
	data["add_generation_prompt"] = jinja.NewBool(true)
	if _, ok := data["bos_token"]; !ok {
		data["bos_token"] = jinja.NewString(vf.bos)
	}
	if _, ok := data["eos_token"]; !ok {
		data["eos_token"] = jinja.NewString(vf.eos)
	}
	data["raise_exception"] = jinja.NewCallable("raise_exception", func(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
		msg := "raise_exception() without a message"
		if len(args) > 0 {
			msg = p.restore(args[0].String())
		}
		return jinja.Undefined(), &templateRefusal{msg: msg}
	})
	budget := &atomic.Int64{}
	budget.Store(templateRangeItems)
	data["range"] = boundedRange(budget) // the caller's scope shadows the builtin

	type rendered struct {
		out string
		err error
	}
	done := make(chan rendered, 1)
	// The sample counts garbage not yet collected too, and the collector
	// lets the heap reach about twice what is live before it runs: a
	// process with a large heap may grow by that much without any help.
	base := goMemory()
	growth := max(templateGrowth, base)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- rendered{"", fmt.Errorf("the Jinja renderer failed: %v", r)}
			}
		}()
		out, err := ct.jinja.RenderValues(data)
		done <- rendered{out, err}
	}()
	deadline := time.NewTimer(templateTime)
	defer deadline.Stop()
	sample := time.NewTicker(templateSample)
	defer sample.Stop()
	for {
		select {
		case r := <-done:
			var lim *templateLimit
			switch {
			case errors.As(r.err, &lim):
				return "", limitError(lim.what, false)
			case r.err == nil && len(r.out) > templateOutput:
				return "", limitError(fmt.Sprintf("wrote a prompt of more than %d MiB", templateOutput>>20), false)
			}
			return r.out, r.err
		case <-deadline.C:
			return "", limitError(fmt.Sprintf("ran for more than %s", templateTime), true)
		case <-sample.C:
			if m := goMemory(); m > base+growth {
				return "", limitError(fmt.Sprintf("took more than %d MiB of memory", growth>>20), true)
			}
		}
	}
}

// renderBuiltin applies llama.cpp's built-in template that its heuristics
// pick for source; ok is false when none fits.
func renderBuiltin(source string, msgs []engine.ChatMessage, p *protector) (string, bool) {
	if source == "" {
		return "", false
	}
	cmsgs := make([]yz.ChatMessage, len(msgs))
	size := 256
	for i, m := range msgs {
		role, content := p.protect(m.Role), p.protect(m.Content)
		cmsgs[i] = yz.NewChatMessage(role, content)
		size += len(role) + len(content) + 64
	}
	buf := make([]byte, size*2)
	n := yz.ChatApplyTemplate(source, cmsgs, true, buf)
	if int(n) > len(buf) {
		buf = make([]byte, n)
		n = yz.ChatApplyTemplate(source, cmsgs, true, buf)
	}
	// Keep the Go memory behind the C pointers alive through the calls.
	runtime.KeepAlive(cmsgs)
	if n <= 0 || int(n) > len(buf) {
		return "", false
	}
	return string(buf[:n]), true
}

// formatChat renders msgs with the model's template (see the comment at the
// top of this file) and cuts the result into segments. Errors are
// *engine.JobError: the template refused the messages, or caller text held
// more distinct control texts than there are placeholders.
func (e *Engine) formatChat(r *resident, msgs []engine.ChatMessage, kwargs map[string]any) (chatPrompt, error) {
	p := newProtector(r.facts)
	var rendered, name string
	ct := r.tmpl
	if ct.jinja != nil {
		out, err := ct.renderJinja(msgs, kwargs, r.facts, p)
		var refusal *templateRefusal
		var limit *engine.JobError
		switch {
		case errors.As(err, &limit):
			return chatPrompt{}, err
		case errors.As(err, &refusal):
			return chatPrompt{}, engine.Invalid("messages", "the model's chat template refuses these messages: %s", refusal.msg)
		case err != nil:
			e.log.Warn("cannot render the model's chat template; using llama.cpp's built-in guess for it",
				"op", "llama.template", "path", r.path, "err", err)
		default:
			rendered, name = out, templateJinja
		}
	}
	if name == "" && len(kwargs) > 0 {
		keys := make([]string, 0, len(kwargs))
		for k := range kwargs {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		e.log.Warn("chatTemplateKwargs ignored: only the model's own Jinja template takes them",
			"op", "llama.template", "path", r.path, "kwargs", strings.Join(keys, ","))
	}
	if name == "" && ct.source != "" {
		if out, ok := renderBuiltin(ct.source, msgs, p); ok {
			rendered, name = out, templateBuiltin
		} else {
			e.log.Warn("llama.cpp cannot apply this model's chat template either; using the fallback "+fallbackTemplateName,
				"op", "llama.template", "path", r.path)
		}
	}
	if name == "" {
		if ct.source == "" {
			e.log.Info("model has no chat template; using the fallback "+fallbackTemplateName,
				"op", "llama.template", "path", r.path)
		}
		protected := make([]engine.ChatMessage, len(msgs))
		for i, m := range msgs {
			protected[i] = engine.ChatMessage{Role: p.protect(m.Role), Content: p.protect(m.Content)}
		}
		rendered, name = formatFallback(protected), fallbackTemplateName
	}
	if p.full {
		return chatPrompt{}, engine.Invalid("messages", "holds more than %d distinct control-token texts and private-use characters", maxPlaceholders)
	}
	segs := p.segments(rendered)
	// A template that writes bos_token first would double the BOS that
	// tokenizing adds (llama.cpp's server drops it the same way).
	if vf := r.facts; vf.addBOS && vf.bos != "" && len(segs) > 0 && !segs[0].plain && strings.HasPrefix(segs[0].text, vf.bos) {
		segs[0].text = segs[0].text[len(vf.bos):]
		if segs[0].text == "" {
			segs = segs[1:]
		}
	}
	return chatPrompt{segments: segs, template: name}, nil
}

// tokenize turns the segments into tokens: the template's text with
// special-token parsing, caller text without, with BOS/EOS added as the
// vocabulary asks. One segment is tokenized exactly as llama.cpp's own
// tokenize(prompt, add_special, parse_special) would.
func tokenize(v yz.Vocab, vf *vocabFacts, segs []segment) []yz.Token {
	if len(segs) == 1 {
		return yz.Tokenize(v, segs[0].text, true, !segs[0].plain)
	}
	var out []yz.Token
	for i, s := range segs {
		// add_special's EOS must go at the very end, so a vocabulary that
		// adds one gets its BOS and EOS placed here instead.
		addSpecial := i == 0 && !vf.addEOS
		if i == 0 && vf.addEOS && vf.addBOS {
			if bos := yz.VocabBOS(v); bos >= 0 {
				out = append(out, bos)
			}
		}
		out = append(out, yz.Tokenize(v, s.text, addSpecial, !s.plain)...)
	}
	if vf.addEOS {
		if eos := yz.VocabEOS(v); eos >= 0 {
			out = append(out, eos)
		}
	}
	return out
}
