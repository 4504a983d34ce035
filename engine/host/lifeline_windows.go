package host

import (
	"fmt"
	"os/exec"
	"sync"
	"unsafe"

	"golang.org/x/sys/windows"
)

// One job object per parent process, created with kill-on-close: when the
// parent ends, however it ends, Windows closes its last handle to the job
// and terminates every process in it.
var job struct {
	once sync.Once
	h    windows.Handle
	err  error
}

func killOnCloseJob() (windows.Handle, error) {
	job.once.Do(func() {
		h, err := windows.CreateJobObject(nil, nil)
		if err != nil {
			job.err = fmt.Errorf("cannot create a job object: %w", err)
			return
		}
		info := windows.JOBOBJECT_EXTENDED_LIMIT_INFORMATION{}
		info.BasicLimitInformation.LimitFlags = windows.JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
		if _, err := windows.SetInformationJobObject(h, windows.JobObjectExtendedLimitInformation,
			uintptr(unsafe.Pointer(&info)), uint32(unsafe.Sizeof(info))); err != nil {
			windows.CloseHandle(h)
			job.err = fmt.Errorf("cannot make the job object kill on close: %w", err)
			return
		}
		job.h = h
	})
	return job.h, job.err
}

// lifeline: the job object does the work, once the child is in it.
func lifeline(*exec.Cmd) {}

// adopt puts the started child into the parent's kill-on-close job object.
func adopt(cmd *exec.Cmd) error {
	h, err := killOnCloseJob()
	if err != nil {
		return err
	}
	p, err := windows.OpenProcess(windows.PROCESS_SET_QUOTA|windows.PROCESS_TERMINATE, false, uint32(cmd.Process.Pid))
	if err != nil {
		return fmt.Errorf("cannot open the engine process: %w", err)
	}
	defer windows.CloseHandle(p)
	if err := windows.AssignProcessToJobObject(h, p); err != nil {
		return fmt.Errorf("cannot tie the engine process to this one: %w", err)
	}
	return nil
}

func startCmd(cmd *exec.Cmd) error { return cmd.Start() }
