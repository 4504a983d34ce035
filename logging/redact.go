package logging

import (
	"errors"
	"net/url"
	"regexp"
	"strings"
)

// Signed download links carry their secret in the query string
// (X-Amz-Signature, X-Amz-Credential, sig, token) and some links carry a
// user name and password; neither may reach a log line, an error a studio
// sees, or the window. RedactURL is the one helper for a URL; RedactText
// finds URLs inside free text (an error message) and redacts each.

// RedactURL returns raw without user info, query string and fragment:
// "https://u:p@host/a/b.gguf?X-Amz-Signature=..." becomes
// "https://host/a/b.gguf". It works on the text itself, without parsing and
// re-encoding, so the rest of the URL is kept byte for byte and text that is
// not a valid URL is redacted the same way.
func RedactURL(raw string) string {
	s := raw
	if scheme, rest, ok := strings.Cut(s, "://"); ok {
		// User info ends at the last '@' before the path.
		authEnd := strings.IndexByte(rest, '/')
		if authEnd < 0 {
			authEnd = len(rest)
		}
		if i := strings.LastIndexByte(rest[:authEnd], '@'); i >= 0 {
			rest = rest[i+1:]
		}
		s = scheme + "://" + rest
	}
	if i := strings.IndexAny(s, "?#"); i >= 0 {
		s = s[:i]
	}
	return s
}

// urlInText matches a URL with a scheme inside free text, up to a space, a
// quote or an angle bracket (how Go's errors and most messages delimit one).
var urlInText = regexp.MustCompile(`[A-Za-z][A-Za-z0-9+.\-]*://[^\s"'<>` + "`" + `]+`)

// RedactText applies RedactURL to every URL in s (one with "://"); the rest
// of the text is kept as it is.
func RedactText(s string) string {
	if !strings.Contains(s, "://") {
		return s
	}
	return urlInText.ReplaceAllStringFunc(s, func(m string) string {
		// Punctuation that ends a sentence is not part of the URL.
		u := strings.TrimRight(m, ".,;:!)]}")
		return RedactURL(u) + m[len(u):]
	})
}

// RedactError returns err with the URL of every *url.Error in its chain
// redacted in place (net/http reports the whole request URL, query string
// included, in its errors), so that wrapping it later leaks nothing. nil
// stays nil.
func RedactError(err error) error {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if ue, ok := e.(*url.Error); ok {
			ue.URL = RedactURL(ue.URL)
		}
	}
	return err
}
