//go:build darwin || freebsd || netbsd || openbsd

package fetch

import (
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// setTimes sets the access and modification times of an open file with
// futimes(2) on the descriptor, no path involved. x/sys/unix has no
// futimens for these systems (darwin allows no raw system calls), so the
// times are kept to the microsecond, the finest futimes takes.
func setTimes(f *os.File, t time.Time) error {
	tv := unix.NsecToTimeval(t.UnixNano())
	if err := unix.Futimes(int(f.Fd()), []unix.Timeval{tv, tv}); err != nil {
		return &os.PathError{Op: "chtimes", Path: f.Name(), Err: err}
	}
	return nil
}
