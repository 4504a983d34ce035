package studio

import (
	"fmt"
	"net/url"
	"strings"
)

// APIPrefix is appended to the studio URL unless it is already there (§1).
const APIPrefix = "/graphics/api"

// APIBase turns the studio URL a donor typed into the API base: the query,
// fragment and trailing slashes are dropped and /graphics/api is appended
// unless the path already ends with it. Only http and https are accepted.
//
//	https://studio.minis.gg/            → https://studio.minis.gg/graphics/api
//	http://127.0.0.1:8787/graphics/api/ → http://127.0.0.1:8787/graphics/api
func APIBase(base string) (string, error) {
	u, err := parseBase(base)
	if err != nil {
		return "", err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("studio URL %q must start with https:// (or http:// for a studio on this network)", base)
	}
	return u.String(), nil
}

func parseBase(base string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimSpace(base))
	if err != nil {
		return nil, fmt.Errorf("studio URL %q is not a web address: %w", base, err)
	}
	if u.Host == "" || u.Hostname() == "" {
		return nil, fmt.Errorf("studio URL %q has no host name", base)
	}
	u.Scheme = strings.ToLower(u.Scheme)
	u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment = "", false, "", ""
	u.User = nil
	p := strings.TrimRight(u.Path, "/")
	if !strings.HasSuffix(p, APIPrefix) {
		p += APIPrefix
	}
	u.Path, u.RawPath = p, ""
	return u, nil
}

// WebSocketBase is the API base with the WebSocket scheme: http→ws,
// https→wss; ws and wss are kept; anything else is an error (§1).
func WebSocketBase(base string) (string, error) {
	u, err := parseBase(base)
	if err != nil {
		return "", err
	}
	switch u.Scheme {
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	case "ws", "wss":
	default:
		return "", fmt.Errorf("studio URL %q: scheme %q cannot carry a WebSocket session", base, u.Scheme)
	}
	return u.String(), nil
}

// ConnectURL is the session endpoint …/workers/{workerId}/connect.
func ConnectURL(base, workerID string) (string, error) {
	ws, err := WebSocketBase(base)
	if err != nil {
		return "", err
	}
	return ws + "/workers/" + url.PathEscape(workerID) + "/connect", nil
}

// RegisterRequestURL is POST …/workers/register-request.
func RegisterRequestURL(apiBase string) string {
	return strings.TrimRight(apiBase, "/") + "/workers/register-request"
}

// RegisterPollURL is GET …/workers/register-requests/{requestId}.
func RegisterPollURL(apiBase, requestID string) string {
	return strings.TrimRight(apiBase, "/") + "/workers/register-requests/" + url.PathEscape(requestID)
}
