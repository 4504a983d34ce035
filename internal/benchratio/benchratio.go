// Package benchratio collects the ratios that benchmarks measure against a
// baseline of the same run and prints them as `ratio NAME VALUE` lines
// after the benchmarks (from TestMain), which `make bench` gathers through
// scripts/bench-ratios.awk. It is safe for concurrent use.
package benchratio

import (
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
)

var ratios struct {
	sync.Mutex
	m map[string]float64
}

// Record keeps v as the ratio called name (a later value replaces it).
func Record(name string, v float64) {
	ratios.Lock()
	defer ratios.Unlock()
	if ratios.m == nil {
		ratios.m = map[string]float64{}
	}
	ratios.m[name] = v
}

// Print writes every recorded ratio to standard output, one
// `ratio NAME VALUE` line each (three decimals), sorted by name.
func Print() { Fprint(os.Stdout) }

// Fprint is Print to w.
func Fprint(w io.Writer) {
	ratios.Lock()
	defer ratios.Unlock()
	names := make([]string, 0, len(ratios.m))
	for n := range ratios.m {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		fmt.Fprintf(w, "ratio %s %.3f\n", n, ratios.m[n])
	}
}

// Median is the middle value of v (the upper middle for an even count),
// leaving v as it is. v must not be empty.
func Median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}
