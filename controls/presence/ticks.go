package presence

import "time"

// idleSinceTicks is the time from lastInput to now, both Windows tick
// counts in ms (GetLastInputInfo's dwTime, GetTickCount). They are 32-bit
// and wrap every 49.7 days; the unsigned difference is right across a
// wrap. An input newer than now (it came between the two reads, so the
// difference is "negative" and comes out near 2^32) counts as no idle
// time.
func idleSinceTicks(now, lastInput uint32) time.Duration {
	d := now - lastInput
	if d > 1<<31 {
		return 0
	}
	return time.Duration(d) * time.Millisecond
}
