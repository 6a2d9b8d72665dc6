//go:build darwin || freebsd || netbsd || openbsd

package fetch

import (
	"os"

	"golang.org/x/sys/unix"
)

// defaultNameMax is NAME_MAX of darwin and the BSDs (APFS, HFS+, UFS, ZFS),
// used when the output directory's filesystem does not say.
const defaultNameMax = 255

// pcNameMax is _PC_NAME_MAX, the pathconf(2) variable naming the longest
// file name, from <sys/unistd.h> (4 on darwin, FreeBSD, NetBSD and
// OpenBSD alike); x/sys/unix has Fpathconf but not the constant.
const pcNameMax = 4

// nameMax returns the longest file name the filesystem of the output
// directory holds (fpathconf's _PC_NAME_MAX; these systems' statfs has no
// common field for it).
func nameMax(root *os.Root) int {
	f, err := root.Open(".")
	if err != nil {
		return defaultNameMax
	}
	defer f.Close()
	n, err := unix.Fpathconf(int(f.Fd()), pcNameMax)
	if err != nil || n <= 0 {
		return defaultNameMax
	}
	return n
}
