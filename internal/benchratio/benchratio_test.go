package benchratio

import (
	"strings"
	"testing"
)

func TestRecordPrintMedian(t *testing.T) {
	Record("b_second", 2)
	Record("a_first", 0.5)
	Record("b_second", 1.25) // replaces
	var out strings.Builder
	Fprint(&out)
	if got, want := out.String(), "ratio a_first 0.500\nratio b_second 1.250\n"; got != want {
		t.Errorf("printed %q, want %q", got, want)
	}
	v := []float64{3, 1, 2, 5}
	if m := Median(v); m != 3 {
		t.Errorf("median %v", m)
	}
	if v[0] != 3 || v[1] != 1 {
		t.Errorf("Median sorted its argument: %v", v)
	}
}
