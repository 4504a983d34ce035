// Command gen draws the tray and app icons into the assets folder.
//
// The icons are drawn from signed-distance shapes so that every edge is
// anti-aliased at any size without an image editor or a font: run
// `go generate ./assets` after changing a colour or a shape.
package main

import (
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"path/filepath"
)

type rgba struct{ r, g, b, a float64 }

func hex(v uint32) rgba {
	return rgba{float64(v>>16&0xff) / 255, float64(v>>8&0xff) / 255, float64(v&0xff) / 255, 1}
}

// shape returns the signed distance (in pixels) from p to the shape's edge:
// negative inside.
type shape func(x, y float64) float64

type layer struct {
	s shape
	c rgba
}

func roundRect(cx, cy, hw, hh, r float64) shape {
	return func(x, y float64) float64 {
		qx := math.Abs(x-cx) - hw + r
		qy := math.Abs(y-cy) - hh + r
		out := math.Hypot(math.Max(qx, 0), math.Max(qy, 0))
		return out + math.Min(math.Max(qx, qy), 0) - r
	}
}

func circle(cx, cy, r float64) shape {
	return func(x, y float64) float64 { return math.Hypot(x-cx, y-cy) - r }
}

func ring(cx, cy, r, w float64) shape {
	return func(x, y float64) float64 { return math.Abs(math.Hypot(x-cx, y-cy)-r) - w/2 }
}

// capsule is a line segment with round ends, width w.
func capsule(ax, ay, bx, by, w float64) shape {
	return func(x, y float64) float64 {
		px, py := x-ax, y-ay
		dx, dy := bx-ax, by-ay
		h := math.Max(0, math.Min(1, (px*dx+py*dy)/(dx*dx+dy*dy)))
		return math.Hypot(px-dx*h, py-dy*h) - w/2
	}
}

// triangle with corners a, b, c, rounded by r.
func triangle(ax, ay, bx, by, cx, cy, r float64) shape {
	pts := [][2]float64{{ax, ay}, {bx, by}, {cx, cy}}
	return func(x, y float64) float64 {
		d := math.Inf(1)
		var pos, neg bool
		for i := range 3 {
			p, q := pts[i], pts[(i+1)%3]
			ex, ey := q[0]-p[0], q[1]-p[1]
			wx, wy := x-p[0], y-p[1]
			h := math.Max(0, math.Min(1, (wx*ex+wy*ey)/(ex*ex+ey*ey)))
			d = math.Min(d, math.Hypot(wx-ex*h, wy-ey*h))
			if ex*wy-ey*wx < 0 {
				neg = true
			} else {
				pos = true
			}
		}
		if pos != neg { // same side of every edge
			d = -d
		}
		return d - r
	}
}

func union(ss ...shape) shape {
	return func(x, y float64) float64 {
		d := math.Inf(1)
		for _, s := range ss {
			d = math.Min(d, s(x, y))
		}
		return d
	}
}

func subtract(a, b shape) shape {
	return func(x, y float64) float64 { return math.Max(a(x, y), -b(x, y)) }
}

// render composites the layers over transparency. Shapes are given in a
// 64-unit design space and scaled to size.
func render(size int, layers []layer) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, size, size))
	k := 64 / float64(size)
	for py := range size {
		for px := range size {
			x, y := (float64(px)+0.5)*k, (float64(py)+0.5)*k
			var out rgba
			for _, l := range layers {
				cov := math.Max(0, math.Min(1, 0.5-l.s(x, y)/k))
				a := cov * l.c.a
				na := a + out.a*(1-a)
				if na > 0 {
					out.r = (l.c.r*a + out.r*out.a*(1-a)) / na
					out.g = (l.c.g*a + out.g*out.a*(1-a)) / na
					out.b = (l.c.b*a + out.b*out.a*(1-a)) / na
				}
				out.a = na
			}
			img.SetNRGBA(px, py, color.NRGBA{
				R: uint8(math.Round(out.r * 255)), G: uint8(math.Round(out.g * 255)),
				B: uint8(math.Round(out.b * 255)), A: uint8(math.Round(out.a * 255)),
			})
		}
	}
	return img
}

// chip is the product mark: a graphics chip with pins on each side.
func chip(body, pins rgba) []layer {
	var pinShapes []shape
	for _, o := range []float64{-10, 0, 10} {
		pinShapes = append(pinShapes,
			capsule(26+o, 4, 26+o, 10, 3.6), capsule(26+o, 42, 26+o, 48, 3.6),
			capsule(4, 26+o, 10, 26+o, 3.6), capsule(42, 26+o, 48, 26+o, 3.6))
	}
	core := roundRect(26, 26, 7, 7, 2)
	return []layer{
		{union(pinShapes...), pins},
		{subtract(roundRect(26, 26, 17, 17, 5), core), body},
	}
}

type badge struct {
	name  string
	color rgba
	glyph shape
}

func main() {
	out := flag.String("out", ".", "folder to write the PNGs into")
	flag.Parse()

	white := hex(0xffffff)
	// A mid slate reads on both light and dark panels.
	slate := hex(0x64748b)
	const bx, by, br = 46, 46, 16
	badges := []badge{
		{"idle", hex(0x16a34a), union(capsule(39, 46.5, 44, 51.5, 4.2), capsule(44, 51.5, 53, 41, 4.2))},
		{"working", hex(0x2563eb), triangle(41, 38.5, 41, 53.5, 54, 46, 1.2)},
		{"paused", hex(0xd97706), union(capsule(41.5, 39.5, 41.5, 52.5, 4.6), capsule(50.5, 39.5, 50.5, 52.5, 4.6))},
		{"error", hex(0xdc2626), union(capsule(46, 38, 46, 47, 4.6), circle(46, 53, 2.6))},
		{"disconnected", hex(0x6b7280), union(ring(46, 46, 7.5, 3.6), capsule(39, 53, 53, 39, 3.6))},
	}
	for _, b := range badges {
		layers := chip(slate, slate)
		layers = append(layers,
			layer{circle(bx, by, br), b.color},
			layer{b.glyph, white})
		// The badge needs a transparent gap around it so that it reads on
		// both light and dark panels; cut it out of the chip layers.
		gap := circle(bx, by, br+2.5)
		for i := range 2 {
			layers[i].s = subtract(layers[i].s, gap)
		}
		write(filepath.Join(*out, "tray-"+b.name+".png"), render(64, layers))
	}

	// The app icon: the chip in white on a rounded tile.
	tile := []layer{{roundRect(32, 32, 30, 30, 12), hex(0x4f46e5)}}
	mark := chip(white, hex(0xc7d2fe))
	for i := range mark {
		s := mark[i].s
		// centre the 52-unit mark on the tile and shrink it a little
		mark[i].s = func(x, y float64) float64 { return s((x-32)/0.78+26, (y-32)/0.78+26) * 0.78 }
	}
	write(filepath.Join(*out, "icon.png"), render(256, append(tile, mark...)))
}

func write(path string, img image.Image) {
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := png.Encode(f, img); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := f.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
