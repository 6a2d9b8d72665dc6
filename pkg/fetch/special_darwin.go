package fetch

import "errors"

// makesNodes says whether this system can create fifos and device nodes
// relative to a directory descriptor. x/sys/unix has neither mkfifoat nor
// mknodat for darwin, and the path-based mkfifo/mknod would follow
// symlinks in the parent directories out of the output directory, so
// such entries are refused here.
const makesNodes = false

// errNoNodes is what mkfifoat and mknodat return; special refuses such
// entries before calling them.
var errNoNodes = errors.New("fifos and device nodes cannot be created on darwin")

func mkfifoat(int, string, uint32) error          { return errNoNodes }
func mknodat(int, string, uint32, int, int) error { return errNoNodes }
