package engine

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minisgg/studio-worker/engine/gguf"
)

const signInPage = "<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body><form>Sign in to continue</form></body></html>\n"

func TestSniffFormat(t *testing.T) {
	st := safetensorsFile(t, `{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, 8)
	for _, tc := range []struct {
		head []byte
		want FileFormat
	}{
		{[]byte("GGUF\x03\x00\x00\x00"), FormatGGUF},
		{[]byte("\x89PNG\r\n\x1a\n\x00\x00"), FormatPNG},
		{[]byte{0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10, 'J', 'F', 'I', 'F'}, FormatJPEG},
		{[]byte("RIFF\x10\x00\x00\x00WEBPVP8 "), FormatWebP},
		{[]byte("RIFF\x10\x00\x00\x00WAVEfmt "), ""},
		{[]byte("PK\x03\x04\x14\x00"), FormatTorchZip},
		{st, FormatSafetensors},
		{[]byte(signInPage), ""},
		{nil, ""},
	} {
		if got := SniffFormat(tc.head); got != tc.want {
			t.Errorf("SniffFormat(%q) = %q, want %q", tc.head[:min(len(tc.head), 12)], got, tc.want)
		}
	}
	for head, want := range map[string]string{
		signInPage:                       "web page",
		`{"error":"AccessDenied"}`:       "JSON",
		"<?xml version=\"1.0\"?><Error>": "XML",
		"Forbidden\n":                    "plain text",
		"":                               "empty",
		"\x00\x01\x02\xff":               "unknown",
	} {
		if got := DescribeContent([]byte(head)); !strings.Contains(got, want) {
			t.Errorf("DescribeContent(%q) = %q, want it to say %q", head, got, want)
		}
	}
}

func TestSniffImage(t *testing.T) {
	if f, err := SniffImage([]byte("\x89PNG\r\n\x1a\n....")); err != nil || f != FormatPNG {
		t.Fatalf("PNG: %q %v", f, err)
	}
	if f, err := SniffImage([]byte("RIFF\x10\x00\x00\x00WEBPVP8 ")); err != nil || f != FormatWebP {
		t.Fatalf("WebP: %q %v", f, err)
	}
	_, err := SniffImage([]byte(signInPage))
	if err == nil || !strings.Contains(err.Error(), "web page") {
		t.Fatalf("an HTML page as an image: %v", err)
	}
	if _, err := SniffImage([]byte("GGUF\x03\x00\x00\x00")); err == nil {
		t.Fatal("a GGUF file passed as an image")
	}
}

// safetensorsFile builds a safetensors file: the header, then data bytes.
func safetensorsFile(t *testing.T, header string, data int) []byte {
	t.Helper()
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	b = append(b, header...)
	return append(b, make([]byte, data)...)
}

func TestCheckSafetensors(t *testing.T) {
	good := `{"__metadata__":{"format":"pt"},"a":{"dtype":"F16","shape":[2,3],"data_offsets":[0,12]},"b":{"dtype":"BF16","shape":[2],"data_offsets":[12,16]}}`
	if err := CheckSafetensors(bytes.NewReader(safetensorsFile(t, good, 16)), int64(len(safetensorsFile(t, good, 16)))); err != nil {
		t.Fatalf("a good file: %v", err)
	}
	for name, tc := range map[string]struct {
		header string
		data   int
		edit   func([]byte) []byte
	}{
		"header length past the end": {good, 16, func(b []byte) []byte { binary.LittleEndian.PutUint64(b, 1<<40); return b }},
		"header length 2^64-1":       {good, 16, func(b []byte) []byte { binary.LittleEndian.PutUint64(b, math.MaxUint64); return b }},
		"header not JSON":            {`{"a":`, 16, nil},
		"unknown dtype":              {`{"a":{"dtype":"Q9","shape":[2],"data_offsets":[0,2]}}`, 2, nil},
		"offsets past the data":      {`{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}`, 8, nil},
		"offsets reversed":           {`{"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}`, 8, nil},
		"shape and offsets disagree": {`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, 8, nil},
		"shape overflows":            {`{"a":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}}`, 8, nil},
		"overlapping tensors":        {`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, 12, nil},
		"no tensors":                 {`{"__metadata__":{}}`, 0, nil},
	} {
		b := safetensorsFile(t, tc.header, tc.data)
		if tc.edit != nil {
			b = tc.edit(b)
		}
		if err := CheckSafetensors(bytes.NewReader(b), int64(len(b))); err == nil {
			t.Errorf("%s: accepted", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

// serveBytes serves data as a file with ranges.
func serveBytes(t *testing.T, data []byte) string {
	t.Helper()
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "f", time.Time{}, bytes.NewReader(data))
	})
	return srv.URL
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestEnsureRefusesAWebPageAsAModel is issue 10 item 5: a URL that answers
// 200 with a sign-in page, with no sha256 in the offer, must not be stored;
// the job fails as not retryable, and the next offer with a good URL
// downloads the model.
func TestEnsureRefusesAWebPageAsAModel(t *testing.T) {
	st := newTestStore(t, StoreOptions{})
	page := serveBytes(t, []byte(signInPage))
	src := ModelSource{Engine: EngineLlamaCpp, Files: []ModelFile{{Role: RoleModel, URL: page + "/model.gguf?sig=s3cret", Filename: "model.gguf"}}}
	_, err := st.EnsureSource(context.Background(), "m", src, nil)
	var je *JobError
	if !errors.As(err, &je) || IsRetryable(err) || je.Field != "modelSource.files[0]" || !strings.Contains(err.Error(), "model.gguf: the model server sent a web page") {
		t.Fatalf("got %v (retryable %t), want a not-retryable JobError about a web page", err, IsRetryable(err))
	}
	dir, _ := st.ModelDir("m")
	final := filepath.Join(dir, "model.gguf")
	mustNotExist(t, final)
	mustNotExist(t, final+partSuffix)
	mustNotExist(t, final+verifiedSuffix)

	good := newBlob(50_000, 40)
	src.Files[0].URL = serveBytes(t, good.data) + "/model.gguf"
	paths, err := st.EnsureSource(context.Background(), "m", src, nil)
	if err != nil {
		t.Fatalf("the next offer with a good URL: %v", err)
	}
	if !bytes.Equal(readFile(t, paths[RoleModel]), good.data) {
		t.Fatal("the good file was not stored")
	}
}

// TestEnsureReplacesAWebPageVerifiedByAnOlderWorker: a cache written before
// the content check (an HTML page recorded as verified) is checked once,
// deleted and downloaded again.
func TestEnsureReplacesAWebPageVerifiedByAnOlderWorker(t *testing.T) {
	st := newTestStore(t, StoreOptions{})
	dir, _ := st.ModelDir("m")
	final := filepath.Join(dir, "model.gguf")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(final, []byte(signInPage), 0o644); err != nil {
		t.Fatal(err)
	}
	rec, err := recordFor(final, sha([]byte(signInPage)))
	if err != nil {
		t.Fatal(err)
	}
	rec.Checked = 0 // as the worker before the check wrote it
	if err := writeRecord(final, rec); err != nil {
		t.Fatal(err)
	}
	good := newBlob(50_000, 41)
	src := ModelSource{Engine: EngineLlamaCpp, Files: []ModelFile{{Role: RoleModel, URL: serveBytes(t, good.data) + "/model.gguf", Filename: "model.gguf"}}}
	if _, err := st.EnsureSource(context.Background(), "m", src, nil); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readFile(t, final), good.data) {
		t.Fatal("the stored web page was kept")
	}
	if rec, ok := readRecord(final); !ok || rec.Checked != contentCheckVersion {
		st.Sync()
		if rec, ok = readRecord(final); !ok || rec.Checked != contentCheckVersion {
			t.Fatalf("record %+v", rec)
		}
	}
}

// TestEnsureRefusesMalformedGGUFs serves mutations of the tiny model with
// their own (matching) sha256, as issue 10 item 11 did: each fails as not
// retryable naming the field, and nothing is left in the cache, so none can
// reach llama.cpp.
func TestEnsureRefusesMalformedGGUFs(t *testing.T) {
	var buf bytes.Buffer
	if err := gguf.Tiny().Write(&buf); err != nil {
		t.Fatal(err)
	}
	base := buf.Bytes()
	info, err := gguf.CheckLLM(bytes.NewReader(base), int64(len(base)))
	if err != nil {
		t.Fatal(err)
	}
	at := func(key string) int {
		kv, ok := info.Get(key)
		if !ok {
			t.Fatalf("no %s", key)
		}
		return int(kv.Offset)
	}
	st := newTestStore(t, StoreOptions{})
	for _, tc := range []struct {
		name, field string
		edit        func(b []byte)
	}{
		{"block_count 0x7FFFFFFF", "llama.block_count", func(b []byte) {
			binary.LittleEndian.PutUint32(b[at("llama.block_count"):], 0x7FFFFFFF)
		}},
		{"vocabulary id out of range", "tokenizer.ggml.eos_token_id", func(b []byte) {
			binary.LittleEndian.PutUint32(b[at("tokenizer.ggml.eos_token_id"):], 1<<20)
		}},
		{"tokens array length 2^62", "tokenizer.ggml.tokens", func(b []byte) {
			binary.LittleEndian.PutUint64(b[at("tokenizer.ggml.tokens")+4:], 1<<62)
		}},
		{"tensor count 2^63", "header.tensor_count", func(b []byte) { binary.LittleEndian.PutUint64(b[8:], 1<<63) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := append([]byte(nil), base...)
			tc.edit(b)
			src := ModelSource{Engine: EngineLlamaCpp, Files: []ModelFile{{Role: RoleModel, URL: serveBytes(t, b) + "/bad.gguf",
				Filename: "bad.gguf", SHA256: sha(b), ApproxBytes: uint64(len(b))}}}
			_, err := st.EnsureSource(context.Background(), "bad", src, nil)
			var je *JobError
			if !errors.As(err, &je) || IsRetryable(err) || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("got %v, want a not-retryable JobError naming %s", err, tc.field)
			}
			var ge *gguf.Error
			if !errors.As(err, &ge) {
				t.Fatalf("the gguf.Error is not in the chain: %v", err)
			}
			dir, _ := st.ModelDir("bad")
			mustNotExist(t, filepath.Join(dir, "bad.gguf"))
			mustNotExist(t, filepath.Join(dir, "bad.gguf"+partSuffix))
		})
	}
	// The unmutated file is accepted through the same path.
	src := ModelSource{Engine: EngineLlamaCpp, Files: []ModelFile{{Role: RoleModel, URL: serveBytes(t, base) + "/tiny.gguf", Filename: "tiny.gguf", SHA256: sha(base)}}}
	if _, err := st.EnsureSource(context.Background(), "tiny", src, nil); err != nil {
		t.Fatalf("the valid tiny model: %v", err)
	}
}

// TestEnsureImageModelFormats: an sd.cpp file may be GGUF or safetensors (a
// GGUF without an LLM's metadata is fine there), but not a web page.
func TestEnsureImageModelFormats(t *testing.T) {
	st := newTestStore(t, StoreOptions{})
	stBytes := safetensorsFile(t, `{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, 8)
	src := ModelSource{Engine: EngineSDCpp, Files: []ModelFile{
		{Role: RoleVAE, URL: serveBytes(t, stBytes) + "/vae.safetensors", Filename: "vae.safetensors"},
	}}
	if _, err := st.EnsureSource(context.Background(), "img", src, nil); err != nil {
		t.Fatalf("a safetensors VAE: %v", err)
	}
	src.Files = []ModelFile{{Role: RoleDiffusionModel, URL: serveBytes(t, []byte(signInPage)) + "/unet.safetensors", Filename: "unet.safetensors"}}
	if _, err := st.EnsureSource(context.Background(), "img", src, nil); err == nil || IsRetryable(err) {
		t.Fatalf("a web page as a diffusion model: %v", err)
	}
}

// loadFails is an engine whose native library refuses every model file.
type loadFails struct{ fakeEngine }

func (e *loadFails) Run(ctx context.Context, job Job, progress ProgressFunc) (Result, error) {
	return Result{}, &ModelFileError{Path: job.Files[RoleModel], Reason: "llama_model_load: error loading model hyperparameters"}
}

// TestRunDiscardsAFileThatFailsToLoad: a file that passes every check but
// that the engine cannot load is removed, the job fails as not retryable,
// and the next offer downloads it again.
func TestRunDiscardsAFileThatFailsToLoad(t *testing.T) {
	b := newBlob(10_000, 42)
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) { b.record(r); b.serve(w, r) })
	st := newTestStore(t, StoreOptions{})
	eng := &loadFails{fakeEngine{name: EngineLlamaCpp, kinds: []TaskKind{KindLLM}}}
	r := NewRunner(RunnerConfig{Store: st, Engines: []Engine{eng}, BudgetGB: func() float64 { return 24 }, Probe: fixedVRAM(gpu(24, 24))})
	for i := 1; i <= 2; i++ {
		_, err := r.Run(context.Background(), llmJob(srv.URL, b, 0), nil)
		var mfe *ModelFileError
		if !errors.As(err, &mfe) || IsRetryable(err) {
			t.Fatalf("run %d: %v (retryable %t), want a not-retryable ModelFileError", i, err, IsRetryable(err))
		}
		mustNotExist(t, mfe.Path)
		mustNotExist(t, mfe.Path+verifiedSuffix)
		if n := len(b.requests()); n != i {
			t.Fatalf("run %d made %d requests in all, want %d (one download per run)", i, n, i)
		}
	}
}

func TestDiscardOnlyDownloadedFiles(t *testing.T) {
	st := newTestStore(t, StoreOptions{})
	if err := os.MkdirAll(st.Root(), 0o755); err != nil {
		t.Fatal(err)
	}
	loose := filepath.Join(st.Root(), "mine.gguf")
	if err := os.WriteFile(loose, []byte("GGUF"), 0o644); err != nil {
		t.Fatal(err)
	}
	outside := filepath.Join(t.TempDir(), "x", "y.gguf")
	for _, p := range []string{loose, outside, st.Root(), filepath.Join(st.Root(), "m", "..", "..", "z")} {
		if err := st.Discard(p); err == nil {
			t.Errorf("Discard(%s) was allowed", p)
		}
	}
	if _, err := os.Stat(loose); err != nil {
		t.Fatalf("the donor's own file was removed: %v", err)
	}
}

// TestEnsureErrorsCarryNoURLSecrets is issue 10 item 14 at the store: a
// signed model URL's query string and user info appear in no error or log
// line, however the download fails.
func TestEnsureErrorsCarryNoURLSecrets(t *testing.T) {
	var logs bytes.Buffer
	st := newTestStore(t, StoreOptions{Log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	notFound := newServer(t, func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	ln.Close()
	const q = "?X-Amz-Signature=SIG-SECRET&X-Amz-Credential=CRED-SECRET"
	withUser := func(base string) string { return strings.Replace(base, "http://", "http://user:PASS-SECRET@", 1) }
	for name, u := range map[string]string{
		"unreachable": withUser(closed) + "/m.gguf" + q,
		"404":         withUser(notFound.URL) + "/m.gguf" + q,
		"web page":    withUser(serveBytes(t, []byte(signInPage))) + "/m.gguf" + q,
		"plain http":  "http://user:PASS-SECRET@models.example/m.gguf" + q,
	} {
		_, err := st.Ensure(context.Background(), "m", []ModelFile{{Role: RoleModel, URL: u, Filename: "m.gguf"}}, nil)
		if err == nil || strings.Contains(err.Error(), "SECRET") {
			t.Errorf("%s: %v", name, err)
		}
		t.Logf("%s: %v", name, err)
	}
	if strings.Contains(logs.String(), "SECRET") {
		t.Errorf("a secret reached the log:\n%s", logs.String())
	}
}

// TestEnsureRefusesAWebPageAtItsFirstBytes: a page that would go on for
// ever (here: it stalls after its first line) is refused on its first bytes,
// without waiting for the rest or resuming.
func TestEnsureRefusesAWebPageAtItsFirstBytes(t *testing.T) {
	var requests atomic.Int32
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		w.Header().Set("Content-Type", "text/html")
		w.Write([]byte("<!DOCTYPE html>\n<html><head><title>Sign in</title>"))
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	st := newTestStore(t, StoreOptions{IdleTimeout: time.Minute})
	_, err := st.Ensure(context.Background(), "m", []ModelFile{{Role: RoleModel, URL: srv.URL + "/m.gguf", Filename: "m.gguf"}}, nil)
	var je *JobError
	if !errors.As(err, &je) || IsRetryable(err) || !strings.Contains(err.Error(), "web page") || requests.Load() != 1 {
		t.Fatalf("got %v after %d requests", err, requests.Load())
	}
	dir, _ := st.ModelDir("m")
	mustNotExist(t, filepath.Join(dir, "m.gguf"+partSuffix))
}
