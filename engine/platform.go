package engine

import "runtime"

// PlatformVariant names this platform as the native-runtime folders and
// packaging/runtimes.json do: "<os>-<arch>" with the names node-llama-cpp
// gave its builds ("linux-x64", "win-x64", "mac-arm64"); the llama.cpp
// runtime lives in runtime/llama/<variant>/ and stable-diffusion.cpp's in
// runtime/sd/<variant>/ (runtimes.json entry "sd-<variant>").
func PlatformVariant() string {
	arch := map[string]string{"amd64": "x64", "arm64": "arm64"}[runtime.GOARCH]
	if arch == "" {
		arch = runtime.GOARCH
	}
	osName := map[string]string{"windows": "win", "darwin": "mac"}[runtime.GOOS]
	if osName == "" {
		osName = runtime.GOOS
	}
	return osName + "-" + arch
}
