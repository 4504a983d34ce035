//go:build !windows && !darwin

package presence

func platformProbes(o Options) []Probe { return unixProbes(o) }
