package hosted_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"image/png"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/minisgg/studio-worker/engine"
	"github.com/minisgg/studio-worker/engine/gguf"
	"github.com/minisgg/studio-worker/engine/host"
	"github.com/minisgg/studio-worker/engine/host/hosted"
	"github.com/minisgg/studio-worker/engine/sd"
)

// sdClient starts a real stable-diffusion.cpp child on 1 thread.
func sdClient(t *testing.T) *host.Client {
	t.Helper()
	if os.Getenv(sd.EnvLib) == "" {
		t.Skip("needs " + sd.LibFile() + " (stable-diffusion.cpp " + sd.PinnedVersion + "): run `make runtime`, or set " + sd.EnvLib)
	}
	c := hosted.Client(hosted.SD, hosted.Options{Exe: os.Args[0], Threads: 1, Log: slog.New(slog.DiscardHandler), KeepAlive: -1})
	t.Cleanup(func() { c.Close() })
	if err := c.LoadError(); err != nil {
		t.Fatalf("stable-diffusion.cpp child: %v", err)
	}
	return c
}

func imageJob(id, model string) engine.Job {
	seed := uint64(7)
	return engine.Job{ID: id, Model: "tiny-sdxs",
		Task:   engine.Task{Kind: engine.KindImage, Image: &engine.ImageParams{Prompt: "a lighthouse", Width: 64, Height: 64, Steps: 1, Seed: &seed, Ext: "png"}},
		Source: engine.ModelSource{Engine: engine.EngineSDCpp},
		Files:  map[engine.FileRole]string{engine.RoleModel: model}}
}

// TestImpossibleTensorCountCrashesOnlyTheChild gives stable-diffusion.cpp
// a GGUF whose header claims more tensors than the file holds, which
// throws an uncaught C++ exception in the library. engine/sd now checks a
// file's structure in Go first and refuses it (not retryable); before
// that check it was a retryable crash of the child alone, in its words.
// Either way the next image job makes a real image. TestSDChildKilledMidJob
// keeps the crash path covered.
func TestImpossibleTensorCountCrashesOnlyTheChild(t *testing.T) {
	c := sdClient(t)
	good, err := gguf.EnsureSDXS(gguf.TinySDXS())
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "impossible.gguf")
	copyFile(t, good, bad)
	f, err := os.OpenFile(bad, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	// magic, version, then the tensor count: far more than the file holds.
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], 1<<40)
	if _, err := f.WriteAt(n[:], 8); err != nil {
		t.Fatal(err)
	}
	f.Close()

	_, err = c.Run(context.Background(), imageJob("bad", bad), nil)
	var ce *engine.CrashError
	var je *engine.JobError
	switch {
	case errors.As(err, &ce):
		if !engine.IsRetryable(err) || !strings.HasPrefix(err.Error(), "the image engine crashed while loading model tiny-sdxs") {
			t.Errorf("crash %q", err)
		}
		t.Logf("as expected: %v", err)
	case errors.As(err, &je):
		t.Logf("refused before the library read it: %v", err) // a check in Go got there first
	default:
		t.Fatalf("want a crash (or a refusal), got %#v", err)
	}
	res, err := c.Run(context.Background(), imageJob("good", good), nil)
	if err != nil {
		t.Fatalf("the next image job: %v", err)
	}
	img, err := png.Decode(bytes.NewReader(res.Bytes))
	if err != nil || img.Bounds().Dx() != 64 {
		t.Fatalf("not a 64x64 PNG: %v", err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestSDChildKilledMidJob kills the stable-diffusion.cpp child with
// SIGKILL as it reports progress on an image job: the job fails as a
// retryable crash, and the next image job runs in a fresh child.
func TestSDChildKilledMidJob(t *testing.T) {
	c := sdClient(t)
	model, err := gguf.EnsureSDXS(gguf.TinySDXS())
	if err != nil {
		t.Fatal(err)
	}
	pid, killed := c.PID(), false
	_, err = c.Run(context.Background(), imageJob("killed", model), func(engine.Progress) {
		if !killed {
			killed = true
			if p, err := os.FindProcess(pid); err == nil {
				p.Kill()
			}
		}
	})
	var ce *engine.CrashError
	if !errors.As(err, &ce) || !engine.IsRetryable(err) || !strings.HasPrefix(err.Error(), "the image engine crashed while") || ce.Exit != "signal: killed" {
		t.Fatalf("want a retryable crash of the image engine, got %#v", err)
	}
	res, err := c.Run(context.Background(), imageJob("next", model), nil)
	if err != nil || len(res.Bytes) == 0 || c.PID() == pid {
		t.Fatalf("the next image job: %v (pid %d then %d)", err, pid, c.PID())
	}
}
