package logging

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const signed = "https://models.example/m/x.gguf?X-Amz-Signature=SIG-SECRET&X-Amz-Credential=CRED-SECRET#frag"

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		signed: "https://models.example/m/x.gguf",
		"https://user:PASS-SECRET@host.example/a?b=1": "https://host.example/a",
		"https://host.example/plain.gguf":             "https://host.example/plain.gguf",
		"http://127.0.0.1:8080/x?":                    "http://127.0.0.1:8080/x",
		"https://h/%zz?sig=SECRET":                    "https://h/%zz",
		"https://u:p@h:bad port/x?sig=SECRET":         "https://h:bad port/x",
		"https://u:p?x@host.example/y?sig=SECRET":     "https://host.example/y",
		"not a url?token=SECRET":                      "not a url",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRedactText(t *testing.T) {
	in := `could not reach the model server: Get "` + signed + `": dial tcp: refused; also https://a:SECRET@b.example/c and http://x/y?token=SECRET, done`
	got := RedactText(in)
	if strings.Contains(got, "SECRET") {
		t.Fatalf("secret kept: %s", got)
	}
	for _, keep := range []string{`Get "https://models.example/m/x.gguf": dial tcp`, "https://b.example/c and", "http://x/y, done"} {
		if !strings.Contains(got, keep) {
			t.Errorf("%q lost %q", got, keep)
		}
	}
	if s := "no url here? a=b"; RedactText(s) != s {
		t.Errorf("text without a URL changed: %q", RedactText(s))
	}
}

// TestRedactErrorOfARealRequest: net/http puts the whole URL in its error.
func TestRedactErrorOfARealRequest(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens: the request fails at once
	_, err = http.Get("http://user:PASS-SECRET@" + addr + "/x.gguf?sig=SIG-SECRET")
	if err == nil || !strings.Contains(err.Error(), "SIG-SECRET") {
		t.Fatalf("expected net/http to echo the URL: %v", err)
	}
	wrapped := fmt.Errorf("download failed: %w", RedactError(err))
	if strings.Contains(wrapped.Error(), "SECRET") || !strings.Contains(wrapped.Error(), addr+"/x.gguf") {
		t.Fatalf("redacted error: %v", wrapped)
	}
	if RedactError(nil) != nil {
		t.Fatal("nil error")
	}
	if e := errors.New("plain"); RedactError(e) != e {
		t.Fatal("an error without a URL changed")
	}
}

// TestLogLinesRedactURLs: a signed URL in a message, a string attribute, an
// error attribute or a With attribute reaches no output.
func TestLogLinesRedactURLs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "w.log")
	l, stderr := newTest(t, Options{FilePath: path})
	sink := &captureSink{}
	l.AddSink(sink)
	log := l.Slog().With("src", signed)
	log.Warn("job failed: could not reach "+signed, "url", signed, "err", fmt.Errorf("get %q: refused", signed))
	l.Close()
	file, _ := os.ReadFile(path)
	all := stderr.String() + string(file) + fmt.Sprint(sink.all()) + fmt.Sprint(l.Ring().Entries())
	if strings.Contains(all, "SECRET") {
		t.Fatalf("secret leaked:\n%s", all)
	}
	if !strings.Contains(all, "https://models.example/m/x.gguf") {
		t.Fatalf("the URL itself should stay:\n%s", all)
	}
}
