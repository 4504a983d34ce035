package release

import (
	"context"
	"crypto/ed25519"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestExplain fetches a feed for real from servers that fail in each way
// and checks the words a donor is shown.
func TestExplain(t *testing.T) {
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	keys := []ed25519.PublicKey{pub}

	// A port nothing listens on: take one, then close it.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String() + "/feed.json"
	l.Close()

	missing := server(t, map[string]http.HandlerFunc{"/": http.NotFound})
	notJSON := server(t, map[string]http.HandlerFunc{"/": func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("<html>sign in</html>")) }})
	tlsSrv := httptest.NewTLSServer(http.NotFoundHandler())
	t.Cleanup(tlsSrv.Close)
	// A server that answers nothing until the request is given up.
	hang := server(t, map[string]http.HandlerFunc{"/": func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }})

	cases := []struct {
		name, url string
		client    *http.Client
		want      string // part of the words; "" = not a network problem
	}{
		{"unknown name", "https://feed.invalid/feed.json", nil, "the name feed.invalid"},
		{"refused", closed, nil, "127.0.0.1 refused the connection"},
		{"status", missing.URL + "/feed.json", nil, "127.0.0.1 answered 404 Not Found"},
		{"certificate", tlsSrv.URL + "/feed.json", nil, "127.0.0.1's certificate is not trusted"},
		{"no answer", hang.URL + "/feed.json", &http.Client{Timeout: 200 * time.Millisecond}, "127.0.0.1 did not answer in time"},
		{"not a feed", notJSON.URL + "/feed.json", nil, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Fetch(context.Background(), c.client, c.url, keys)
			if err == nil {
				t.Fatal("fetched")
			}
			got, ok := Explain(err)
			if c.want == "" {
				if ok {
					t.Fatalf("%v explained as a network problem: %q", err, got)
				}
				return
			}
			if !ok || !strings.Contains(got, c.want) {
				t.Fatalf("Explain(%v) = %q, %v; want %q…", err, got, ok, c.want)
			}
			for _, word := range []string{"dial tcp", "Get \"", "x509", "context deadline"} {
				if strings.Contains(got, word) {
					t.Fatalf("%q carries Go's error text %q", got, word)
				}
			}
		})
	}
	if _, ok := Explain(nil); ok {
		t.Fatal("nil explained")
	}
}
