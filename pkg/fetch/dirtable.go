package fetch

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"sync"

	"golang.org/x/sys/unix"
)

// dirTable holds open descriptors of the output tree's directories for the
// length of a run, each opened from its parent's with one openat. Going
// through the os.Root instead resolves every component of a path for each
// call: making, opening and finishing the 1,672 directories of a GOROOT
// layer took 35k openat and as many close calls that way.
//
// Each component is opened with O_NOFOLLOW|O_DIRECTORY. Where that meets
// a symlink (or the table is full), the os.Root resolves the path instead,
// as before: it follows symlinks that stay inside the output directory and
// refuses the others. The table holds at most maxDirHandles descriptors;
// beyond that, get returns nil and callers go through the root by path.
type dirTable struct {
	root *os.Root
	max  int

	mu  sync.Mutex
	fds map[string]*os.File // by clean relative name, "." for the root
}

func newDirTable(root *os.Root) *dirTable {
	return &dirTable{root: root, max: int(maxDirHandles()), fds: map[string]*os.File{}}
}

// get returns an open descriptor of directory dir, kept until close, or
// nil when the table is full.
func (d *dirTable) get(dir string) (*os.File, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.getLocked(dir)
}

func (d *dirTable) getLocked(dir string) (*os.File, error) {
	if f, ok := d.fds[dir]; ok {
		return f, nil
	}
	if len(d.fds) >= d.max {
		return nil, nil
	}
	var f *os.File
	var err error
	if dir == "." {
		f, err = d.root.Open(".")
	} else {
		var parent *os.File
		parent, err = d.getLocked(path.Dir(dir))
		if err == nil && parent != nil {
			f, err = openDir(parent, path.Base(dir))
		}
		if parent == nil && err == nil || errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
			f, err = openDirInRoot(d.root, dir)
		}
	}
	if err != nil {
		return nil, err
	}
	if len(d.fds) >= d.max { // parents took the last places
		f.Close()
		return nil, nil
	}
	d.fds[dir] = f
	return f, nil
}

// mkdir makes directory dir, and its parents when missing, and reports
// whether this run created it (see engine.mkdir).
func (d *dirTable) mkdir(dir string) (fresh bool, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.mkdirLocked(dir)
}

func (d *dirTable) mkdirLocked(dir string) (fresh bool, err error) {
	if dir == "." {
		return false, nil
	}
	if _, ok := d.fds[dir]; ok {
		return false, nil
	}
	parentDir := path.Dir(dir)
	parent, err := d.getLocked(parentDir)
	if errors.Is(err, fs.ErrNotExist) {
		if _, err := d.mkdirLocked(parentDir); err != nil {
			return false, err
		}
		fresh = true
		parent, err = d.getLocked(parentDir)
	}
	if err != nil {
		return false, fmt.Errorf("creating directory %s: %w", dir, err)
	}
	if parent == nil {
		return rootMkdir(d.root, dir)
	}
	switch err := unix.Mkdirat(int(parent.Fd()), path.Base(dir), 0o755); {
	case err == nil:
		return true, nil
	case errors.Is(err, unix.EEXIST):
		// There already; fail here, as MkdirAll would, when it is not a
		// directory (or a symlink to one inside the output).
		if _, err := d.getLocked(dir); err != nil {
			return false, fmt.Errorf("creating directory %s: %w", dir, err)
		}
		return fresh, nil
	default:
		return false, fmt.Errorf("creating directory %s: %w", dir, &os.PathError{Op: "mkdirat", Path: dir, Err: err})
	}
}

// openDirInRoot opens directory dir through the root, which follows
// symlinks that stay inside it.
func openDirInRoot(root *os.Root, dir string) (*os.File, error) {
	f, err := root.Open(dir)
	if err != nil {
		return nil, err
	}
	if fi, err := f.Stat(); err != nil || !fi.IsDir() {
		f.Close()
		if err == nil {
			err = &os.PathError{Op: "open", Path: dir, Err: unix.ENOTDIR}
		}
		return nil, err
	}
	return f, nil
}

// close closes every descriptor of the table.
func (d *dirTable) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for dir, f := range d.fds {
		f.Close()
		delete(d.fds, dir)
	}
}

// rootMkdir makes directory name through the root by path, and its
// parents when missing, reporting whether it was created.
func rootMkdir(root *os.Root, name string) (fresh bool, err error) {
	err = root.Mkdir(name, 0o755)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist): // a parent is missing
		fresh = true
	case !errors.Is(err, fs.ErrExist):
		return false, fmt.Errorf("creating directory %s: %w", name, err)
	}
	if err := root.MkdirAll(name, 0o755); err != nil {
		return false, fmt.Errorf("creating directory %s: %w", name, err)
	}
	return fresh, nil
}
