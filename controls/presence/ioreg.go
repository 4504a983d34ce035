package presence

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// IORegSource is what the macOS probe's Source says.
const IORegSource = "macOS IOHIDSystem HIDIdleTime"

// IOReg reads macOS's HIDIdleTime (nanoseconds since the last keyboard,
// mouse or trackpad input) from `ioreg -c IOHIDSystem`. Each call runs
// ioreg once (about 20 ms); there is no connection to keep.
type IOReg struct {
	// Command is the ioreg to run; "" means "ioreg" on $PATH.
	Command string
}

// Source names IOHIDSystem's HIDIdleTime.
func (p *IOReg) Source() string { return IORegSource }

// Close does nothing: IOReg holds nothing open.
func (p *IOReg) Close() error { return nil }

// IdleTime runs ioreg and reads HIDIdleTime. Errors: ioreg is missing,
// fails, or prints no HIDIdleTime (all wrap controls.ErrUnknown); ctx's
// end, which also stops ioreg.
func (p *IOReg) IdleTime(ctx context.Context) (time.Duration, error) {
	name := p.Command
	if name == "" {
		name = "ioreg"
	}
	// -r -d 1: the IOHIDSystem entries only, not the whole tree above
	// them; -k HIDIdleTime: that property only.
	out, err := exec.CommandContext(ctx, name, "-c", "IOHIDSystem", "-r", "-d", "1", "-k", "HIDIdleTime").Output()
	if ctx.Err() != nil {
		return 0, ctx.Err()
	}
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && len(ee.Stderr) > 0 {
			return 0, unknownf("ioreg failed: %v: %s", err, strings.TrimSpace(string(ee.Stderr)))
		}
		return 0, unknownf("cannot run ioreg: %v", err)
	}
	return parseHIDIdleTime(out)
}

// parseHIDIdleTime finds the `"HIDIdleTime" = N` lines (N in ns) of
// ioreg's output and returns the smallest, the most recent input where
// several HID systems are listed. Errors (wrapping controls.ErrUnknown):
// no such line, or a value that is not a count of nanoseconds.
func parseHIDIdleTime(out []byte) (time.Duration, error) {
	const key = `"HIDIdleTime" = `
	found := false
	var least uint64
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		_, value, ok := strings.Cut(sc.Text(), key)
		if !ok {
			continue
		}
		value = strings.TrimSpace(value)
		ns, err := strconv.ParseUint(value, 10, 63)
		if err != nil {
			return 0, unknownf("ioreg printed a HIDIdleTime that is not a time in nanoseconds: %q", value)
		}
		if !found || ns < least {
			least, found = ns, true
		}
	}
	if !found {
		return 0, unknownf("ioreg lists no HIDIdleTime for IOHIDSystem")
	}
	return time.Duration(least), nil
}
