package studio

import (
	"bytes"
	"image"
	"image/color"
	"image/gif"
	"image/png"
	"strings"

	"golang.org/x/image/webp"
)

// ThumbnailSize is the longest side of a Jobs-page thumbnail.
const ThumbnailSize = 96

// thumbnail makes a small PNG of an image result so the Jobs page can show
// it without keeping the full image. It returns nil for anything that is
// not a decodable image (audio, video, a broken file): a missing thumbnail
// is harmless.
func thumbnail(data []byte, ext string) []byte {
	var (
		img image.Image
		err error
	)
	r := bytes.NewReader(data)
	switch strings.ToLower(ext) {
	case "png":
		img, err = png.Decode(r)
	case "webp":
		img, err = webp.Decode(r)
	case "gif":
		img, err = gif.Decode(r)
	default:
		return nil
	}
	if err != nil || img.Bounds().Empty() {
		return nil
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, shrink(img, ThumbnailSize)); err != nil {
		return nil
	}
	return buf.Bytes()
}

// shrink scales by box-averaging so a thumbnail of a noisy image does not
// alias into static the way nearest-neighbour would.
func shrink(src image.Image, side int) image.Image {
	b := src.Bounds()
	w, h := b.Dx(), b.Dy()
	if w <= side && h <= side {
		return src
	}
	tw, th := side, side
	if w > h {
		th = side * h / w
	} else {
		tw = side * w / h
	}
	tw, th = max(tw, 1), max(th, 1)
	dst := image.NewNRGBA(image.Rect(0, 0, tw, th))
	for y := 0; y < th; y++ {
		y0, y1 := b.Min.Y+y*h/th, b.Min.Y+(y+1)*h/th
		for x := 0; x < tw; x++ {
			x0, x1 := b.Min.X+x*w/tw, b.Min.X+(x+1)*w/tw
			var r, g, bl, a, n uint64
			for sy := y0; sy < max(y1, y0+1); sy++ {
				for sx := x0; sx < max(x1, x0+1); sx++ {
					c := color.NRGBA64Model.Convert(src.At(sx, sy)).(color.NRGBA64)
					r += uint64(c.R)
					g += uint64(c.G)
					bl += uint64(c.B)
					a += uint64(c.A)
					n++
				}
			}
			dst.SetNRGBA(x, y, color.NRGBA{
				R: uint8(r / n >> 8), G: uint8(g / n >> 8), B: uint8(bl / n >> 8), A: uint8(a / n >> 8),
			})
		}
	}
	return dst
}
