package update

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// windowsRestart writes the script that waits for this app to quit (the
// installer cannot replace a running program: its EnsureNotRunning gives up
// in a silent install), runs the new installer silently with the llama.cpp
// runtime this install has, and starts the app again with the same
// arguments. Restart.Do starts it detached; the caller then exits.
func (u *Updater) windowsRestart(version, setup string, args []string) (*Restart, error) {
	exe := u.cfg.Install.Exe
	script := InstallerScript(setup, exe, args, os.Getpid(), windowsRuntime(u.cfg.Install.Dir), version)
	path := filepath.Join(u.cfg.WorkDir, "update-"+version+".cmd")
	if err := os.WriteFile(path, []byte(script), 0o600); err != nil {
		return nil, fmt.Errorf("cannot write the installer's script %s: %w; nothing was installed", path, err)
	}
	return &Restart{Exe: exe, Args: args, version: version, start: func() error { return startDetached(path) }}, nil
}

// windowsRuntime says which llama.cpp runtime the installer put in lib\
// (its /RUNTIME= choice): "vulkan", "cuda", or "" for the default (CPU).
func windowsRuntime(dir string) string {
	switch {
	case fileExists(filepath.Join(dir, "lib", "ggml-cuda.dll")):
		return "cuda"
	case fileExists(filepath.Join(dir, "lib", "ggml-vulkan.dll")):
		return "vulkan"
	}
	return ""
}

// InstallerScript is the cmd.exe script of a Windows update: it waits
// (up to about two minutes) for process pid to end, runs setup silently
// (/S; /RUNTIME=rt when rt is set, as packaging/windows/installer.nsi
// reads it), starts exe with args, and deletes itself. Lines end in CRLF.
func InstallerScript(setup, exe string, args []string, pid int, rt, version string) string {
	var b strings.Builder
	line := func(s string) { b.WriteString(s + "\r\n") }
	line("@echo off")
	line("rem Studio Worker update to " + version + ", written by the running app:")
	line("rem wait for it to quit, run the new installer silently, start it again.")
	line("set tries=0")
	line(":wait")
	line(fmt.Sprintf(`tasklist /FI "PID eq %d" /NH 2>NUL | find " %d " >NUL`, pid, pid))
	line("if errorlevel 1 goto install")
	line("set /a tries+=1")
	line("if %tries% GEQ 120 goto install")
	line("ping -n 2 127.0.0.1 >NUL")
	line("goto wait")
	line(":install")
	// start /wait: the script goes on once the installer has ended (a
	// program named straight in a script would end the script if it
	// were itself a script).
	inst := `start "" /wait ` + winQuote(setup) + " /S"
	if rt != "" {
		inst += " /RUNTIME=" + rt
	}
	line(inst)
	start := `start "" ` + winQuote(exe)
	for _, a := range args {
		start += " " + winQuote(a)
	}
	line(start)
	line(`del "%~f0"`)
	return b.String()
}

// winQuote quotes one cmd.exe argument (a path or flag); percent signs
// are doubled so the script does not expand them.
func winQuote(s string) string {
	s = strings.ReplaceAll(s, "%", "%%")
	if s != "" && !strings.ContainsAny(s, " \t&()[]{}^=;!'+,`~\"<>|") {
		return s
	}
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}
