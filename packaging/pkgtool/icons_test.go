package main

import (
	"encoding/binary"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"testing"
)

// halfRed is opaque red on the left half and fully transparent on the right.
func halfRed(n int) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, n, n))
	for y := 0; y < n; y++ {
		for x := 0; x < n/2; x++ {
			img.SetNRGBA(x, y, color.NRGBA{255, 0, 0, 255})
		}
	}
	return img
}

func TestResizeAveragesAndKeepsTransparentEdgesClean(t *testing.T) {
	src := halfRed(256)
	small := resize(src, 51) // not an integer factor: column 25 straddles the middle
	if small.Bounds().Dx() != 51 {
		t.Fatalf("size %d", small.Bounds().Dx())
	}
	if c := small.NRGBAAt(0, 10); c != (color.NRGBA{255, 0, 0, 255}) {
		t.Errorf("left edge %v, want opaque red", c)
	}
	if c := small.NRGBAAt(50, 10); c.A != 0 {
		t.Errorf("right edge %v, want transparent", c)
	}
	// The column straddling the middle is half covered: half alpha, and
	// still pure red (premultiplied averaging does not pull in black).
	mid := small.NRGBAAt(25, 10)
	if mid.R != 255 || mid.G != 0 || mid.A < 100 || mid.A > 155 {
		t.Errorf("middle column %v, want red at about half alpha", mid)
	}
	big := resize(src, 512)
	if c := big.NRGBAAt(10, 10); c != (color.NRGBA{255, 0, 0, 255}) {
		t.Errorf("upscaled %v, want opaque red", c)
	}
}

func TestWriteHicolorLayout(t *testing.T) {
	out := t.TempDir()
	if err := writeHicolor(halfRed(64), out, "studio-worker", []int{16, 128}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []int{16, 128} {
		p := filepath.Join(out, fmt.Sprintf("%dx%d", s, s), "apps", "studio-worker.png")
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := png.DecodeConfig(f)
		f.Close()
		if err != nil || cfg.Width != s || cfg.Height != s {
			t.Errorf("%s: %v %dx%d", p, err, cfg.Width, cfg.Height)
		}
	}
}

func TestEncodeICOStructure(t *testing.T) {
	sizes := []int{16, 32, 256}
	b, err := encodeICO(halfRed(256), sizes)
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	if le.Uint16(b[0:]) != 0 || le.Uint16(b[2:]) != 1 || int(le.Uint16(b[4:])) != len(sizes) {
		t.Fatalf("bad ICONDIR %v", b[:6])
	}
	for i, s := range sizes {
		e := b[6+16*i:]
		w := int(e[0])
		if w == 0 {
			w = 256
		}
		size, off := int(le.Uint32(e[8:])), int(le.Uint32(e[12:]))
		if w != s || off+size > len(b) {
			t.Fatalf("entry %d: width %d size %d offset %d (file %d)", i, w, size, off, len(b))
		}
		hdr := b[off:]
		if le.Uint32(hdr) != 40 || int(int32(le.Uint32(hdr[4:]))) != s || int(int32(le.Uint32(hdr[8:]))) != 2*s || le.Uint16(hdr[14:]) != 32 {
			t.Fatalf("entry %d: bad BITMAPINFOHEADER", i)
		}
		maskRow := ((s + 31) / 32) * 4
		if size != 40+s*s*4+maskRow*s {
			t.Errorf("entry %d: size %d", i, size)
		}
		// Bottom-up BGRA: the first pixel is the bottom-left one, opaque red.
		px := hdr[40:44]
		if px[0] != 0 || px[1] != 0 || px[2] != 255 || px[3] != 255 {
			t.Errorf("entry %d: first pixel %v, want BGRA red", i, px)
		}
	}
	if _, err := encodeICO(halfRed(64), []int{512}); err == nil {
		t.Error("an .ico image wider than 256 must be refused")
	}
}

func TestLoadPNGRefusesANonSquareIcon(t *testing.T) {
	p := filepath.Join(t.TempDir(), "wide.png")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := png.Encode(f, image.NewNRGBA(image.Rect(0, 0, 20, 10))); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := loadPNG(p); err == nil {
		t.Fatal("a 20x10 icon was accepted")
	}
}
