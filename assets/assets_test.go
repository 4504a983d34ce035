package assets

import (
	"bytes"
	"image/png"
	"testing"
)

func TestIconsDecodeAndDiffer(t *testing.T) {
	states := []TrayState{TrayIdle, TrayWorking, TrayPaused, TrayError, TrayDisconnected}
	seen := map[string]TrayState{}
	for _, s := range states {
		b := Tray(s)
		img, err := png.Decode(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if got := img.Bounds().Dx(); got != 64 {
			t.Errorf("%s: width %d, want 64", s, got)
		}
		if other, dup := seen[string(b)]; dup {
			t.Errorf("%s and %s share one icon", s, other)
		}
		seen[string(b)] = s
	}
	img, err := png.Decode(bytes.NewReader(Icon))
	if err != nil {
		t.Fatal(err)
	}
	if img.Bounds().Dx() != 256 {
		t.Errorf("app icon is %d wide, want 256", img.Bounds().Dx())
	}
	if !bytes.Equal(Tray("nonsense"), Tray(TrayDisconnected)) {
		t.Error("unknown state should fall back to the disconnected icon")
	}
}
