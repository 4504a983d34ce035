package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/minisgg/studio-worker/studio"
)

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = cli(args, &out, &errb)
	return code, out.String(), errb.String()
}

// oneLine checks the rule for every refusal: exactly one line, naming the
// problem.
func oneLine(t *testing.T, stderr, mustContain string) {
	t.Helper()
	if strings.Count(stderr, "\n") != 1 || !strings.HasSuffix(stderr, "\n") {
		t.Errorf("stderr should be exactly one line, got %q", stderr)
	}
	if !strings.Contains(stderr, mustContain) {
		t.Errorf("stderr %q should mention %q", stderr, mustContain)
	}
}

func TestCLIVersion(t *testing.T) {
	code, out, _ := runCLI(t, "version")
	if code != 0 || out != "studio-worker "+studio.Version+"\n" {
		t.Errorf("version: %d %q", code, out)
	}
}

func TestCLIHelp(t *testing.T) {
	code, out, _ := runCLI(t, "help")
	if code != 0 || !strings.Contains(out, "studio-worker run [--studio URL] [--config DIR]") {
		t.Errorf("help: %d %q", code, out)
	}
}

func TestCLIRefusals(t *testing.T) {
	tmp := t.TempDir()
	file := filepath.Join(tmp, "a-file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(tmp, "cfg")
	cases := []struct {
		args    []string
		code    int
		mention string
	}{
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"run", "--bogus"}, 2, "flag provided but not defined: -bogus"},
		{[]string{"run", "--config", cfg, "extra"}, 2, `unexpected argument "extra"`},
		{[]string{"run", "--config", file}, 1, "it is a file, not a folder"},
		{[]string{"run", "--config", cfg, "--studio", "ftp://studio.example"}, 1, "must start with https://"},
		{[]string{"run", "--config", cfg, "--studio", "http://"}, 1, "has no host name"},
		{[]string{"devstudio", "--auto-approve=maybe"}, 2, "invalid boolean value"},
		{[]string{"demo", "--jobs", "0"}, 2, "--jobs must be at least 1"},
		{[]string{"demo", "--dir", file}, 1, "cannot use the folder"},
		{[]string{"devstudio", "--data", file}, 1, "cannot use the data folder"},
		{[]string{"devstudio", "--data", tmp, "--models", filepath.Join(tmp, "missing")}, 1, "does not exist or is not a folder"},
		{[]string{"devstudio", "--data", tmp, "--addr", "not-an-address"}, 1, "cannot listen on not-an-address"},
	}
	for _, tc := range cases {
		code, out, errs := runCLI(t, tc.args...)
		if code != tc.code {
			t.Errorf("%v: exit %d, want %d (stderr %q)", tc.args, code, tc.code, errs)
		}
		if out != "" {
			t.Errorf("%v: nothing belongs on stdout, got %q", tc.args, out)
		}
		oneLine(t, errs, tc.mention)
	}
}

func TestCLIRunRefusesUnusableSavedSettings(t *testing.T) {
	cfg := t.TempDir()
	blocker := filepath.Join(cfg, "not-a-folder")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	toml := "studio_url = \"http://127.0.0.1:1/\"\nvram_budget_gb = 8.0\nmodels_dir = \"" + blocker + "\"\n"
	if err := os.WriteFile(filepath.Join(cfg, "settings.toml"), []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errs := runCLI(t, "run", "--config", cfg)
	if code != 1 {
		t.Errorf("exit %d", code)
	}
	oneLine(t, errs, "models folder")
}

// TestCLIDemo runs the real thing: a dev studio serving a generated GGUF,
// this worker downloading it and llama.cpp answering two chat jobs.
func TestCLIDemo(t *testing.T) {
	lib := os.Getenv("STUDIO_WORKER_LLAMA_LIB")
	if lib == "" {
		lib = filepath.Join("runtime", "llama", "linux-x64")
	}
	if _, err := os.Stat(filepath.Join(lib, "libllama.so")); err != nil {
		t.Skip("needs the llama.cpp runtime (make runtime, or STUDIO_WORKER_LLAMA_LIB): " + err.Error())
	}
	abs, err := filepath.Abs(lib)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("STUDIO_WORKER_LLAMA_LIB", abs)
	code, out, errs := runCLI(t, "demo", "--jobs", "2", "--image-jobs", "1", "--dir", t.TempDir())
	if code != 0 {
		t.Fatalf("demo exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	// With the stable-diffusion.cpp runtime (make runtime) one image job
	// runs after the chat jobs and the demo says where the image went.
	want := "demo: 2 of 2 jobs done"
	if sdLib := os.Getenv("STUDIO_WORKER_SD_LIB"); sdLib != "" {
		if _, err := os.Stat(sdLib); err == nil {
			want = "demo: 3 of 3 jobs done"
			if !strings.Contains(out, "image job 1/1 ") || !strings.Contains(out, ".webp") && !strings.Contains(out, ".png (") {
				t.Errorf("no stored image reported:\n%s", out)
			}
		}
	}
	if last := lines[len(lines)-1]; last != want {
		t.Errorf("last line %q, want %q\n%s", last, want, out)
	}
	if strings.Count(out, "tokens/s)") != 2 {
		t.Errorf("each job should print its completion and speed:\n%s", out)
	}
}

// `update --check` with a feed server that refuses the connection: one
// line in a donor's words (release.Explain), Go's error only with
// --verbose.
func TestCLIUpdateCheckUnreachableFeed(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	feed := "http://" + l.Addr().String() + "/feed.json"
	l.Close() // nothing listens there now
	dir := t.TempDir()
	code, _, stderr := runCLI(t, "update", "--check", "--feed", feed, "--config", dir)
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	oneLine(t, stderr, "studio-worker update: Could not check for a new version: 127.0.0.1 refused the connection. Nothing was installed.")
	if strings.Contains(stderr, "dial tcp") {
		t.Errorf("Go's error in the donor's line: %q", stderr)
	}
	code, _, stderr = runCLI(t, "update", "--check", "--verbose", "--feed", feed, "--config", dir)
	if code != 1 || !strings.Contains(stderr, "refused the connection") || !strings.Contains(stderr, "details: ") || !strings.Contains(stderr, "connection refused") {
		t.Errorf("--verbose: exit %d, %q", code, stderr)
	}
}
