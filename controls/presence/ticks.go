package presence

import "time"

// idleSinceTicks is the time from lastInput to now, both Windows tick
// counts in ms (GetLastInputInfo's dwTime, then GetTickCount, read in that
// order so that now is never before lastInput). They are 32-bit and wrap
// every 49.7 days; the unsigned difference is right across a wrap, and
// for idleness longer than 49.7 days it is the remainder (a machine left
// alone for months still reads idle, except for two minutes every 49.7
// days). A lastInput up to 1 s after now (a tick source that runs ahead,
// which Windows does not document) counts as no idle time, not 49 days.
func idleSinceTicks(now, lastInput uint32) time.Duration {
	d := now - lastInput
	if d > ^uint32(0)-1000 {
		return 0
	}
	return time.Duration(d) * time.Millisecond
}
