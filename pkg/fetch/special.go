package fetch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/stargz-get/stargz-get/pkg/wire"
)

// special creates a fifo or device node when asked for (Options.Devices)
// and possible (devices as root); otherwise it is refused.
func (e *engine) special(ctx context.Context, w *Want) *Outcome {
	o := &Outcome{Want: w, Path: w.Entry.Name}
	if err := ctx.Err(); err != nil {
		o.Status, o.Err = wire.StatusFailed, err
		return o
	}
	isDevice := w.Entry.Type != wire.TypeFifo
	switch {
	case !e.opts.Devices:
		o.Status, o.Err = wire.StatusRefused, fmt.Errorf("%s entries are created only with --devices", w.Entry.Type)
		return o
	case !makesNodes:
		o.Status, o.Err = wire.StatusRefused, fmt.Errorf("%s entries cannot be created on %s", w.Entry.Type, runtime.GOOS)
		return o
	case isDevice && os.Geteuid() != 0:
		o.Status, o.Err = wire.StatusRefused, fmt.Errorf("%s devices can only be created as root", w.Entry.Type)
		return o
	}
	if err := e.prepareLink(w.Entry.Name); err != nil {
		o.Status, o.Err = wire.StatusFailed, err
		return o
	}
	// os.Root has no mknod: open the parent through the root (so it cannot
	// be reached through a symlink out) and create the node relative to it.
	dir, base := path.Split(w.Entry.Name)
	if dir == "" {
		dir = "."
	}
	parent, err := e.root.Open(dir)
	if err != nil {
		o.Status, o.Err = wire.StatusFailed, err
		return o
	}
	defer parent.Close()
	tmp := path.Base(tempName(base))
	mode := uint32(e.fileMode(w.Entry.Mode).Perm())
	switch w.Entry.Type {
	case wire.TypeFifo:
		err = mkfifoat(int(parent.Fd()), tmp, mode)
	case wire.TypeChar:
		err = mknodat(int(parent.Fd()), tmp, mode|unix.S_IFCHR, w.Entry.DevMajor, w.Entry.DevMinor)
	case wire.TypeBlock:
		err = mknodat(int(parent.Fd()), tmp, mode|unix.S_IFBLK, w.Entry.DevMajor, w.Entry.DevMinor)
	default:
		err = errors.New("unknown special file type")
	}
	if err != nil {
		o.Status, o.Err = wire.StatusFailed, fmt.Errorf("creating %s: %w", w.Entry.Type, err)
		return o
	}
	if err := e.root.Rename(path.Join(dir, tmp), w.Entry.Name); err != nil {
		_ = e.root.Remove(path.Join(dir, tmp))
		o.Status, o.Err = wire.StatusFailed, fmt.Errorf("renaming into place: %w", err)
		return o
	}
	o.Status = wire.StatusFetched
	return o
}
