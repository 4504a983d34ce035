package release

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestWatermarkRefusesAnOlderFeed(t *testing.T) {
	w := Watermark{Path: filepath.Join(t.TempDir(), "updates", "feed-seen.json")}
	const url = "https://example.test/feed.json"
	at := func(h int) *Manifest { return &Manifest{Generated: time.Date(2026, 12, 1, h, 0, 0, 0, time.UTC)} }

	if err := w.Check(url, at(3)); err != nil {
		t.Fatalf("first feed: %v", err)
	}
	if err := w.Check(url, at(3)); err != nil {
		t.Fatalf("the same feed again: %v", err)
	}
	if err := w.Check(url, at(5)); err != nil {
		t.Fatalf("a newer feed: %v", err)
	}
	err := w.Check(url, at(4))
	if !errors.Is(err, ErrStaleFeed) || !strings.Contains(err.Error(), "2026-12-01T04:00:00Z") || !strings.Contains(err.Error(), "2026-12-01T05:00:00Z") {
		t.Fatalf("an older feed after a newer one: %v", err)
	}
	// Another address keeps its own record.
	if err := w.Check("https://mirror.test/feed.json", at(1)); err != nil {
		t.Fatalf("another address: %v", err)
	}
	// What is remembered survives (a new Watermark on the same file).
	if err := (Watermark{Path: w.Path}).Check(url, at(4)); !errors.Is(err, ErrStaleFeed) {
		t.Fatalf("after a restart: %v", err)
	}
	// A corrupt file counts as nothing seen and is replaced.
	if err := os.WriteFile(w.Path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := w.Check(url, at(2)); err != nil {
		t.Fatalf("corrupt record: %v", err)
	}
	if err := w.Check(url, at(1)); !errors.Is(err, ErrStaleFeed) {
		t.Fatalf("after the corrupt record was replaced: %v", err)
	}
}
