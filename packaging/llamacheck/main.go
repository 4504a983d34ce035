// Command llamacheck loads a llama.cpp runtime folder the way the app does
// (yzma's Load and Init) and lists the backend devices ggml registered.
// Packaging uses it to prove that an installed folder loads, and that a GPU
// backend shipped as an add-on (the Vulkan .deb) registers beside the CPU
// build. It prints facts only; it never runs a model.
//
//	llamacheck [-want-device PREFIX] <runtime folder>
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	yz "github.com/hybridgroup/yzma/pkg/llama"
)

func main() {
	want := flag.String("want-device", "", "fail unless a device whose name starts with this was registered (e.g. Vulkan)")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: llamacheck [-want-device PREFIX] <runtime folder>")
		os.Exit(2)
	}
	dir := flag.Arg(0)
	if err := yz.Load(dir); err != nil {
		fmt.Fprintf(os.Stderr, "llamacheck: cannot load the llama.cpp libraries from %s: %v\n", dir, err)
		os.Exit(1)
	}
	yz.Init()
	n := yz.GGMLBackendDeviceCount()
	found := false
	for i := uint64(0); i < n; i++ {
		d := yz.GGMLBackendDeviceGet(i)
		name := yz.GGMLBackendDeviceName(d)
		free, total := yz.GGMLBackendDeviceMemory(d)
		fmt.Printf("device %d: %s (%s), %d MiB free of %d MiB\n", i, name, yz.GGMLBackendDeviceDescription(d), free>>20, total>>20)
		if *want != "" && strings.HasPrefix(name, *want) {
			found = true
		}
	}
	fmt.Printf("gpu offload: %v\n", yz.SupportsGpuOffload())
	if n == 0 {
		fmt.Fprintln(os.Stderr, "llamacheck: no backend device registered")
		os.Exit(1)
	}
	if *want != "" && !found {
		fmt.Fprintf(os.Stderr, "llamacheck: no %s device registered\n", *want)
		os.Exit(1)
	}
}
