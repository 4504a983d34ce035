package settings

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/minisgg/studio-worker/controls"
)

func TestValidateControls(t *testing.T) {
	cases := []struct {
		name  string
		edit  func(*Settings)
		field string
		msg   string
	}{
		{"idle negative", func(s *Settings) { s.IdleAfterSeconds = -1 }, FieldIdleAfter, "0 is the default, 120"},
		{"busy too long", func(s *Settings) { s.GPUBusySeconds = 86401 }, FieldGPUBusy, "0 is the default, 10"},
		{"free negative", func(s *Settings) { s.GPUFreeSeconds = -5 }, FieldGPUFree, "0 is the default, 60"},
		{"program path", func(s *Settings) { s.PausePrograms = "steam, /usr/bin/blender" }, FieldPrograms, `"/usr/bin/blender" is a path; write only the program's name, such as "blender"`},
		{"windows path", func(s *Settings) { s.PausePrograms = `C:\Games\game.exe` }, FieldPrograms, `such as "game.exe"`},
		{"hot", func(s *Settings) { s.MaxGPUTempC = 151 }, FieldMaxGPUTemp, "up to 150"},
		{"cold", func(s *Settings) { s.MaxGPUTempC = -1 }, FieldMaxGPUTemp, "0 is no ceiling"},
		{"power", func(s *Settings) { s.MaxGPUPowerW = 5001 }, FieldMaxGPUPower, "up to 5000"},
		{"hours", func(s *Settings) { s.WorkHours.Friday = "18-23" }, "work_hours.friday", `"18" is not a time such as 09:00`},
		{"hours off but bad", func(s *Settings) { s.WorkHoursOn = false; s.WorkHours.Sunday = "25:00-26:00" }, "work_hours.sunday", "is not a time between"},
		{"on with no hours", func(s *Settings) { s.WorkHoursOn = true }, "work_hours.monday", "would never take a job"},
	}
	for _, c := range cases {
		s := Default()
		s.ModelsDir = t.TempDir()
		c.edit(&s)
		err := s.Validate(0)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != c.field || !strings.Contains(fe.Reason, c.msg) {
			t.Errorf("%s: %v, want field %s with %q", c.name, err, c.field, c.msg)
		}
	}
	if got := (&FieldError{Field: "work_hours.friday", Reason: "x"}).Error(); got != "work hours on Friday: x" {
		t.Errorf("label %q", got)
	}
	ok := Default()
	ok.ModelsDir = t.TempDir()
	ok.PausePrograms = "blender, game.exe,, steam"
	ok.WorkHoursOn = true
	ok.WorkHours.Monday = "18:00-23:00"
	ok.MaxGPUTempC, ok.MaxGPUPowerW = 83, 250
	if err := ok.Validate(0); err != nil {
		t.Fatal(err)
	}
}

func TestControlsConfig(t *testing.T) {
	s := Default()
	c := s.Controls()
	if c.OnlyWhenIdle || c.Schedule != nil || c.Programs != nil || c.IdleAfter != 0 || c.StopJob {
		t.Fatalf("defaults: %+v", c)
	}
	s.OnlyWhenIdle, s.IdleAfterSeconds = true, 300
	s.PauseWhenGPUBusy, s.GPUBusySeconds, s.GPUFreeSeconds = true, 20, 90
	s.PausePrograms = " blender ,game.exe"
	s.MaxGPUTempC, s.MaxGPUPowerW = 80, 200
	s.StopJobWhenBusy = true
	s.WorkHoursOn = true
	s.WorkHours.Monday = "22:00-02:00"
	c = s.Controls()
	if !c.OnlyWhenIdle || c.IdleAfter != 300*time.Second || c.BusyAfter != 20*time.Second || c.FreeAfter != 90*time.Second ||
		strings.Join(c.Programs, "|") != "blender|game.exe" || c.MaxTemperatureC != 80 || c.MaxPowerW != 200 || !c.StopJob || c.Schedule == nil {
		t.Fatalf("config: %+v", c)
	}
	if controls.FormatSpans(c.Schedule.Days[time.Tuesday]) != "00:00-02:00" {
		t.Fatalf("Monday night runs into Tuesday: %+v", c.Schedule.Days)
	}
}

func TestControlsRoundTrip(t *testing.T) {
	dir := t.TempDir()
	st := NewStore(dir)
	s, err := st.Load()
	if err != nil {
		t.Fatal(err)
	}
	s.OnlyWhenIdle, s.PausePrograms, s.WorkHoursOn = true, "blender, steam", true
	s.WorkHours.Monday, s.WorkHours.Sunday = "09:00-17:00", "all day"
	if err := st.Save(s); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(st.Path())
	for _, want := range []string{"only_when_idle = true", `pause_programs = "blender, steam"`, "[work_hours]", `monday = "09:00-17:00"`} {
		if !strings.Contains(string(data), want) {
			t.Errorf("file lacks %q:\n%s", want, data)
		}
	}
	back, err := st.Load()
	if err != nil || back != s {
		t.Fatalf("read back %+v, %v", back, err)
	}
}
