//go:build windows

package presence

import (
	"context"
	"time"
	"unsafe"

	"golang.org/x/sys/windows"
)

// WindowsSource is what the Windows probe's Source says.
const WindowsSource = "Windows GetLastInputInfo"

var (
	user32               = windows.NewLazySystemDLL("user32.dll")
	kernel32             = windows.NewLazySystemDLL("kernel32.dll")
	procGetLastInputInfo = user32.NewProc("GetLastInputInfo")
	procGetTickCount     = kernel32.NewProc("GetTickCount")
)

// lastInputInfo is LASTINPUTINFO: cbSize (its own size), dwTime (the
// tick count of the last input event in this session).
type lastInputInfo struct {
	cbSize uint32
	dwTime uint32
}

// LastInput reads GetLastInputInfo: the last input of the session this
// process runs in (a service in session 0 would see none of the donor's).
type LastInput struct{}

// Source names GetLastInputInfo.
func (LastInput) Source() string { return WindowsSource }

// Close does nothing: LastInput holds nothing open.
func (LastInput) Close() error { return nil }

// IdleTime returns the time since the session's last input. Errors:
// user32 lacks the call or it fails (wrapping controls.ErrUnknown); ctx's
// end.
func (LastInput) IdleTime(ctx context.Context) (time.Duration, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if err := procGetLastInputInfo.Find(); err != nil {
		return 0, unknownf("Windows has no GetLastInputInfo: %v", err)
	}
	info := lastInputInfo{cbSize: uint32(unsafe.Sizeof(lastInputInfo{}))}
	ok, _, callErr := procGetLastInputInfo.Call(uintptr(unsafe.Pointer(&info)))
	if ok == 0 {
		return 0, unknownf("Windows did not say when the last input was: %v", callErr)
	}
	// The tick count read after the last input's, so that it is never
	// before it (see idleSinceTicks).
	now, _, _ := procGetTickCount.Call()
	return idleSinceTicks(uint32(now), info.dwTime), nil
}
