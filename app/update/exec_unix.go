//go:build unix

package update

import "syscall"

// execProgram replaces this process with exe (same process id, so a
// service manager or the start-up entry keeps tracking it).
func execProgram(exe string, args, env []string) error {
	return syscall.Exec(exe, append([]string{exe}, args...), env)
}
