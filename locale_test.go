package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/minisgg/studio-worker/engine/host/hosted"
)

// reexecEnv makes the test binary act as the program: the child runs cli()
// from TestMain so that package initialisation happens under the child's
// environment, as it does for the real binary.
const reexecEnv = "STUDIO_WORKER_TEST_REEXEC"

func TestMain(m *testing.M) {
	hosted.RunChildIfAsked() // `engine-host` children of the stack under test
	if args := os.Getenv(reexecEnv); args != "" {
		os.Exit(cli(strings.Fields(args), os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// TestNoLocaleNoise runs `version` under the C.UTF-8 locale of containers
// and checks that Fyne's start-up complaint about it is gone, which also
// proves internal/clocale still runs before Fyne's lang package.
func TestNoLocaleNoise(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	var env []string
	for _, kv := range os.Environ() {
		switch strings.SplitN(kv, "=", 2)[0] {
		case "LANG", "LC_ALL", "LC_MESSAGES", "LANGUAGE":
			continue
		}
		env = append(env, kv)
	}
	cmd.Env = append(env, "LANG=C.UTF-8", reexecEnv+"=version")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("version under LANG=C.UTF-8: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "locale") || strings.Count(string(out), "\n") != 1 {
		t.Fatalf("version under LANG=C.UTF-8 should print one line, got:\n%s", out)
	}
}
