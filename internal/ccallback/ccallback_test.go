package ccallback

import (
	"strings"
	"testing"
	"unsafe"
)

func TestCheck(t *testing.T) {
	cases := []struct {
		name string
		fn   any
		// bad lists the platforms that must refuse fn, with a word of the reason.
		bad map[string]string
	}{
		{"portable log callback", func(int32, *byte, uintptr) uintptr { return 0 }, nil},
		{"no arguments", func() uintptr { return 0 }, nil},
		// The callback that made every Windows donor's app panic as it
		// loaded llama.cpp (issue 15): no result.
		{"void log callback", func(int32, *byte, unsafe.Pointer) {}, map[string]string{"windows": "one uintptr-sized"}},
		{"int32 result", func(int32) int32 { return 0 }, map[string]string{"windows": "one uintptr-sized"}},
		{"float argument", func(int32, int32, float32, uintptr) {}, map[string]string{"windows": "float"}},
		{"float result", func() float64 { return 0 }, map[string]string{"windows": "non-float", "linux": "float64", "darwin": "float64"}},
		{"two results", func() (uintptr, uintptr) { return 0, 0 }, map[string]string{"windows": "exactly one", "linux": "at most one", "darwin": "at most one"}},
		{"string argument", func(string) uintptr { return 0 }, map[string]string{"windows": "string", "linux": "string", "darwin": "string"}},
		{"seven integers", func(a, b, c, d, e, f, g uintptr) uintptr { return 0 }, map[string]string{"windows": "more than 4", "linux": "registers"}},
		{"not a function", 3, map[string]string{"windows": "not a function", "linux": "not a function", "darwin": "not a function"}},
	}
	for _, c := range cases {
		for _, goos := range Platforms {
			err := Check(c.fn, goos)
			want, bad := c.bad[goos]
			switch {
			case !bad && err != nil:
				t.Errorf("%s on %s: refused: %v", c.name, goos, err)
			case bad && err == nil:
				t.Errorf("%s on %s: accepted, want a refusal naming %q", c.name, goos, want)
			case bad && !strings.Contains(err.Error(), want):
				t.Errorf("%s on %s: %v, want it to name %q", c.name, goos, err, want)
			}
		}
	}
	if err := Check(func() uintptr { return 0 }, "plan9"); err == nil {
		t.Error("unknown platform accepted")
	}
}
