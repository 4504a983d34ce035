package controls

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Span is one stretch of a day when work is allowed, in minutes since
// local midnight: Start is included, End is not. End may be 1440 (24:00).
// A span written across midnight ("22:00-06:00") is stored as the day's
// 22:00-24:00 and the next day's 00:00-06:00.
type Span struct {
	Start, End int
}

// Schedule is the week's work hours: for each weekday (indexed by
// time.Weekday, Sunday = 0) the spans of local wall-clock time when the
// worker may take jobs. A day with no span allows no work. The zero value
// allows none at all; a Schedule that is off is simply not given to the
// Gate.
type Schedule struct {
	Days [7][]Span
}

// ParseDay reads one day's hours as the donor writes them: spans
// "HH:MM-HH:MM" separated by commas ("09:00-12:00, 13:00-17:30"). "24:00"
// ends a day; a span whose end is before its start runs past midnight
// into the next day ("22:00-06:00"). An empty text is no work that day;
// "all day" (or "00:00-24:00") is the whole day. The error says what is
// wrong in a donor's words.
func ParseDay(text string) (today, tomorrow []Span, err error) {
	text = strings.TrimSpace(text)
	if text == "" {
		return nil, nil, nil
	}
	if strings.EqualFold(text, "all day") {
		return []Span{{0, 1440}}, nil, nil
	}
	for part := range strings.SplitSeq(text, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		from, to, ok := strings.Cut(part, "-")
		if !ok {
			return nil, nil, fmt.Errorf("%q is not a span of hours such as 09:00-17:00", part)
		}
		s, err := parseClock(from)
		if err != nil {
			return nil, nil, err
		}
		e, err := parseClock(to)
		if err != nil {
			return nil, nil, err
		}
		switch {
		case s == 1440:
			return nil, nil, fmt.Errorf("%q starts at 24:00; start the span at 00:00 of the next day", part)
		case s == e:
			return nil, nil, fmt.Errorf("%q starts and ends at the same time", part)
		case s < e:
			today = append(today, Span{s, e})
		default: // past midnight
			today = append(today, Span{s, 1440})
			if e > 0 {
				tomorrow = append(tomorrow, Span{0, e})
			}
		}
	}
	return mergeSpans(today), mergeSpans(tomorrow), nil
}

// parseClock reads "H:MM" or "HH:MM" (00:00 to 24:00) as minutes.
func parseClock(s string) (int, error) {
	s = strings.TrimSpace(s)
	h, m, ok := strings.Cut(s, ":")
	if !ok {
		return 0, fmt.Errorf("%q is not a time such as 09:00", s)
	}
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if err1 != nil || err2 != nil || len(m) != 2 || len(h) == 0 || len(h) > 2 || hh < 0 || mm < 0 || mm > 59 || hh > 24 || (hh == 24 && mm != 0) {
		return 0, fmt.Errorf("%q is not a time between 00:00 and 24:00", s)
	}
	return hh*60 + mm, nil
}

// mergeSpans sorts spans and joins those that overlap or touch.
func mergeSpans(in []Span) []Span {
	if len(in) == 0 {
		return nil
	}
	slices.SortFunc(in, func(a, b Span) int { return a.Start - b.Start })
	out := []Span{in[0]}
	for _, s := range in[1:] {
		last := &out[len(out)-1]
		if s.Start <= last.End {
			last.End = max(last.End, s.End)
			continue
		}
		out = append(out, s)
	}
	return out
}

// ParseWeek builds a Schedule from the texts of each weekday (indexed by
// time.Weekday); see ParseDay. A span past midnight on Saturday runs into
// Sunday. The error names the day.
func ParseWeek(days [7]string) (Schedule, error) {
	var sch Schedule
	for d := range 7 {
		today, tomorrow, err := ParseDay(days[d])
		if err != nil {
			return Schedule{}, fmt.Errorf("%s: %w", time.Weekday(d), err)
		}
		sch.Days[d] = append(sch.Days[d], today...)
		next := (d + 1) % 7
		sch.Days[next] = append(sch.Days[next], tomorrow...)
	}
	for d := range 7 {
		sch.Days[d] = mergeSpans(sch.Days[d])
	}
	return sch, nil
}

// FormatSpans writes spans back as ParseDay reads them ("09:00-17:00,
// 20:00-24:00").
func FormatSpans(spans []Span) string {
	parts := make([]string, len(spans))
	for i, s := range spans {
		parts[i] = fmt.Sprintf("%02d:%02d-%02d:%02d", s.Start/60, s.Start%60, s.End/60, s.End%60)
	}
	return strings.Join(parts, ", ")
}

// Allows reports whether t falls in the work hours, read on the wall
// clock of t's location.
func (s Schedule) Allows(t time.Time) bool {
	m := t.Hour()*60 + t.Minute()
	for _, sp := range s.Days[t.Weekday()] {
		if m >= sp.Start && m < sp.End {
			return true
		}
	}
	return false
}

// NextChange returns the first instant after t when Allows changes, and
// what it changes to; ok is false when it never does (every day all day,
// or no hours at all). Boundaries are wall-clock times in t's location,
// so a change at 18:00 stays at 18:00 across a daylight-saving switch; a
// boundary that does not exist that day (02:30 when clocks jump from
// 02:00 to 03:00) comes when the clock passes it (03:30 by the Go
// calendar's normalisation, which Allows agrees with), and one the clocks
// pass twice (when they go back) counts from its first time.
func (s Schedule) NextChange(t time.Time) (at time.Time, allows bool, ok bool) {
	now := s.Allows(t)
	loc := t.Location()
	y, mo, d := t.Date()
	for day := 0; day <= 8; day++ {
		var marks []time.Time
		date := time.Date(y, mo, d+day, 0, 0, 0, 0, loc)
		for _, sp := range s.Days[date.Weekday()] {
			for _, m := range []int{sp.Start, sp.End} {
				b := time.Date(y, mo, d+day, m/60, m%60, 0, 0, loc)
				marks = append(marks, b)
				// A wall time the clocks pass twice (when they go back)
				// is a boundary the first time too.
				for _, back := range []time.Duration{time.Hour, 30 * time.Minute} {
					if e := b.Add(-back); e.Hour() == b.Hour() && e.Minute() == b.Minute() {
						marks = append(marks, e)
					}
				}
			}
		}
		slices.SortFunc(marks, func(a, b time.Time) int { return a.Compare(b) })
		for _, b := range marks {
			if b.After(t) && s.Allows(b) != now {
				return b, !now, true
			}
		}
	}
	return time.Time{}, false, false
}

// LastChange returns the latest instant at or before t when Allows took
// the value it has at t ("outside your work hours since 23:00"); ok is
// false when it has not changed in the past week.
func (s Schedule) LastChange(t time.Time) (at time.Time, ok bool) {
	now := s.Allows(t)
	loc := t.Location()
	y, mo, d := t.Date()
	for day := 0; day >= -8; day-- {
		var marks []time.Time
		date := time.Date(y, mo, d+day, 0, 0, 0, 0, loc)
		for _, sp := range s.Days[date.Weekday()] {
			for _, m := range []int{sp.Start, sp.End} {
				marks = append(marks, time.Date(y, mo, d+day, m/60, m%60, 0, 0, loc))
			}
		}
		slices.SortFunc(marks, func(a, b time.Time) int { return b.Compare(a) })
		for _, b := range marks {
			if !b.After(t) && s.Allows(b) == now && s.Allows(b.Add(-time.Minute)) != now {
				return b, true
			}
		}
	}
	return time.Time{}, false
}
