package sd

import (
	"bytes"
	"fmt"
	"image"
	"image/png"

	"github.com/gen2brain/webp"
)

// WebP settings: quality high enough that the studio's gallery shows no
// artefacts, at about a quarter of PNG's size. Method 2 measured about as
// small as the default 4 at a third of its time on a 1024x1024 image.
const (
	webpQuality = 90
	webpMethod  = 2
)

// encodeImage writes img as "png" or "webp". The WebP encoder is libwebp
// compiled to WebAssembly and run by a pure-Go runtime (no cgo); it uses a
// system libwebp instead when one is installed.
func encodeImage(img image.Image, ext string) ([]byte, error) {
	var buf bytes.Buffer
	switch ext {
	case "png":
		if err := png.Encode(&buf, img); err != nil {
			return nil, fmt.Errorf("encoding png: %w", err)
		}
	case "webp":
		if err := webp.Encode(&buf, img, webp.Options{Quality: webpQuality, Method: webpMethod}); err != nil {
			return nil, fmt.Errorf("encoding webp: %w", err)
		}
	default:
		return nil, fmt.Errorf("output format %q is not supported (png or webp)", ext)
	}
	return buf.Bytes(), nil
}
