// Package assets holds the app icon and one tray icon per worker state,
// drawn by ./gen and embedded into the binary.
package assets

import _ "embed"

//go:generate go run ./gen -out .

// TrayState names the look of the tray icon.
type TrayState string

const (
	TrayIdle         TrayState = "idle"
	TrayWorking      TrayState = "working"
	TrayPaused       TrayState = "paused"
	TrayError        TrayState = "error"
	TrayDisconnected TrayState = "disconnected"
)

var (
	//go:embed icon.png
	Icon []byte

	//go:embed tray-idle.png
	trayIdle []byte
	//go:embed tray-working.png
	trayWorking []byte
	//go:embed tray-paused.png
	trayPaused []byte
	//go:embed tray-error.png
	trayError []byte
	//go:embed tray-disconnected.png
	trayDisconnected []byte
)

// Tray returns the PNG for a state; an unknown state gets the
// disconnected icon, which claims nothing.
func Tray(s TrayState) []byte {
	switch s {
	case TrayIdle:
		return trayIdle
	case TrayWorking:
		return trayWorking
	case TrayPaused:
		return trayPaused
	case TrayError:
		return trayError
	default:
		return trayDisconnected
	}
}
