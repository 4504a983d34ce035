package controls

import (
	"strings"
	"testing"
	"time"
)

func TestParseDay(t *testing.T) {
	cases := []struct {
		in, today, tomorrow, err string
	}{
		{"", "", "", ""},
		{"all day", "00:00-24:00", "", ""},
		{"09:00-17:00", "09:00-17:00", "", ""},
		{" 13:00-17:30 , 9:00-12:00 ", "09:00-12:00, 13:00-17:30", "", ""},
		{"09:00-12:00,11:00-14:00,14:00-15:00", "09:00-15:00", "", ""},
		{"22:00-06:00", "22:00-24:00", "00:00-06:00", ""},
		{"20:00-00:00", "20:00-24:00", "", ""},
		{"00:00-24:00", "00:00-24:00", "", ""},
		{"9-17", "", "", `"9" is not a time such as 09:00`},
		{"09:00", "", "", `"09:00" is not a span of hours`},
		{"09:00-25:00", "", "", `"25:00" is not a time between 00:00 and 24:00`},
		{"09:60-10:00", "", "", "is not a time between"},
		{"24:00-02:00", "", "", "starts at 24:00"},
		{"10:00-10:00", "", "", "starts and ends at the same time"},
		{"ab:cd-10:00", "", "", "is not a time between"},
		{"09:5-10:00", "", "", "is not a time between"},
	}
	for _, c := range cases {
		today, tomorrow, err := ParseDay(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ParseDay(%q) error %v, want %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || FormatSpans(today) != c.today || FormatSpans(tomorrow) != c.tomorrow {
			t.Errorf("ParseDay(%q) = %q, %q, %v; want %q, %q", c.in, FormatSpans(today), FormatSpans(tomorrow), err, c.today, c.tomorrow)
		}
	}
}

func TestParseWeekNamesTheDayAndWraps(t *testing.T) {
	var w [7]string
	w[time.Tuesday] = "9:00-x"
	if _, err := ParseWeek(w); err == nil || !strings.HasPrefix(err.Error(), "Tuesday: ") {
		t.Fatalf("error %v", err)
	}
	w = [7]string{}
	w[time.Saturday] = "23:00-02:00"
	w[time.Sunday] = "01:00-03:00"
	s, err := ParseWeek(w)
	if err != nil {
		t.Fatal(err)
	}
	if got := FormatSpans(s.Days[time.Sunday]); got != "00:00-03:00" {
		t.Fatalf("Sunday %q", got)
	}
	if got := FormatSpans(s.Days[time.Saturday]); got != "23:00-24:00" {
		t.Fatalf("Saturday %q", got)
	}
}

func mustWeek(t *testing.T, w [7]string) Schedule {
	t.Helper()
	s, err := ParseWeek(w)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestScheduleEdgesAndMidnight(t *testing.T) {
	var w [7]string
	w[time.Wednesday] = "18:00-23:00"
	w[time.Thursday] = "22:00-02:00" // into Friday
	s := mustWeek(t, w)
	utc := func(d, h, m int) time.Time { return time.Date(2026, 3, d, h, m, 0, 0, time.UTC) } // March 4 is a Wednesday
	checks := []struct {
		at     time.Time
		allows bool
		next   time.Time
		to     bool
	}{
		{utc(4, 17, 59), false, utc(4, 18, 0), true},
		{utc(4, 18, 0), true, utc(4, 23, 0), false},
		{utc(4, 22, 59), true, utc(4, 23, 0), false},
		{utc(4, 23, 0), false, utc(5, 22, 0), true},
		{utc(5, 23, 59), true, utc(6, 2, 0), false}, // runs past midnight
		{utc(6, 0, 0), true, utc(6, 2, 0), false},
		{utc(6, 2, 0), false, utc(11, 18, 0), true}, // next Wednesday
	}
	for _, c := range checks {
		if got := s.Allows(c.at); got != c.allows {
			t.Errorf("Allows(%s) = %v", c.at, got)
		}
		at, to, ok := s.NextChange(c.at)
		if !ok || !at.Equal(c.next) || to != c.to {
			t.Errorf("NextChange(%s) = %s %v %v, want %s %v", c.at, at, to, ok, c.next, c.to)
		}
	}
	// Every day all day, and no hours at all: no change ever.
	var all [7]string
	for d := range all {
		all[d] = "all day"
	}
	if _, _, ok := mustWeek(t, all).NextChange(utc(4, 12, 0)); ok {
		t.Error("all week: a change")
	}
	if _, _, ok := mustWeek(t, [7]string{}).NextChange(utc(4, 12, 0)); ok {
		t.Error("no hours: a change")
	}
	// Day ending at 24:00 followed by a day starting at 00:00: no change at midnight.
	var joined [7]string
	joined[time.Wednesday] = "20:00-24:00"
	joined[time.Thursday] = "00:00-01:00"
	if at, _, _ := mustWeek(t, joined).NextChange(utc(4, 21, 0)); !at.Equal(utc(5, 1, 0)) {
		t.Errorf("joined days change at %s", at)
	}
}

func TestScheduleAcrossDST(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	var w [7]string
	for d := range w {
		w[d] = "01:00-02:30, 18:00-23:00"
	}
	s := mustWeek(t, w)
	// 29 March 2026, 02:00 CET jumps to 03:00 CEST: 02:30 does not exist
	// that night, so the span ends when the clock reads 03:00.
	before := time.Date(2026, 3, 29, 1, 59, 0, 0, berlin)
	at, to, ok := s.NextChange(before)
	if !ok || to || at.Hour() != 3 || at.Minute() != 30 || at.Sub(before) != 31*time.Minute {
		t.Fatalf("spring forward: %s %v (after %s)", at, to, at.Sub(before))
	}
	if s.Allows(before.Add(time.Minute)) { // 03:00 CEST
		t.Fatal("03:00 CEST counted as inside 01:00-02:30")
	}
	// From the afternoon, the evening start is 18:00 local, which is
	// 16:00 UTC in summer time, not 17:00.
	noon := time.Date(2026, 3, 29, 12, 0, 0, 0, berlin)
	at, to, _ = s.NextChange(noon)
	if !to || at.UTC().Hour() != 16 || at.Hour() != 18 {
		t.Fatalf("after the switch: %s (%s UTC)", at, at.UTC())
	}
	// 25 October 2026, 03:00 CEST goes back to 02:00 CET: the 01:00-02:30
	// span ends once, at the first 02:30.
	night := time.Date(2026, 10, 25, 1, 30, 0, 0, berlin)
	at, to, _ = s.NextChange(night)
	if to || at.Hour() != 2 || at.Minute() != 30 || at.Sub(night) != time.Hour {
		t.Fatalf("fall back: %s after %s", at, at.Sub(night))
	}
	// A whole day across the switch: 18:00 the day before to 18:00 on
	// the day is 25 hours of real time, and NextChange lands on 18:00.
	eve := time.Date(2026, 10, 24, 23, 0, 0, 0, berlin)
	at, _, _ = s.NextChange(eve)
	if at.Hour() != 1 || at.Day() != 25 {
		t.Fatalf("after 23:00 on the 24th: %s", at)
	}
}

func TestGateScheduleHold(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	var w [7]string
	for d := range w {
		w[d] = "18:00-23:00"
	}
	s := mustWeek(t, w)
	g := NewGate(Config{Schedule: &s}, berlin, nil, nil)
	noon := time.Date(2026, 6, 1, 10, 0, 0, 0, time.UTC)     // 12:00 in Berlin
	endedAt := time.Date(2026, 5, 31, 21, 0, 0, 0, time.UTC) // 23:00 the night before
	// Watched while the hours ran out: the hold dates from their end.
	if d := g.Decide(endedAt.Add(-time.Minute)); !d.MayWork {
		t.Fatalf("22:59: %+v", d)
	}
	d := g.Decide(noon)
	if d.MayWork || d.Holds[0].Control != ControlSchedule || !d.NextAllows || d.NextChange.In(berlin).Hour() != 18 ||
		d.Holds[0].Until != d.NextChange || d.OfferReason() != ReasonSchedule || !d.Holds[0].Since.Equal(endedAt) {
		t.Fatalf("noon: %+v", d)
	}
	later := noon.Add(time.Hour)
	if d := g.Decide(later); !d.Holds[0].Since.Equal(endedAt) {
		t.Fatalf("since moved: %+v", d.Holds[0])
	}
	eve := time.Date(2026, 6, 1, 16, 0, 0, 0, time.UTC) // 18:00 Berlin
	d = g.Decide(eve)
	if !d.MayWork || d.NextAllows || d.NextChange.In(berlin).Hour() != 23 {
		t.Fatalf("18:00: %+v", d)
	}
	g.SetConfig(Config{})
	if d := g.Decide(noon); !d.MayWork || !d.NextChange.IsZero() {
		t.Fatalf("schedule off: %+v", d)
	}
	// First looked at outside the hours (the app just started, or the
	// hours were just turned on): held since then, not since 23:00, when
	// nothing held it.
	g.SetConfig(Config{Schedule: &s})
	if d := g.Decide(noon); d.MayWork || !d.Holds[0].Since.Equal(noon) {
		t.Fatalf("turned on at noon: %+v", d)
	}
	if d := NewGate(Config{Schedule: &s}, berlin, nil, nil).Decide(noon); d.MayWork || !d.Holds[0].Since.Equal(noon) {
		t.Fatalf("started at noon: %+v", d)
	}
}

func TestScheduleLastChange(t *testing.T) {
	var w [7]string
	w[time.Wednesday] = "18:00-23:00"
	s := mustWeek(t, w)
	utc := func(d, h, m int) time.Time { return time.Date(2026, 3, d, h, m, 0, 0, time.UTC) }
	for _, c := range []struct{ at, want time.Time }{
		{utc(4, 18, 0), utc(4, 18, 0)},
		{utc(4, 22, 59), utc(4, 18, 0)},
		{utc(4, 23, 0), utc(4, 23, 0)},
		{utc(6, 12, 0), utc(4, 23, 0)},
		{utc(4, 17, 0), utc(25, 23, 0).AddDate(0, -1, 0)}, // the Wednesday before: 25 February
	} {
		if got, ok := s.LastChange(c.at); !ok || !got.Equal(c.want) {
			t.Errorf("LastChange(%s) = %s %v, want %s", c.at, got, ok, c.want)
		}
	}
	if _, ok := mustWeek(t, [7]string{}).LastChange(utc(4, 12, 0)); ok {
		t.Error("no hours: a change")
	}
}
