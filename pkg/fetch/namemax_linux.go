package fetch

import (
	"os"

	"golang.org/x/sys/unix"
)

// defaultNameMax is NAME_MAX of Linux filesystems, used when the output
// directory's filesystem does not say.
const defaultNameMax = 255

// nameMax returns the longest file name the filesystem of the output
// directory holds (statfs's f_namelen).
func nameMax(root *os.Root) int {
	f, err := root.Open(".")
	if err != nil {
		return defaultNameMax
	}
	defer f.Close()
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &st); err != nil || st.Namelen <= 0 {
		return defaultNameMax
	}
	return int(st.Namelen)
}
