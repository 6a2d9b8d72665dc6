package fetch

import (
	"fmt"
	"os"
	"strings"

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

// longComponent says which part of name (clean, relative) is longer than
// max bytes, or returns "". Such an entry cannot be written, so it is
// refused before anything is downloaded for it.
func longComponent(name string, max int) string {
	for rest := name; rest != ""; {
		var part string
		part, rest, _ = strings.Cut(rest, "/")
		if len(part) > max {
			return fmt.Sprintf("name has a part of %d bytes (%.16s...), longer than the %d bytes a file name may have on the output directory's filesystem", len(part), part, max)
		}
	}
	return ""
}
