package release

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// ErrStaleFeed is wrapped when a feed is older than one this computer has
// already verified from the same address. A signature proves who made a
// feed, not that it is current: a mirror or an attacker in the path can
// keep serving an old, validly signed feed so that a fixed release is
// never seen (the "freeze" and "rollback" attacks of The Update Framework's
// threat model, theupdateframework.io). Remembering the newest Generated
// time seen and refusing anything older closes the rollback; a freeze that
// keeps serving the same feed still goes unnoticed until a newer one is
// seen.
var ErrStaleFeed = errors.New("the release feed is older than one this computer already saw")

// Watermark remembers, per feed address, the newest Generated time of a
// verified feed, in a small JSON file at Path ({"<url>": "<RFC 3339 time>"}).
type Watermark struct {
	Path string
}

// Check refuses m (wrapping ErrStaleFeed, with both times) when it was
// generated before the newest feed already seen from url, and records
// m.Generated when it is newer. An equal time passes (the same feed read
// again). A missing or unreadable file counts as nothing seen, and a
// failure to record is not an error: the check must never stop an update
// for a reason the feed did not cause.
func (w Watermark) Check(url string, m *Manifest) error {
	seen := map[string]time.Time{}
	if b, err := os.ReadFile(w.Path); err == nil {
		_ = json.Unmarshal(b, &seen) // a corrupt file counts as nothing seen
	}
	last, ok := seen[url]
	if ok && m.Generated.Before(last) {
		return fmt.Errorf("%w: it was made %s, but a feed made %s was already verified here (an old copy is being served)",
			ErrStaleFeed, m.Generated.UTC().Format(time.RFC3339), last.UTC().Format(time.RFC3339))
	}
	if ok && !m.Generated.After(last) {
		return nil
	}
	seen[url] = m.Generated.UTC()
	b, err := json.Marshal(seen)
	if err != nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(w.Path), 0o700); err != nil {
		return nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(w.Path), ".feed-seen-*")
	if err != nil {
		return nil
	}
	_, werr := tmp.Write(b)
	if cerr := tmp.Close(); werr == nil && cerr == nil {
		if os.Rename(tmp.Name(), w.Path) == nil {
			return nil
		}
	}
	_ = os.Remove(tmp.Name())
	return nil
}
