package fetch

import (
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// setTimes sets the access and modification times of an open file:
// utimensat on the descriptor with no path (futimens), where x/sys's
// Futimes goes through /proc/self/fd by name.
func setTimes(f *os.File, t time.Time) error {
	ts := [2]unix.Timespec{unix.NsecToTimespec(t.UnixNano()), unix.NsecToTimespec(t.UnixNano())}
	_, _, errno := unix.Syscall6(unix.SYS_UTIMENSAT, f.Fd(), 0, uintptr(unsafe.Pointer(&ts)), 0, 0, 0)
	if errno != 0 {
		return &os.PathError{Op: "chtimes", Path: f.Name(), Err: errno}
	}
	return nil
}
