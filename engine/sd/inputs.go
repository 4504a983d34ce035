package sd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"image/png"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gen2brain/webp"
	"golang.org/x/image/draw"

	"github.com/minisgg/studio-worker/engine"
)

// Limits on input images (initImageUrl, maskUrl, refImageUrl). The studio
// sends signed URLs of images it stores; anything beyond these is refused
// before it is read or decoded in full.
const (
	// MaxInputBytes is the largest input image file read.
	MaxInputBytes = 32 << 20
	// MaxInputPixels is the largest input image decoded (width × height),
	// checked from the file's header before decoding: 4096x4096.
	MaxInputPixels = 4096 * 4096
	// inputTimeout bounds one input image download.
	inputTimeout = 2 * time.Minute
)

// inputClient fetches input images; tests replace it.
var inputClient = &http.Client{
	Timeout: inputTimeout,
	CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if len(via) >= 5 {
			return errors.New("too many redirects")
		}
		return checkInputURL(req.URL)
	},
}

// checkInputURL allows https anywhere and plain http only to this computer
// (the dev studio serves its files on loopback).
func checkInputURL(u *url.URL) error {
	if u.Hostname() == "" {
		return errors.New("the URL has no host")
	}
	switch strings.ToLower(u.Scheme) {
	case "https":
		return nil
	case "http":
		h := u.Hostname()
		if ip := net.ParseIP(h); strings.EqualFold(h, "localhost") || (ip != nil && ip.IsLoopback()) {
			return nil
		}
		return errors.New("plain http is allowed only to this computer; the studio must send an https URL")
	}
	return fmt.Errorf("scheme %q is not allowed; only https", u.Scheme)
}

// redact drops what a signed URL keeps secret (query, fragment, user info).
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		if i := strings.IndexAny(raw, "?#"); i >= 0 {
			return raw[:i]
		}
		return raw
	}
	u.User, u.RawQuery, u.Fragment = nil, "", ""
	return u.String()
}

// fetchInput downloads and decodes one input image. Every failure is the
// job's (a JobError naming field), except a cancelled context.
func fetchInput(ctx context.Context, field, raw string) (image.Image, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, engine.Invalid(field, "%q is not a valid URL", redact(raw))
	}
	if err := checkInputURL(u); err != nil {
		return nil, engine.Invalid(field, "%s: %v", redact(raw), err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, raw, nil)
	if err != nil {
		return nil, engine.Invalid(field, "%s: %v", redact(raw), err)
	}
	resp, err := inputClient.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("downloading %s: %w", field, ctx.Err())
		}
		return nil, &engine.JobError{Field: field, Reason: fmt.Sprintf("could not download %s: %v", redact(raw), unwrapURLError(err)), Err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, engine.Invalid(field, "downloading %s: the server answered %s", redact(raw), resp.Status)
	}
	if resp.ContentLength > MaxInputBytes {
		return nil, engine.Invalid(field, "the image at %s is %d bytes; input images may be at most %d MB", redact(raw), resp.ContentLength, MaxInputBytes>>20)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxInputBytes+1))
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("downloading %s: %w", field, ctx.Err())
		}
		return nil, &engine.JobError{Field: field, Reason: fmt.Sprintf("downloading %s failed: %v", redact(raw), err), Err: err}
	}
	if len(data) > MaxInputBytes {
		return nil, engine.Invalid(field, "the image at %s is larger than %d MB, the most an input image may be", redact(raw), MaxInputBytes>>20)
	}
	return decodeInput(field, data)
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// decodeInput decodes a PNG, JPEG or WebP image identified by its bytes,
// refusing one larger than MaxInputPixels from its header alone.
func decodeInput(field string, data []byte) (image.Image, error) {
	f, err := engine.SniffImage(data)
	if err != nil {
		return nil, engine.Invalid(field, "not an image: %v", err)
	}
	format := map[engine.FileFormat]string{engine.FormatPNG: "png", engine.FormatJPEG: "jpeg", engine.FormatWebP: "webp"}[f]
	var cfg image.Config
	switch format {
	case "png":
		cfg, err = png.DecodeConfig(bytes.NewReader(data))
	case "jpeg":
		cfg, err = jpeg.DecodeConfig(bytes.NewReader(data))
	case "webp":
		cfg, err = webp.DecodeConfig(bytes.NewReader(data))
	}
	if err != nil {
		return nil, engine.Invalid(field, "a damaged %s image: %v", strings.ToUpper(format), err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return nil, engine.Invalid(field, "the %s image has no pixels (%dx%d)", strings.ToUpper(format), cfg.Width, cfg.Height)
	}
	if int64(cfg.Width)*int64(cfg.Height) > MaxInputPixels {
		return nil, engine.Invalid(field, "the image is %dx%d pixels; input images may have at most %d pixels (e.g. 4096x4096)",
			cfg.Width, cfg.Height, MaxInputPixels)
	}
	var img image.Image
	switch format {
	case "png":
		img, err = png.Decode(bytes.NewReader(data))
	case "jpeg":
		img, err = jpeg.Decode(bytes.NewReader(data))
	case "webp":
		img, err = webp.Decode(bytes.NewReader(data))
	}
	if err != nil {
		return nil, engine.Invalid(field, "a damaged %s image: %v", strings.ToUpper(format), err)
	}
	return img, nil
}

// cImageData is an image laid out as sd_image_t wants it: rows of 8-bit
// channels, 3 (RGB) or 1 (grey, for masks).
type cImageData struct {
	W, H, C int
	Pix     []byte
}

// toRGB resizes img to w×h when it is another size (bilinear) and packs it
// as RGB; alpha is dropped (the image is taken as drawn over black).
func toRGB(img image.Image, w, h int) cImageData {
	src := scaled(img, w, h)
	out := cImageData{W: w, H: h, C: 3, Pix: make([]byte, w*h*3)}
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			i := src.PixOffset(x, y)
			j := (y*w + x) * 3
			out.Pix[j], out.Pix[j+1], out.Pix[j+2] = src.Pix[i], src.Pix[i+1], src.Pix[i+2]
		}
	}
	return out
}

// toMask packs img as one grey channel at w×h: white may be repainted,
// black is kept (studio-protocol §4.3, maskUrl).
func toMask(img image.Image, w, h int) cImageData {
	src := scaled(img, w, h)
	out := cImageData{W: w, H: h, C: 1, Pix: make([]byte, w*h)}
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			i := src.PixOffset(x, y)
			r, g, b := int(src.Pix[i]), int(src.Pix[i+1]), int(src.Pix[i+2])
			out.Pix[y*w+x] = byte((299*r + 587*g + 114*b) / 1000)
		}
	}
	return out
}

func scaled(img image.Image, w, h int) *image.RGBA {
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	b := img.Bounds()
	if b.Dx() == w && b.Dy() == h {
		draw.Draw(dst, dst.Rect, img, b.Min, draw.Src)
	} else {
		draw.BiLinear.Scale(dst, dst.Rect, img, b, draw.Src, nil)
	}
	return dst
}
