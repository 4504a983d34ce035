package engine

import (
	"fmt"
	"strings"
	"time"
)

// CrashError says the process an engine runs in died, or stopped answering
// and was stopped, while it ran a job (engine/host's child processes). The
// worker keeps running; the job is failed as retryable, and the Runner's
// poison rule turns the second crash of the same job or model file into a
// failure that is not (see Runner.Run).
type CrashError struct {
	// What names the engine in a donor's words: "the text engine".
	What  string
	Model string // the job's model id
	Phase Phase  // what the job was doing: PhaseLoad or PhaseGenerate
	// Hung is non-zero when the process gave no sign of life for this
	// long and was stopped; zero when it died by itself.
	Hung time.Duration
	// Exit is how the process ended: "signal: aborted", "exit status 2".
	Exit string
	// Lines are the last lines the process printed on its error output,
	// joined with " | " (a C++ exception's what(), a ggml assertion).
	Lines string
}

func (e *CrashError) Error() string {
	var b strings.Builder
	what := e.What
	if what == "" {
		what = "the engine"
	}
	b.WriteString(what)
	if e.Hung > 0 {
		fmt.Fprintf(&b, " stopped answering (nothing for %s) and was stopped", e.Hung)
	} else {
		b.WriteString(" crashed")
	}
	switch e.Phase {
	case PhaseLoad:
		b.WriteString(" while loading model " + e.Model)
	case PhaseGenerate:
		b.WriteString(" while generating with model " + e.Model)
	default:
		if e.Model != "" {
			b.WriteString(" while running model " + e.Model)
		}
	}
	if e.Exit != "" && e.Hung == 0 {
		b.WriteString(" (" + e.Exit + ")")
	}
	if e.Lines != "" {
		b.WriteString(": " + e.Lines)
	}
	return b.String()
}
