package settings

import (
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"time"

	"github.com/minisgg/studio-worker/controls"
)

// WorkHours are the week's hours when the worker may take studio jobs,
// one text per day as controls.ParseDay reads it: "09:00-17:00,
// 20:00-24:00", "all day", or "" for none that day. They apply only while
// Settings.WorkHoursOn; the times are the computer's local time.
type WorkHours struct {
	Monday    string `toml:"monday"`
	Tuesday   string `toml:"tuesday"`
	Wednesday string `toml:"wednesday"`
	Thursday  string `toml:"thursday"`
	Friday    string `toml:"friday"`
	Saturday  string `toml:"saturday"`
	Sunday    string `toml:"sunday"`
}

// Days returns the texts indexed by time.Weekday (Sunday first).
func (w WorkHours) Days() [7]string {
	return [7]string{w.Sunday, w.Monday, w.Tuesday, w.Wednesday, w.Thursday, w.Friday, w.Saturday}
}

// Day returns a pointer to the text of weekday d, for editors.
func (w *WorkHours) Day(d time.Weekday) *string {
	return [7]*string{&w.Sunday, &w.Monday, &w.Tuesday, &w.Wednesday, &w.Thursday, &w.Friday, &w.Saturday}[d]
}

// Field names of the controls' settings (the TOML keys). A work-hours
// problem names its day: "work_hours.monday".
const (
	FieldIdleAfter   = "idle_after_seconds"
	FieldGPUBusy     = "gpu_busy_seconds"
	FieldGPUFree     = "gpu_free_seconds"
	FieldPrograms    = "pause_programs"
	FieldMaxGPUTemp  = "max_gpu_temperature_c"
	FieldMaxGPUPower = "max_gpu_power_w"
	FieldWorkHours   = "work_hours"
)

// FieldWorkHoursDay is the field name of one day's work hours.
func FieldWorkHoursDay(d time.Weekday) string {
	return FieldWorkHours + "." + strings.ToLower(d.String())
}

// Bounds of the controls' numbers.
const (
	maxControlSeconds = 24 * 60 * 60
	maxGPUTempC       = 150
	maxGPUPowerW      = 5000
)

func controlsFieldLabel(f string) string {
	switch f {
	case FieldIdleAfter:
		return "away after"
	case FieldGPUBusy:
		return "GPU busy for"
	case FieldGPUFree:
		return "GPU free for"
	case FieldPrograms:
		return "programs"
	case FieldMaxGPUTemp:
		return "GPU temperature ceiling"
	case FieldMaxGPUPower:
		return "GPU power ceiling"
	}
	if day, ok := strings.CutPrefix(f, FieldWorkHours+"."); ok {
		return "work hours on " + strings.ToUpper(day[:1]) + day[1:]
	}
	return ""
}

// ValidateMaxGPUTemp checks the GPU temperature ceiling in °C: 0 (no
// ceiling) up to maxGPUTempC; a *FieldError for FieldMaxGPUTemp otherwise.
func ValidateMaxGPUTemp(v float64) error {
	if math.IsNaN(v) || v < 0 || v > maxGPUTempC {
		return &FieldError{FieldMaxGPUTemp, fmt.Sprintf("must be a temperature in °C up to %d (0 is no ceiling)", maxGPUTempC)}
	}
	return nil
}

// ValidateMaxGPUPower checks the GPU power ceiling in watts: 0 (no
// ceiling) up to maxGPUPowerW; a *FieldError for FieldMaxGPUPower
// otherwise.
func ValidateMaxGPUPower(v float64) error {
	if math.IsNaN(v) || v < 0 || v > maxGPUPowerW {
		return &FieldError{FieldMaxGPUPower, fmt.Sprintf("must be a power in watts up to %d (0 is no ceiling)", maxGPUPowerW)}
	}
	return nil
}

// ValidateControlSeconds checks one of the controls' waits in seconds
// (field: FieldIdleAfter, FieldGPUBusy or FieldGPUFree): 0 (the default)
// up to maxControlSeconds; a *FieldError for field otherwise.
func ValidateControlSeconds(field string, v int) error {
	def := controls.DefaultIdleAfter
	switch field {
	case FieldGPUBusy:
		def = controls.DefaultBusyAfter
	case FieldGPUFree:
		def = controls.DefaultFreeAfter
	}
	if v < 0 || v > maxControlSeconds {
		return &FieldError{field, fmt.Sprintf("must be between 1 and %d seconds (0 is the default, %d)", maxControlSeconds, int(def/time.Second))}
	}
	return nil
}

func (s Settings) validateControls() error {
	if err := ValidateControlSeconds(FieldIdleAfter, s.IdleAfterSeconds); err != nil {
		return err
	}
	if err := ValidateControlSeconds(FieldGPUBusy, s.GPUBusySeconds); err != nil {
		return err
	}
	if err := ValidateControlSeconds(FieldGPUFree, s.GPUFreeSeconds); err != nil {
		return err
	}
	if err := ValidatePrograms(s.PausePrograms); err != nil {
		return err
	}
	if err := ValidateMaxGPUTemp(s.MaxGPUTempC); err != nil {
		return err
	}
	if err := ValidateMaxGPUPower(s.MaxGPUPowerW); err != nil {
		return err
	}
	days := s.WorkHours.Days()
	for d := range 7 {
		if _, _, err := controls.ParseDay(days[d]); err != nil {
			return &FieldError{FieldWorkHoursDay(time.Weekday(d)), err.Error()}
		}
	}
	if s.WorkHoursOn && days == ([7]string{}) {
		return &FieldError{FieldWorkHoursDay(time.Monday), "no day has work hours, so the worker would never take a job; enter hours such as 18:00-23:00, or turn the work hours off"}
	}
	return nil
}

// Programs splits PausePrograms ("blender, steam, game.exe") into names.
func (s Settings) Programs() []string {
	var out []string
	for p := range strings.SplitSeq(s.PausePrograms, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// ValidatePrograms accepts executables' names separated by commas
// ("blender, game.exe"): names only, no folders.
func ValidatePrograms(list string) error {
	for p := range strings.SplitSeq(list, ",") {
		t := strings.TrimSpace(p)
		if t != "" && (strings.ContainsAny(t, `/\`) || filepath.Base(t) != t) {
			return &FieldError{FieldPrograms, fmt.Sprintf("%q is a path; write only the program's name, such as %q", t, filepath.Base(strings.ReplaceAll(t, `\`, "/")))}
		}
	}
	return nil
}

// Controls turns the controls' settings into the decision's Config: the
// defaults for zero values, the week's hours when they are on. Settings
// that fail Validate give what can be read of them (a day that cannot be
// read has no hours).
func (s Settings) Controls() controls.Config {
	c := controls.Config{
		OnlyWhenIdle:     s.OnlyWhenIdle,
		IdleAfter:        time.Duration(max(0, s.IdleAfterSeconds)) * time.Second,
		PauseWhenGPUBusy: s.PauseWhenGPUBusy,
		BusyAfter:        time.Duration(max(0, s.GPUBusySeconds)) * time.Second,
		FreeAfter:        time.Duration(max(0, s.GPUFreeSeconds)) * time.Second,
		MaxTemperatureC:  max(0, s.MaxGPUTempC),
		MaxPowerW:        max(0, s.MaxGPUPowerW),
		StopJob:          s.StopJobWhenBusy,
	}
	c.Programs = s.Programs()
	if s.WorkHoursOn {
		days := s.WorkHours.Days()
		for d := range days {
			if _, _, err := controls.ParseDay(days[d]); err != nil {
				days[d] = ""
			}
		}
		sch, _ := controls.ParseWeek(days)
		c.Schedule = &sch
	}
	return c
}
