package testenv

import (
	"os"
	"os/exec"
	"syscall"
)

// setDeathSignal makes the kernel kill cmd's process when the thread that
// started it goes away, so an exiting test binary does not leave a registry
// running. (Go threads only exit when a goroutine locked to one ends without
// unlocking, which the callers of this package do not do.)
func setDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// lockFile takes an exclusive advisory lock on f, blocking until it is free.
func lockFile(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
}
