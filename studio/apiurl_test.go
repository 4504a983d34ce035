package studio

import "testing"

func TestAPIBase(t *testing.T) {
	ok := map[string]string{
		"https://studio.minis.gg/":                 "https://studio.minis.gg/graphics/api",
		"https://studio.minis.gg":                  "https://studio.minis.gg/graphics/api",
		"https://studio.minis.gg///":               "https://studio.minis.gg/graphics/api",
		"https://studio.minis.gg/graphics/api":     "https://studio.minis.gg/graphics/api",
		"https://studio.minis.gg/graphics/api/":    "https://studio.minis.gg/graphics/api",
		"https://studio.minis.gg/?x=1#frag":        "https://studio.minis.gg/graphics/api",
		"https://studio.minis.gg/graphics/api?x=1": "https://studio.minis.gg/graphics/api",
		"http://127.0.0.1:8787":                    "http://127.0.0.1:8787/graphics/api",
		"HTTP://localhost:9/base/":                 "http://localhost:9/base/graphics/api",
		" https://studio.minis.gg/ ":               "https://studio.minis.gg/graphics/api",
		"https://user:pw@studio.minis.gg/":         "https://studio.minis.gg/graphics/api",
		"http://[::1]:8080/":                       "http://[::1]:8080/graphics/api",
	}
	for in, want := range ok {
		got, err := APIBase(in)
		if err != nil || got != want {
			t.Errorf("APIBase(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "studio.minis.gg", "ftp://studio.minis.gg", "wss://studio.minis.gg", "https://", "https:///x", "://x", "file:///etc"} {
		if got, err := APIBase(in); err == nil {
			t.Errorf("APIBase(%q) = %q, want an error", in, got)
		}
	}
}

func TestWebSocketURLs(t *testing.T) {
	ok := map[string]string{
		"https://studio.minis.gg/":           "wss://studio.minis.gg/graphics/api",
		"http://127.0.0.1:8787/?q#f":         "ws://127.0.0.1:8787/graphics/api",
		"ws://127.0.0.1:8787":                "ws://127.0.0.1:8787/graphics/api",
		"wss://studio.minis.gg/graphics/api": "wss://studio.minis.gg/graphics/api",
	}
	for in, want := range ok {
		got, err := WebSocketBase(in)
		if err != nil || got != want {
			t.Errorf("WebSocketBase(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := WebSocketBase("ftp://x"); err == nil {
		t.Error("ftp accepted for the session")
	}
	got, err := ConnectURL("https://studio.minis.gg/", "w 1/2")
	if want := "wss://studio.minis.gg/graphics/api/workers/w%201%2F2/connect"; err != nil || got != want {
		t.Errorf("ConnectURL = %q, %v; want %q", got, err, want)
	}
	if got := RegisterRequestURL("https://s/graphics/api"); got != "https://s/graphics/api/workers/register-request" {
		t.Errorf("RegisterRequestURL = %q", got)
	}
	if got := RegisterPollURL("https://s/graphics/api", "rr-1"); got != "https://s/graphics/api/workers/register-requests/rr-1" {
		t.Errorf("RegisterPollURL = %q", got)
	}
}
