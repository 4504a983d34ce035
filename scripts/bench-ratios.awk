# Passes `go test -bench` output through and adds, for every benchmark that
# reports a "ratio" metric, one line `ratio <name> <value>` (the benchmark's
# name without "Benchmark" and the -N suffix). Benchmarks that print their
# own `ratio ...` lines (engine/llama) come through as they are.
{ print }
/^Benchmark/ {
	for (i = 3; i < NF; i++) {
		if ($(i + 1) == "ratio") {
			name = $1
			sub(/^Benchmark/, "", name)
			sub(/-[0-9]+$/, "", name)
			printf "ratio %s %s\n", name, $i
		}
	}
}
