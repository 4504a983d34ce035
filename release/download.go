package release

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
)

// guarded returns a copy of c (http.DefaultClient when nil) whose redirects
// must also pass CheckURL, so an https feed cannot bounce to plain http.
func guarded(c *http.Client) *http.Client {
	if c == nil {
		c = http.DefaultClient
	}
	cc := *c
	prev := c.CheckRedirect
	cc.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if err := CheckURL(req.URL.String()); err != nil {
			return fmt.Errorf("redirected to a refused URL: %w", err)
		}
		if prev != nil {
			return prev(req, via)
		}
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		return nil
	}
	return &cc
}

func get(ctx context.Context, c *http.Client, url string) (*http.Response, error) {
	if err := CheckURL(url); err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := guarded(c).Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, &StatusError{URL: url, Status: resp.Status}
	}
	return resp, nil
}

// Fetch downloads the feed envelope at url (CheckURL; at most MaxFeedBytes)
// with c (http.DefaultClient when nil) and returns Verify's manifest.
// Errors: those of CheckURL and Verify, a status other than 200, network
// errors, ErrTooLarge.
func Fetch(ctx context.Context, c *http.Client, url string, trusted []ed25519.PublicKey) (*Manifest, error) {
	resp, err := get(ctx, c, url)
	if err != nil {
		return nil, fmt.Errorf("fetching the release feed: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxFeedBytes+1))
	if err != nil {
		return nil, fmt.Errorf("fetching the release feed from %s: %w", url, err)
	}
	m, err := Verify(body, trusted)
	if err != nil {
		return nil, fmt.Errorf("release feed %s: %w", url, err)
	}
	return m, nil
}

// Download streams a to dst. dst is created atomically: the bytes go to a
// temp file in dst's folder (created when missing), whose size and sha256
// are checked against a before it is synced and renamed to dst (mode 0644).
// progress(done, total bytes), when not nil, is called after every chunk
// read, from the calling goroutine. On any error the temp file is removed
// and dst is neither created nor changed.
// Errors: a.Validate's (ErrInsecureURL, bad size or sha256), a status other
// than 200, ErrSizeMismatch (truncated or overlong body, or a Content-Length
// that disagrees), ErrSHA256Mismatch, network and disk errors, ctx's error.
func Download(ctx context.Context, c *http.Client, a Artifact, dst string, progress func(done, total int64)) (err error) {
	if err := a.Validate(); err != nil {
		return fmt.Errorf("download %s: %w", a.URL, err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	resp, err := get(ctx, c, a.URL)
	if err != nil {
		return fmt.Errorf("download: %w", err)
	}
	defer resp.Body.Close()
	if resp.ContentLength >= 0 && resp.ContentLength != a.Size {
		return fmt.Errorf("download %s: %w: the server offers %d bytes, the feed says %d", a.URL, ErrSizeMismatch, resp.ContentLength, a.Size)
	}

	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".part-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()

	h := sha256.New()
	var done int64
	buf := make([]byte, 64<<10)
	// Read one byte past the expected size so an overlong body is noticed.
	body := io.LimitReader(resp.Body, a.Size+1)
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			if done+int64(n) > a.Size {
				return fmt.Errorf("download %s: %w: the body is longer than the feed's %d bytes", a.URL, ErrSizeMismatch, a.Size)
			}
			if _, werr := tmp.Write(buf[:n]); werr != nil {
				return fmt.Errorf("download %s: writing %s: %w", a.URL, tmp.Name(), werr)
			}
			h.Write(buf[:n])
			done += int64(n)
			if progress != nil {
				progress(done, a.Size)
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("download %s: stopped after %d of %d bytes: %w", a.URL, done, a.Size, ctx.Err())
			}
			if errors.Is(rerr, io.ErrUnexpectedEOF) {
				return fmt.Errorf("download %s: %w: truncated after %d of %d bytes", a.URL, ErrSizeMismatch, done, a.Size)
			}
			return fmt.Errorf("download %s: stopped after %d of %d bytes: %w", a.URL, done, a.Size, rerr)
		}
	}
	if done != a.Size {
		return fmt.Errorf("download %s: %w: truncated after %d of %d bytes", a.URL, ErrSizeMismatch, done, a.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != a.SHA256 {
		return fmt.Errorf("download %s: %w: got %s, the feed says %s", a.URL, ErrSHA256Mismatch, got, a.SHA256)
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return err
	}
	syncDir(filepath.Dir(dst))
	return nil
}

// syncDir makes a rename in dir durable where the OS allows it (best effort:
// Windows cannot open a folder for syncing).
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}
