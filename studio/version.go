package studio

// Version is the worker's semver, sent as agentVersion and in the
// User-Agent. Release builds set it with
// -ldflags "-X github.com/minisgg/studio-worker/studio.Version=…";
// a test keeps the default equal to FyneApp.toml's Version.
var Version = "0.1.0"

// UserAgent is the User-Agent of every studio HTTP call (§2.2).
func UserAgent() string { return "studio-worker/" + Version }
