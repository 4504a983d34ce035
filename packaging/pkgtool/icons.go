package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"
	"os"
	"path/filepath"
)

func loadPNG(path string) (*image.NRGBA, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	b := img.Bounds()
	if b.Dx() != b.Dy() {
		return nil, fmt.Errorf("%s is %dx%d: an app icon must be square", path, b.Dx(), b.Dy())
	}
	out := image.NewNRGBA(image.Rect(0, 0, b.Dx(), b.Dy()))
	draw.Draw(out, out.Bounds(), img, b.Min, draw.Src)
	return out, nil
}

// resize scales a square image to size×size. Shrinking averages every
// source pixel under a target pixel (area-weighted, in premultiplied
// alpha, so transparent edges do not darken); growing interpolates
// bilinearly.
func resize(src *image.NRGBA, size int) *image.NRGBA {
	n := src.Bounds().Dx()
	dst := image.NewNRGBA(image.Rect(0, 0, size, size))
	if size == n {
		copy(dst.Pix, src.Pix)
		return dst
	}
	at := func(x, y int) (r, g, b, a float64) {
		c := src.NRGBAAt(x, y)
		a = float64(c.A) / 255
		return float64(c.R) * a, float64(c.G) * a, float64(c.B) * a, a
	}
	put := func(x, y int, r, g, b, a float64) {
		if a <= 0 {
			dst.SetNRGBA(x, y, color.NRGBA{})
			return
		}
		c8 := func(v float64) uint8 { return uint8(math.Max(0, math.Min(255, math.Round(v)))) }
		dst.SetNRGBA(x, y, color.NRGBA{c8(r / a), c8(g / a), c8(b / a), c8(a * 255)})
	}
	scale := float64(n) / float64(size)
	if size < n {
		for ty := 0; ty < size; ty++ {
			y0, y1 := float64(ty)*scale, float64(ty+1)*scale
			for tx := 0; tx < size; tx++ {
				x0, x1 := float64(tx)*scale, float64(tx+1)*scale
				var sr, sg, sb, sa, sw float64
				for sy := int(y0); float64(sy) < y1 && sy < n; sy++ {
					wy := math.Min(y1, float64(sy+1)) - math.Max(y0, float64(sy))
					for sx := int(x0); float64(sx) < x1 && sx < n; sx++ {
						w := wy * (math.Min(x1, float64(sx+1)) - math.Max(x0, float64(sx)))
						r, g, b, a := at(sx, sy)
						sr, sg, sb, sa, sw = sr+r*w, sg+g*w, sb+b*w, sa+a*w, sw+w
					}
				}
				put(tx, ty, sr/sw, sg/sw, sb/sw, sa/sw)
			}
		}
		return dst
	}
	clamp := func(v int) int { return max(0, min(n-1, v)) }
	for ty := 0; ty < size; ty++ {
		fy := (float64(ty)+0.5)*scale - 0.5
		y0 := int(math.Floor(fy))
		dy := fy - float64(y0)
		for tx := 0; tx < size; tx++ {
			fx := (float64(tx)+0.5)*scale - 0.5
			x0 := int(math.Floor(fx))
			dx := fx - float64(x0)
			var acc [4]float64
			for _, s := range [4]struct {
				x, y int
				w    float64
			}{{x0, y0, (1 - dx) * (1 - dy)}, {x0 + 1, y0, dx * (1 - dy)}, {x0, y0 + 1, (1 - dx) * dy}, {x0 + 1, y0 + 1, dx * dy}} {
				r, g, b, a := at(clamp(s.x), clamp(s.y))
				acc[0] += r * s.w
				acc[1] += g * s.w
				acc[2] += b * s.w
				acc[3] += a * s.w
			}
			put(tx, ty, acc[0], acc[1], acc[2], acc[3])
		}
	}
	return dst
}

// writeHicolor writes <out>/<n>x<n>/apps/<name>.png for every size, the
// layout of the freedesktop hicolor icon theme.
func writeHicolor(src *image.NRGBA, out, name string, sizes []int) error {
	for _, s := range sizes {
		dir := filepath.Join(out, fmt.Sprintf("%dx%d", s, s), "apps")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		var buf bytes.Buffer
		if err := png.Encode(&buf, resize(src, s)); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, name+".png"), buf.Bytes(), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// encodeICO builds a Windows .ico whose images are 32-bit DIBs (the
// format every Windows version and NSIS read), one per size.
func encodeICO(src *image.NRGBA, sizes []int) ([]byte, error) {
	var images [][]byte
	for _, s := range sizes {
		if s < 1 || s > 256 {
			return nil, fmt.Errorf("an .ico image must be 1 to 256 pixels wide, not %d", s)
		}
		images = append(images, dib(resize(src, s)))
	}
	var out bytes.Buffer
	le := func(v any) { _ = binary.Write(&out, binary.LittleEndian, v) }
	le(uint16(0))
	le(uint16(1)) // icon
	le(uint16(len(sizes)))
	off := 6 + 16*len(sizes)
	for i, s := range sizes {
		w := uint8(s)
		if s == 256 {
			w = 0 // 0 means 256 in an icon directory
		}
		out.WriteByte(w)
		out.WriteByte(w)
		out.WriteByte(0) // palette
		out.WriteByte(0)
		le(uint16(1))  // planes
		le(uint16(32)) // bits per pixel
		le(uint32(len(images[i])))
		le(uint32(off))
		off += len(images[i])
	}
	for _, img := range images {
		out.Write(img)
	}
	return out.Bytes(), nil
}

// dib is an icon image: BITMAPINFOHEADER with doubled height, BGRA rows
// bottom-up, then the 1-bit AND mask (all zero: alpha decides).
func dib(img *image.NRGBA) []byte {
	s := img.Bounds().Dx()
	var out bytes.Buffer
	le := func(v any) { _ = binary.Write(&out, binary.LittleEndian, v) }
	maskRow := ((s + 31) / 32) * 4
	le(uint32(40))
	le(int32(s))
	le(int32(2 * s))
	le(uint16(1))
	le(uint16(32))
	le(uint32(0)) // BI_RGB
	le(uint32(s*s*4 + maskRow*s))
	le(int32(0))
	le(int32(0))
	le(uint32(0))
	le(uint32(0))
	for y := s - 1; y >= 0; y-- {
		for x := 0; x < s; x++ {
			c := img.NRGBAAt(x, y)
			out.Write([]byte{c.B, c.G, c.R, c.A})
		}
	}
	out.Write(make([]byte, maskRow*s))
	return out.Bytes()
}
