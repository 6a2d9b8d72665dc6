package fetch

import "golang.org/x/sys/unix"

// makesNodes says whether this system can create fifos and device nodes
// relative to a directory descriptor.
const makesNodes = true

// mkfifoat creates fifo name in directory dirfd.
func mkfifoat(dirfd int, name string, mode uint32) error {
	return unix.Mkfifoat(dirfd, name, mode)
}

// mknodat creates device node name in directory dirfd; mode carries the
// type (S_IFCHR or S_IFBLK).
func mknodat(dirfd int, name string, mode uint32, major, minor int) error {
	return unix.Mknodat(dirfd, name, mode, int(unix.Mkdev(uint32(major), uint32(minor))))
}
