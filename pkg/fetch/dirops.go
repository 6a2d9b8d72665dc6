package fetch

import (
	"os"

	"golang.org/x/sys/unix"
)

// dirOps are the per-file operations in one output directory. Two kinds:
// dirfdOps works on base names relative to the directory's open file
// descriptor (one *at system call each, never following a final symlink);
// rootOps goes through the output os.Root with the full relative name,
// for directories beyond maxDirHandles. The directory descriptor itself
// was opened through the os.Root, so neither can leave the output
// directory, and base names are checked (no "/", no "..") before use.
type dirOps interface {
	create(name string) (*os.File, error) // exclusively, read-write
	open(name string) (*os.File, error)   // for reading
	regularSize(name string) (size int64, regular bool, err error)
	rename(from, to string) error
	remove(name string) error
}

type rootOps struct{ r *os.Root }

func (o rootOps) create(name string) (*os.File, error) {
	return o.r.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
}
func (o rootOps) open(name string) (*os.File, error) { return o.r.Open(name) }
func (o rootOps) regularSize(name string) (int64, bool, error) {
	fi, err := o.r.Lstat(name)
	if err != nil {
		return 0, false, err
	}
	return fi.Size(), fi.Mode().IsRegular(), nil
}
func (o rootOps) rename(from, to string) error { return o.r.Rename(from, to) }
func (o rootOps) remove(name string) error     { return o.r.Remove(name) }

type dirfdOps struct{ dir *os.File }

func (o dirfdOps) fd() int { return int(o.dir.Fd()) }

func (o dirfdOps) create(name string) (*os.File, error) {
	fd, err := unix.Openat(o.fd(), name, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, &os.PathError{Op: "create", Path: name, Err: err}
	}
	return os.NewFile(uintptr(fd), name), nil
}

func (o dirfdOps) open(name string) (*os.File, error) {
	fd, err := unix.Openat(o.fd(), name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: name, Err: err}
	}
	return os.NewFile(uintptr(fd), name), nil
}

func (o dirfdOps) regularSize(name string) (int64, bool, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(o.fd(), name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return 0, false, &os.PathError{Op: "lstat", Path: name, Err: err}
	}
	return st.Size, st.Mode&unix.S_IFMT == unix.S_IFREG, nil
}

func (o dirfdOps) rename(from, to string) error {
	if err := unix.Renameat(o.fd(), from, o.fd(), to); err != nil {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: err}
	}
	return nil
}

func (o dirfdOps) remove(name string) error {
	if err := unix.Unlinkat(o.fd(), name, 0); err != nil {
		return &os.PathError{Op: "remove", Path: name, Err: err}
	}
	return nil
}

// openDir opens directory base in parent, failing when base is anything
// else, a symlink to a directory included.
func openDir(parent *os.File, base string) (*os.File, error) {
	fd, err := unix.Openat(int(parent.Fd()), base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: base, Err: err}
	}
	return os.NewFile(uintptr(fd), base), nil
}
