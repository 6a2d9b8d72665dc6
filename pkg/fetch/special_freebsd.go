package fetch

import "golang.org/x/sys/unix"

// makesNodes says whether this system can create fifos and device nodes
// relative to a directory descriptor.
const makesNodes = true

// mkfifoat creates fifo name in directory dirfd. x/sys/unix has no
// Mkfifoat for FreeBSD; its mknodat makes a fifo of S_IFIFO with device 0,
// as POSIX asks.
func mkfifoat(dirfd int, name string, mode uint32) error {
	return unix.Mknodat(dirfd, name, mode|unix.S_IFIFO, 0)
}

// mknodat creates device node name in directory dirfd; mode carries the
// type (S_IFCHR or S_IFBLK).
func mknodat(dirfd int, name string, mode uint32, major, minor int) error {
	return unix.Mknodat(dirfd, name, mode, unix.Mkdev(uint32(major), uint32(minor)))
}
