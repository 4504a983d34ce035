// Package settings holds what the donor chooses (studio URL, VRAM budget,
// models folder, threads, start-up habits) and the credentials the studio
// hands out. It is a leaf: it imports neither the app, the studio session nor
// the engines, so both the desktop and the headless entry can use it.
package settings

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/adrg/xdg"
)

// AppDirName is the folder name used under the config and state homes.
const AppDirName = "studio-worker"

// DefaultStudioURL is the hosted studio an installed app talks to.
const DefaultStudioURL = "https://studio.minis.gg/"

// DefaultVRAMBudgetGB matches the reference worker's vram_threshold_gb.
const DefaultVRAMBudgetGB = 12.0

// Settings is what the donor can change. The TOML keys are the file format;
// keep them stable.
type Settings struct {
	StudioURL      string  `toml:"studio_url"`
	VRAMBudgetGB   float64 `toml:"vram_budget_gb"`
	ModelsDir      string  `toml:"models_dir"`
	Threads        int     `toml:"threads"` // 0 = auto: max(1, cores-1)
	StartAtLogin   bool    `toml:"start_at_login"`
	StartMinimised bool    `toml:"start_minimised"`
	LlamaLibDir    string  `toml:"llama_lib_dir"`
	SDLibPath      string  `toml:"sd_lib_path"`
	InstallID      string  `toml:"install_id"`
	// EngineKeepAliveMinutes is how long an idle engine process keeps its
	// model in memory before it exits and gives everything back: 0 is
	// DefaultEngineKeepAliveMinutes, -1 keeps it until a pause or the end.
	EngineKeepAliveMinutes int `toml:"engine_keep_alive_minutes"`
	// DiskReserveGB is the free space model downloads always leave on the
	// disk of the models folder: 0 is DefaultDiskReserveGB, a negative
	// value keeps none.
	DiskReserveGB float64 `toml:"disk_reserve_gb"`
	// Disk budget of the models folder (issue #12 item 4).
	// ModelsDiskBudgetGB is the most the models the worker downloaded may
	// take in the models folder: before a download, the ones used longest
	// ago are deleted to make room (never one in use or loaded, never the
	// donor's own files). 0 is no budget beyond DiskReserveGB.
	ModelsDiskBudgetGB float64 `toml:"models_disk_budget_gb"`
	// HistoryDays is how many days of finished jobs the job history keeps:
	// 0 is DefaultHistoryDays.
	HistoryDays int `toml:"history_days"`
	// Desktop notifications, each off by default: a job failed; the
	// studio turned this computer down or removed it; an engine crashed;
	// the studio has been unreachable for UnreachableNotifyAfter.
	NotifyJobFailed     bool `toml:"notify_job_failed"`
	NotifyStudioRefused bool `toml:"notify_studio_refused"`
	NotifyEngineCrashed bool `toml:"notify_engine_crashed"`
	NotifyUnreachable   bool `toml:"notify_unreachable"`
	// LocalAPIOff turns off the local API (the OpenAI-compatible routes on
	// 127.0.0.1 and the control routes `studio-worker status|pause|resume`
	// use); the zero value keeps it on.
	LocalAPIOff bool `toml:"local_api_off"`
	// LocalAPIPort is the loopback port of the local API: 0 is
	// DefaultLocalAPIPort. When it is taken, an ephemeral port is used.
	LocalAPIPort int `toml:"local_api_port"`

	// Updates (issue #14, package app/update). AutoUpdate checks the
	// signed release feed at start and every UpdateCheckHours, never
	// during a job, and installs a newer version the way this copy was
	// installed (or says how, where that needs the donor): on in Default.
	AutoUpdate bool `toml:"auto_update"`
	// UpdateCheckHours is the time between two checks: 0 is
	// DefaultUpdateCheckHours.
	UpdateCheckHours int `toml:"update_check_hours"`
	// UpdateFeedURL replaces the release feed's address (a mirror, a
	// test); "" is the built-in one. Whatever serves it, the feed must be
	// signed by a key compiled into the app.
	UpdateFeedURL string `toml:"update_feed_url"`

	// The donor's controls (issue 12): when the worker may take studio
	// jobs. See controls.go for their meaning, defaults and checks.
	OnlyWhenIdle     bool      `toml:"only_when_idle"`
	IdleAfterSeconds int       `toml:"idle_after_seconds"`
	PauseWhenGPUBusy bool      `toml:"pause_when_gpu_busy"`
	GPUBusySeconds   int       `toml:"gpu_busy_seconds"`
	GPUFreeSeconds   int       `toml:"gpu_free_seconds"`
	PausePrograms    string    `toml:"pause_programs"` // comma-separated
	MaxGPUTempC      float64   `toml:"max_gpu_temperature_c"`
	MaxGPUPowerW     float64   `toml:"max_gpu_power_w"`
	StopJobWhenBusy  bool      `toml:"stop_job_when_needed"`
	WorkHoursOn      bool      `toml:"work_hours_on"`
	WorkHours        WorkHours `toml:"work_hours"`
}

// DefaultUpdateCheckHours is how often the updater looks for a new
// version unless the donor chose otherwise.
const DefaultUpdateCheckHours = 6

// maxUpdateCheckHours bounds UpdateCheckHours (30 days).
const maxUpdateCheckHours = 720

// UpdateInterval resolves UpdateCheckHours: 0 (or out of range) is the
// default.
func (s Settings) UpdateInterval() time.Duration {
	h := s.UpdateCheckHours
	if h <= 0 || h > maxUpdateCheckHours {
		h = DefaultUpdateCheckHours
	}
	return time.Duration(h) * time.Hour
}

// DefaultHistoryDays is how long the job history keeps a finished job.
const DefaultHistoryDays = 90

// maxHistoryDays bounds HistoryDays (ten years).
const maxHistoryDays = 3650

// EffectiveHistoryDays resolves HistoryDays: 0 (or out of range) is the
// default.
func (s Settings) EffectiveHistoryDays() int {
	if s.HistoryDays <= 0 || s.HistoryDays > maxHistoryDays {
		return DefaultHistoryDays
	}
	return s.HistoryDays
}

// DefaultLocalAPIPort is the local API's port unless the donor chose one.
const DefaultLocalAPIPort = 4787

// APIPort resolves LocalAPIPort: 0 is DefaultLocalAPIPort.
func (s Settings) APIPort() int {
	if s.LocalAPIPort == 0 {
		return DefaultLocalAPIPort
	}
	return s.LocalAPIPort
}

// DefaultDiskReserveGB keeps room for the system and the donor's own files
// when a model download would otherwise fill the disk.
const DefaultDiskReserveGB = 2.0

// DiskReserveBytes resolves DiskReserveGB to bytes (GB = 2^30 bytes).
func (s Settings) DiskReserveBytes() uint64 {
	switch {
	case s.DiskReserveGB < 0 || math.IsNaN(s.DiskReserveGB):
		return 0
	case s.DiskReserveGB == 0:
		return uint64(DefaultDiskReserveGB * (1 << 30))
	case s.DiskReserveGB > maxDiskReserveGB:
		return maxDiskReserveGB << 30
	}
	return uint64(s.DiskReserveGB * (1 << 30))
}

const maxDiskReserveGB = 100_000

// ModelsDiskBudgetBytes resolves ModelsDiskBudgetGB to bytes (GB = 2^30
// bytes); 0 is no budget. An invalid value (Validate refuses it) is no
// budget too, so that a bad file never deletes models.
func (s Settings) ModelsDiskBudgetBytes() uint64 {
	if math.IsNaN(s.ModelsDiskBudgetGB) || s.ModelsDiskBudgetGB <= 0 || s.ModelsDiskBudgetGB > maxDiskReserveGB {
		return 0
	}
	return uint64(s.ModelsDiskBudgetGB * (1 << 30))
}

// ValidateModelsDiskBudget accepts 0 (no budget) up to 100 000 GB.
func ValidateModelsDiskBudget(gb float64) error {
	if math.IsNaN(gb) || math.IsInf(gb, 0) || gb < 0 || gb > maxDiskReserveGB {
		return &FieldError{FieldModelsDiskBudget, fmt.Sprintf("must be a number of GB between 0 (no budget) and %d", maxDiskReserveGB)}
	}
	return nil
}

// DefaultEngineKeepAliveMinutes is Ollama's keep-alive default.
const DefaultEngineKeepAliveMinutes = 5

// EngineKeepAlive resolves EngineKeepAliveMinutes: 0 is the default, a
// negative value is returned as -1 (never).
func (s Settings) EngineKeepAlive() time.Duration {
	switch {
	case s.EngineKeepAliveMinutes < 0:
		return -1
	case s.EngineKeepAliveMinutes == 0:
		return DefaultEngineKeepAliveMinutes * time.Minute
	}
	return time.Duration(s.EngineKeepAliveMinutes) * time.Minute
}

// Field names used in FieldError; they are the TOML keys so the UI and the
// file agree on what a field is called.
const (
	FieldStudioURL    = "studio_url"
	FieldVRAMBudgetGB = "vram_budget_gb"
	FieldModelsDir    = "models_dir"
	FieldThreads      = "threads"
	FieldLlamaLibDir  = "llama_lib_dir"
	FieldSDLibPath    = "sd_lib_path"
	FieldKeepAlive    = "engine_keep_alive_minutes"
	FieldDiskReserve  = "disk_reserve_gb"
	// FieldModelsDiskBudget is the models folder's disk budget.
	FieldModelsDiskBudget = "models_disk_budget_gb"
	FieldHistoryDays      = "history_days"
	FieldLocalAPIPort     = "local_api_port"
	FieldUpdateHours      = "update_check_hours"
	FieldUpdateFeed       = "update_feed_url"
)

// Default returns the settings of a fresh install. InstallID is left empty;
// Store.Load generates and persists it once.
func Default() Settings {
	return Settings{
		StudioURL:    DefaultStudioURL,
		VRAMBudgetGB: DefaultVRAMBudgetGB,
		ModelsDir:    defaultModelsDir(),
		AutoUpdate:   true,
	}
}

func defaultModelsDir() string {
	if home, err := os.UserHomeDir(); err == nil && home != "" {
		return filepath.Join(home, "models")
	}
	// Without a home folder the state home is the next best stable place.
	return filepath.Join(xdg.DataHome, AppDirName, "models")
}

// EffectiveThreads resolves Threads = 0 to max(1, cores-1), leaving one core
// for the donor.
func (s Settings) EffectiveThreads() int {
	if s.Threads > 0 {
		return s.Threads
	}
	return max(1, runtime.NumCPU()-1)
}

// FieldError says which setting is wrong and why, in words a donor
// understands.
type FieldError struct {
	Field  string // one of the Field* constants
	Reason string
}

func (e *FieldError) Error() string {
	return fieldLabel(e.Field) + ": " + e.Reason
}

func fieldLabel(f string) string {
	switch f {
	case FieldStudioURL:
		return "studio URL"
	case FieldVRAMBudgetGB:
		return "VRAM budget"
	case FieldModelsDir:
		return "models folder"
	case FieldThreads:
		return "threads"
	case FieldLlamaLibDir:
		return "llama.cpp library folder"
	case FieldSDLibPath:
		return "stable-diffusion library"
	case FieldKeepAlive:
		return "engine keep-alive"
	case FieldDiskReserve:
		return "disk reserve"
	case FieldModelsDiskBudget:
		return "models folder disk budget"
	case FieldLocalAPIPort:
		return "local API port"
	case FieldUpdateHours:
		return "update check interval"
	case FieldUpdateFeed:
		return "update feed"
	}
	if l := controlsFieldLabel(f); l != "" {
		return l
	}
	return f
}

// Validate checks every field and returns the first problem as a
// *FieldError. detectedVRAMGB is the probed total VRAM; 0 means unknown and
// then the budget is only required to be positive. Validating the models
// folder creates it (and a temporary file in it), because "can I write
// there" is only answered by trying.
func (s Settings) Validate(detectedVRAMGB float64) error {
	if err := ValidateStudioURL(s.StudioURL); err != nil {
		return err
	}
	switch {
	case math.IsNaN(s.VRAMBudgetGB) || math.IsInf(s.VRAMBudgetGB, 0):
		return &FieldError{FieldVRAMBudgetGB, "must be a number of GB"}
	case s.VRAMBudgetGB <= 0:
		return &FieldError{FieldVRAMBudgetGB, "must be more than 0 GB"}
	case detectedVRAMGB > 0 && s.VRAMBudgetGB > detectedVRAMGB:
		return &FieldError{FieldVRAMBudgetGB, fmt.Sprintf(
			"%.1f GB is more than this computer's graphics memory (%.1f GB)", s.VRAMBudgetGB, detectedVRAMGB)}
	}
	if err := ValidateModelsDir(s.ModelsDir); err != nil {
		return err
	}
	if err := ValidateThreads(s.Threads); err != nil {
		return err
	}
	if s.EngineKeepAliveMinutes < -1 || s.EngineKeepAliveMinutes > 24*60 {
		return &FieldError{FieldKeepAlive, "must be between -1 (never let go) and 1440 minutes (0 is the default, 5)"}
	}
	if math.IsNaN(s.DiskReserveGB) || math.IsInf(s.DiskReserveGB, 0) || s.DiskReserveGB > maxDiskReserveGB {
		return &FieldError{FieldDiskReserve, fmt.Sprintf("must be a number of GB up to %d (0 is the default, %g; below 0 keeps none)", maxDiskReserveGB, DefaultDiskReserveGB)}
	}
	if err := ValidateModelsDiskBudget(s.ModelsDiskBudgetGB); err != nil {
		return err
	}
	if s.HistoryDays < 0 || s.HistoryDays > maxHistoryDays {
		return &FieldError{FieldHistoryDays, fmt.Sprintf("must be between 1 and %d days (0 is the default, %d)", maxHistoryDays, DefaultHistoryDays)}
	}
	if s.LocalAPIPort < 0 || s.LocalAPIPort > 65535 {
		return &FieldError{FieldLocalAPIPort, fmt.Sprintf("must be a port between 1 and 65535 (0 is the default, %d)", DefaultLocalAPIPort)}
	}
	if s.UpdateCheckHours < 0 || s.UpdateCheckHours > maxUpdateCheckHours {
		return &FieldError{FieldUpdateHours, fmt.Sprintf("must be between 1 and %d hours (0 is the default, %d)", maxUpdateCheckHours, DefaultUpdateCheckHours)}
	}
	if f := strings.TrimSpace(s.UpdateFeedURL); f != "" {
		if u, err := url.Parse(f); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Hostname() == "" {
			return &FieldError{FieldUpdateFeed, fmt.Sprintf("%q is not a web address (https://...)", f)}
		}
	}
	if err := s.validateControls(); err != nil {
		return err
	}
	if s.LlamaLibDir != "" {
		if fi, err := os.Stat(s.LlamaLibDir); err != nil || !fi.IsDir() {
			return &FieldError{FieldLlamaLibDir, fmt.Sprintf("%q is not a folder", s.LlamaLibDir)}
		}
	}
	if s.SDLibPath != "" {
		if fi, err := os.Stat(s.SDLibPath); err != nil || fi.IsDir() {
			return &FieldError{FieldSDLibPath, fmt.Sprintf("%q is not a file", s.SDLibPath)}
		}
	}
	return nil
}

// ValidateThreads accepts 0 (automatic) up to the number of CPU cores.
func ValidateThreads(n int) error {
	if cores := runtime.NumCPU(); n < 0 || n > cores {
		return &FieldError{FieldThreads, fmt.Sprintf("must be between 0 (automatic) and %d, the number of CPU cores", cores)}
	}
	return nil
}

// ValidateStudioURL accepts an http or https URL with a host.
func ValidateStudioURL(raw string) error {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return &FieldError{FieldStudioURL, "is empty; enter an address such as " + DefaultStudioURL}
	}
	u, err := url.Parse(raw)
	if err != nil {
		return &FieldError{FieldStudioURL, fmt.Sprintf("%q is not a web address", raw)}
	}
	if s := strings.ToLower(u.Scheme); s != "http" && s != "https" {
		return &FieldError{FieldStudioURL, fmt.Sprintf("%q must start with https:// (or http:// for a studio on this network)", raw)}
	}
	if u.Hostname() == "" {
		return &FieldError{FieldStudioURL, fmt.Sprintf("%q has no host name", raw)}
	}
	return nil
}

// ValidateModelsDir creates dir when needed and proves it writable by
// creating and removing a temporary file in it.
func ValidateModelsDir(dir string) error {
	if strings.TrimSpace(dir) == "" {
		return &FieldError{FieldModelsDir, "is empty; choose a folder for downloaded models"}
	}
	dir = ExpandHome(dir)
	if !filepath.IsAbs(dir) {
		return &FieldError{FieldModelsDir, fmt.Sprintf("%q must be a full path", dir)}
	}
	var de *DirError
	if err := UsableDir(dir, 0o755); errors.As(err, &de) {
		switch de.Problem {
		case DirIsFile:
			return &FieldError{FieldModelsDir, fmt.Sprintf("%q is a file, not a folder", dir)}
		case DirCannotCreate:
			return &FieldError{FieldModelsDir, fmt.Sprintf("cannot create %q: %s", dir, plainErr(de.Err))}
		default:
			return &FieldError{FieldModelsDir, fmt.Sprintf("cannot write in %q: %s", dir, plainErr(de.Err))}
		}
	}
	return nil
}

// DirProblem is the step at which a folder turned out unusable.
type DirProblem int

// What UsableDir found.
const (
	DirIsFile DirProblem = iota + 1
	DirCannotCreate
	DirCannotWrite
)

// DirError says why a folder cannot be used. Its text leaves the folder
// out, so the caller names it in its own words.
type DirError struct {
	Problem DirProblem
	Err     error // the system's error, nil for DirIsFile
}

func (e *DirError) Error() string {
	switch e.Problem {
	case DirIsFile:
		return "it is a file, not a folder"
	case DirCannotCreate:
		return plainErr(e.Err)
	}
	return "cannot write there: " + plainErr(e.Err)
}

func (e *DirError) Unwrap() error { return e.Err }

// UsableDir creates dir (with perm) when needed and proves it is a
// writable folder by creating and removing a temporary file in it; the
// error is a *DirError. The models folder, the config folder and the dev
// studio's folders are all checked this way.
func UsableDir(dir string, perm os.FileMode) error {
	if fi, err := os.Stat(dir); err == nil && !fi.IsDir() {
		return &DirError{Problem: DirIsFile}
	}
	if err := os.MkdirAll(dir, perm); err != nil {
		return &DirError{Problem: DirCannotCreate, Err: err}
	}
	f, err := os.CreateTemp(dir, ".write-test-*")
	if err != nil {
		return &DirError{Problem: DirCannotWrite, Err: err}
	}
	name := f.Name()
	f.Close()
	os.Remove(name)
	return nil
}

// ExpandHome turns a leading "~" into the user's home folder, since donors
// type paths the way their shell shows them.
func ExpandHome(p string) string {
	if p != "~" && !strings.HasPrefix(p, "~/") && !strings.HasPrefix(p, `~\`) {
		return p
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return p
	}
	return filepath.Join(home, p[1:])
}

// plainErr drops the operation and path prefix of a *PathError, which the
// caller's message already names.
func plainErr(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// DefaultDir is where settings and the credentials file live:
// $XDG_CONFIG_HOME/studio-worker (or the platform's equivalent).
func DefaultDir() (string, error) {
	if xdg.ConfigHome == "" {
		return "", errors.New("settings: no config folder could be found for this user")
	}
	return filepath.Join(xdg.ConfigHome, AppDirName), nil
}
