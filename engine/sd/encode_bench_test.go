package sd

import (
	"image"
	"math/rand/v2"
	"testing"
)

// benchImage is photo-like enough for codec timings: smooth gradients with
// some noise, 1024x1024 as today's image models make them.
func benchImage() *image.NRGBA {
	r := rand.New(rand.NewPCG(1, 2))
	img := image.NewNRGBA(image.Rect(0, 0, 1024, 1024))
	for y := 0; y < 1024; y++ {
		for x := 0; x < 1024; x++ {
			i := img.PixOffset(x, y)
			n := byte(r.IntN(16))
			img.Pix[i], img.Pix[i+1], img.Pix[i+2], img.Pix[i+3] = byte(x/4)+n, byte(y/4)+n, byte((x+y)/8)+n, 255
		}
	}
	return img
}

func benchmarkEncode(b *testing.B, ext string) {
	img := benchImage()
	if _, err := encodeImage(img, ext); err != nil { // compile/warm the codec once
		b.Fatal(err)
	}
	b.ResetTimer()
	var size int
	for b.Loop() {
		out, err := encodeImage(img, ext)
		if err != nil {
			b.Fatal(err)
		}
		size = len(out)
	}
	b.ReportMetric(float64(size), "bytes/image")
}

func BenchmarkEncodePNG1024(b *testing.B)  { benchmarkEncode(b, "png") }
func BenchmarkEncodeWebP1024(b *testing.B) { benchmarkEncode(b, "webp") }
