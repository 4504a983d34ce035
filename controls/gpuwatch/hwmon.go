package gpuwatch

import (
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

var cardName = regexp.MustCompile(`^card[0-9]+$`)

// drmCard is one DRM card under <sys>/class/drm whose driver is not
// NVIDIA's own (NVML and nvidia-smi read those).
type drmCard struct {
	name   string // "card0"
	driver string // "amdgpu", "i915", "xe"
	dir    string // <sys>/class/drm/card0/device
}

// drmCards lists the cards under sysRoot/class/drm and their drivers
// (the base name of device/driver), leaving out "nvidia".
func drmCards(sysRoot string) []drmCard {
	base := filepath.Join(sysRoot, "class", "drm")
	ents, err := os.ReadDir(base)
	if err != nil {
		return nil
	}
	var out []drmCard
	for _, e := range ents {
		if !cardName.MatchString(e.Name()) {
			continue
		}
		dev := filepath.Join(base, e.Name(), "device")
		link, err := os.Readlink(filepath.Join(dev, "driver"))
		if err != nil {
			continue
		}
		driver := filepath.Base(link)
		if driver == "nvidia" {
			continue
		}
		out = append(out, drmCard{name: e.Name(), driver: driver, dir: dev})
	}
	return out
}

// drmDrivers names the drivers of drmCards, e.g. ["amdgpu"].
func drmDrivers(sysRoot string) []string {
	var out []string
	for _, c := range drmCards(sysRoot) {
		out = append(out, c.driver)
	}
	return out
}

// hwmonReadings reads the cards' hwmon sensors (Documentation/hwmon/
// sysfs-interface.rst; amdgpu's in Documentation/gpu/amdgpu/thermal.rst):
// the core temperature is the temp*_input labelled "edge" (amdgpu's die
// edge; "junction" is its hottest spot and "mem" the memory), else the
// one labelled "pkg" (Intel xe's GPU package; "vram" is its memory), else
// the first temp*_input, in millidegrees Celsius; the power is power1_average, else
// power1_input, in microwatts. The hottest card's temperature and the
// highest power are returned; ok flags say which were found.
func hwmonReadings(cards []drmCard) (tempC float64, tempOK bool, powerW float64, powerOK bool) {
	for _, c := range cards {
		mons, _ := filepath.Glob(filepath.Join(c.dir, "hwmon", "hwmon*"))
		for _, m := range mons {
			if t, ok := hwmonTemp(m); ok && (!tempOK || t > tempC) {
				tempC, tempOK = t, true
			}
			for _, f := range []string{"power1_average", "power1_input"} {
				if uw, ok := readSysInt(filepath.Join(m, f)); ok {
					if w := float64(uw) / 1e6; !powerOK || w > powerW {
						powerW, powerOK = w, true
					}
					break
				}
			}
		}
	}
	return tempC, tempOK, powerW, powerOK
}

func hwmonTemp(dir string) (float64, bool) {
	labels, _ := filepath.Glob(filepath.Join(dir, "temp*_label"))
	for _, want := range []string{"edge", "pkg"} {
		for _, l := range labels {
			b, err := os.ReadFile(l)
			if err != nil || strings.TrimSpace(string(b)) != want {
				continue
			}
			if v, ok := readSysInt(strings.TrimSuffix(l, "_label") + "_input"); ok {
				return float64(v) / 1000, true
			}
		}
	}
	inputs, _ := filepath.Glob(filepath.Join(dir, "temp*_input"))
	sort.Strings(inputs) // temp1_input first
	for _, in := range inputs {
		if v, ok := readSysInt(in); ok {
			return float64(v) / 1000, true
		}
	}
	return 0, false
}

// readSysInt reads a sysfs file holding one integer. A sensor that is off
// (a sleeping GPU answers EINVAL or ENODATA) reads as absent.
func readSysInt(path string) (int64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return v, err == nil
}
