package studio

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
	"testing"
)

func TestThumbnailShrinksPNG(t *testing.T) {
	src := image.NewNRGBA(image.Rect(0, 0, 400, 200))
	for y := 0; y < 200; y++ {
		for x := 0; x < 400; x++ {
			if x < 200 {
				src.SetNRGBA(x, y, color.NRGBA{R: 255, A: 255})
			} else {
				src.SetNRGBA(x, y, color.NRGBA{B: 255, A: 255})
			}
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, src); err != nil {
		t.Fatal(err)
	}
	th := thumbnail(buf.Bytes(), "png")
	img, err := png.Decode(bytes.NewReader(th))
	if err != nil {
		t.Fatalf("thumbnail is not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() != ThumbnailSize || b.Dy() != ThumbnailSize/2 {
		t.Errorf("thumbnail %v, want %dx%d", b, ThumbnailSize, ThumbnailSize/2)
	}
	if r, _, bl, _ := img.At(5, 5).RGBA(); r>>8 != 255 || bl != 0 {
		t.Errorf("left side should stay red, got %v", img.At(5, 5))
	}
	if r, _, bl, _ := img.At(ThumbnailSize-5, 5).RGBA(); r != 0 || bl>>8 != 255 {
		t.Errorf("right side should stay blue, got %v", img.At(ThumbnailSize-5, 5))
	}
}

func TestThumbnailOfNonImageIsNil(t *testing.T) {
	if thumbnail([]byte("RIFF wav"), "wav") != nil || thumbnail([]byte("garbage"), "png") != nil || thumbnail(nil, "webp") != nil {
		t.Error("non-images must give no thumbnail")
	}
}
