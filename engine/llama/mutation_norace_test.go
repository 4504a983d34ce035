//go:build !race

package llama

// raceBuild is true in a -race test binary, whose children are slow.
const raceBuild = false
