package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minisgg/studio-worker/app/api"
	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/settings"
	"github.com/minisgg/studio-worker/studio"
)

type noGPU struct{}

func (noGPU) Probe(context.Context) engine.VRAMInfo { return engine.VRAMInfo{} }

// runningApp is a worker with its local API, as the app runs it, writing
// its address file in a config folder.
func runningApp(t *testing.T) (cfgDir string, resets *int) {
	t.Helper()
	cfgDir = t.TempDir()
	log := slog.New(slog.DiscardHandler)
	runner := engine.NewRunner(engine.RunnerConfig{Store: engine.NewStore(t.TempDir(), engine.StoreOptions{Log: log}),
		BudgetGB: func() float64 { return 8 }, Probe: noGPU{}, Log: log})
	s := settings.Default()
	w := studio.NewWorker(studio.WorkerConfig{Settings: func() settings.Settings { return s }, Runner: runner,
		Creds: settings.NewFileCredentialStore(cfgDir), Log: log})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = w.Shutdown(ctx)
	})
	resets = new(int)
	srv, err := api.Start(api.Options{Worker: w, Models: runner, Log: log, ConfigDir: cfgDir,
		StartOver: func() error { *resets++; return nil }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return cfgDir, resets
}

func TestCLIControlsTheRunningApp(t *testing.T) {
	cfg, resets := runningApp(t)
	cases := []struct {
		args    []string
		mention string
	}{
		{[]string{"status"}, "starting; 0 studio jobs done, 0 failed"},
		{[]string{"pause"}, "paused: no more studio jobs"},
		{[]string{"status"}, "paused"},
		{[]string{"resume"}, "resumed: taking studio jobs again"},
		{[]string{"pause", "--now"}, "paused now"},
		{[]string{"resume"}, "resumed"},
		{[]string{"register", "--reset"}, "the running app forgot"},
	}
	for _, tc := range cases {
		code, out, errs := runCLI(t, append(tc.args, "--config", cfg)...)
		if code != 0 || errs != "" {
			t.Fatalf("%v: exit %d, stderr %q", tc.args, code, errs)
		}
		if strings.Count(out, "\n") != 1 || !strings.Contains(out, tc.mention) {
			t.Errorf("%v: want one line with %q, got %q", tc.args, tc.mention, out)
		}
	}
	if *resets != 1 {
		t.Errorf("register --reset reached the app %d times", *resets)
	}
}

func TestCLIControlWithoutApp(t *testing.T) {
	empty := t.TempDir()
	// A file left by an app that is gone: nothing answers at its address.
	stale := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	b, _ := json.Marshal(api.Info{URL: "http://" + addr, Token: "x"})
	if err := os.WriteFile(filepath.Join(stale, api.InfoFileName), b, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range [][]string{{"status"}, {"pause"}, {"pause", "--now"}, {"resume"}} {
		code, out, errs := runCLI(t, append(cmd, "--config", empty)...)
		if code != 1 || out != "" {
			t.Errorf("%v: exit %d, stdout %q", cmd, code, out)
		}
		oneLine(t, errs, "Studio Worker is not running")
		code, _, errs = runCLI(t, append(cmd, "--config", stale)...)
		if code != 1 {
			t.Errorf("%v stale: exit %d", cmd, code)
		}
		oneLine(t, errs, "nothing answers at http://"+addr)
	}
	code, _, errs := runCLI(t, "pause", "--soon")
	if code != 2 {
		t.Errorf("pause --soon: exit %d", code)
	}
	oneLine(t, errs, "flag provided but not defined: -soon")
	code, _, errs = runCLI(t, "status", "--now")
	if code != 2 {
		t.Errorf("status --now: exit %d", code)
	}
	oneLine(t, errs, "flag provided but not defined: -now")
}
