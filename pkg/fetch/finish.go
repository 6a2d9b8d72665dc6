package fetch

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path"
	"regexp"
	"sync"
	"time"

	"github.com/stargz-get/stargz-get/pkg/wire"
	"golang.org/x/sys/unix"
)

// copyLocal writes a target whose contents another target (copyOf)
// downloaded, from that file once it is verified and in place. The copy is
// made by the kernel (copy_file_range: a reflink on filesystems that share
// extents) and not hashed again: the source was checked against the same
// digest as it was written, and this run made it. Its size is checked.
func (e *engine) copyLocal(t *target) {
	src := t.copyOf
	src.mu.Lock()
	srcOK := src.ok
	src.mu.Unlock()
	if !srcOK {
		t.fail(fmt.Errorf("its contents were to come from %s, which failed", src.name))
		return
	}
	in, err := rootOps{e.root}.open(src.name)
	if err != nil {
		t.fail(fmt.Errorf("copying from %s: %w", src.name, err))
		return
	}
	defer in.Close()
	f, err := e.open(t)
	if err != nil || f == nil {
		t.fail(fmt.Errorf("creating temp file: %w", err))
		return
	}
	n, err := f.ReadFrom(io.LimitReader(in, t.source.Size+1))
	switch {
	case err != nil:
		t.fail(fmt.Errorf("copying from %s: %w", src.name, err))
		return
	case n != t.source.Size:
		t.fail(fmt.Errorf("copying from %s: it has %d bytes, not %d: changed since it was written", src.name, n, t.source.Size))
		return
	}
	t.mu.Lock()
	t.digest = t.source.Digest
	t.mu.Unlock()
}

// maxDirHandles bounds the directories a run keeps open (one file
// descriptor each, in its dirTable, until the run ends); beyond it, files
// go through the output root, which resolves every component of their
// path for each operation. It is half the process's file limit (which Go
// raises to the hard limit at start), at most 32768, so that files,
// connections and the cache keep the other half (512 when the limit
// cannot be read). GOROOT alone has 1,667 directories: with 512 handles,
// the streamed fetch of the benchmark's WG layer (four copies of it) spent
// 1.9 s of CPU in those path walks.
var maxDirHandles = sync.OnceValue(func() int64 {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 512
	}
	return int64(min(max(rl.Cur/2, 8), 32768))
})

// prepare gets the target's directory ready (once per directory).
func (e *engine) prepare(t *target) error {
	h, err := e.dir(path.Dir(t.name))
	if err != nil {
		return err
	}
	t.dh = h
	return nil
}

// dir makes sure directory dir exists and clears temp files a killed
// earlier run left there, once per directory.
func (e *engine) dir(dir string) (*dirHandle, error) {
	e.dirMu.Lock()
	defer e.dirMu.Unlock()
	h, ok := e.dirs[dir]
	if !ok {
		h = &dirHandle{dir: dir}
		e.dirs[dir] = h
		if dir != "." {
			h.fresh, h.err = e.mkdir(dir)
		}
		if h.err == nil && !h.fresh {
			e.removeStaleTemps(dir)
		}
	}
	return h, h.err
}

// mkdir makes directory name, and its parents when missing, and reports
// whether this run created it: only then is it known to hold nothing of an
// earlier run, so that its files need not be looked for (see
// alreadyThere) and it need not be read for stale temp files.
func (e *engine) mkdir(name string) (fresh bool, err error) {
	return e.dirfds.mkdir(name)
}

// mkdirEntry makes the directory of a directory entry, recording whether
// it is fresh for the files to come.
func (e *engine) mkdirEntry(name string) error {
	e.dirMu.Lock()
	defer e.dirMu.Unlock()
	if _, ok := e.dirs[name]; ok {
		return nil
	}
	fresh, err := e.mkdir(name)
	if err != nil {
		return err
	}
	e.dirs[name] = &dirHandle{dir: name, fresh: fresh}
	if !fresh {
		e.removeStaleTemps(name)
	}
	return nil
}

// dirHandle is an output directory made (or found) for the run.
type dirHandle struct {
	dir   string
	err   error
	fresh bool // created by this run: nothing of an earlier run is there
}

// acquire sets the target's operations: *at calls on its directory's
// open descriptor (from the run's dirTable), or the output root by path
// when the table is full.
func (e *engine) acquire(t *target) {
	if t.ops != nil {
		return
	}
	if f, err := e.dirfds.get(t.dh.dir); err == nil && f != nil {
		t.ops, t.rel = dirfdOps{f}, path.Base(t.name)
		return
	}
	t.ops, t.rel = rootOps{e.root}, t.name
}

// removeStaleTemps removes temp files of ours in dir (left by a run that
// was killed before it could clean up). Two sg-fetch runs must not write
// into the same directory at once.
func (e *engine) removeStaleTemps(dir string) {
	f, err := e.root.Open(dir)
	if err != nil {
		return
	}
	names, _ := f.Readdirnames(-1)
	f.Close()
	for _, n := range names {
		if tempPattern.MatchString(n) {
			e.logf("removing %s left by an interrupted run", path.Join(dir, n))
			_ = e.root.Remove(path.Join(dir, n))
		}
	}
}

// tempPattern matches the names tempName makes, and those of earlier
// versions (".sg-<12 hex>-<name>.tmp"), which a killed run of one may have
// left.
var tempPattern = regexp.MustCompile(`^\.sg-(?:[0-9a-f]{24}|[0-9a-f]{12}-.*)\.tmp$`)

// alreadyThere returns a skipped outcome when the target's path already
// holds a regular file with the same size and digest, else nil.
func (e *engine) alreadyThere(t *target) *Outcome {
	if t.source.Digest == "" {
		return nil
	}
	if t.dh.fresh {
		return nil
	}
	ops := rootOps{e.root}
	size, regular, err := ops.regularSize(t.name)
	if err != nil || !regular || size != t.source.Size {
		return nil
	}
	f, err := ops.open(t.name)
	if err != nil {
		return nil
	}
	defer f.Close()
	dgst, err := fileDigest(f)
	if err != nil || dgst != t.source.Digest {
		return nil
	}
	verified := "toc-unpinned"
	if t.layer.Pinned {
		verified = "toc"
	}
	return &Outcome{Want: t.want, Path: t.name, Status: wire.StatusSkipped, Err: errors.New("already present with the same digest"),
		Size: t.source.Size, Digest: dgst, Verified: verified}
}

// complete finishes a target whose chunks are all accounted for: verify,
// set mode and time, rename into place, report.
func (e *engine) complete(t *target) {
	e.waitReady() // t.dh is set by then
	t.mu.Lock()
	if t.done {
		t.mu.Unlock()
		return
	}
	t.done = true
	o := &Outcome{Want: t.want, Path: t.name, Size: t.source.Size, CompressedBytes: t.compressed, Requests: t.requests, CachedBytes: t.cached}
	if !t.started.IsZero() {
		o.Duration = time.Since(t.started)
	}
	err := t.err
	if err == nil {
		o.Digest, o.Verified, err = e.commit(t)
	}
	if err != nil {
		if t.file != nil {
			t.file.Close()
		}
		if t.tmpName != "" {
			_ = t.ops.remove(t.tmpName)
		}
		o.Status, o.Err = wire.StatusFailed, err
	} else {
		o.Status = wire.StatusFetched
		t.ok = true
	}
	e.filesDone.Add(1)
	e.progress(true)
	e.finish(o)
	t.mu.Unlock()
	for _, c := range t.copies {
		e.startCopy(c)
	}
}

// commit verifies the complete temp file and renames it into place.
func (e *engine) commit(t *target) (dgst, verified string, err error) {
	if t.file == nil && !t.sealed { // empty file
		e.acquire(t)
		t.started = time.Now()
		t.tmpName = tempName(t.rel)
		if t.file, err = t.ops.create(t.tmpName); err != nil {
			return "", "", fmt.Errorf("creating temp file: %w", err)
		}
	}
	chunkDigests := true
	holes := false
	for _, c := range t.source.Chunks {
		chunkDigests = chunkDigests && c.Digest != ""
		if c.Zeros {
			// A hole: nothing was written there, and the file's size
			// makes it read as zeros; the TOC's digest of it must be
			// that of zeros.
			if c.Digest != "" && c.Digest != zeroDigest(c.Size) {
				return "", "", fmt.Errorf("chunk at %d of %q is marked zeros, but its digest %s is not that of %d zero bytes", c.FileOffset, t.source.Name, c.Digest, c.Size)
			}
			holes = true
		}
	}
	if holes && t.copyOf == nil {
		if err := t.file.Truncate(t.source.Size); err != nil {
			return "", "", fmt.Errorf("writing %s: %w", t.name, err)
		}
	}
	dgst = t.digest
	if dgst == "" && chunkDigests && len(t.source.Chunks) > 1 && t.source.Digest != "" && t.copyOf == nil {
		// Every chunk was checked against its digest as it was written,
		// and the chunks cover the file (toc.Read makes sure): the file is
		// the one the TOC describes, without reading it again.
		dgst = t.source.Digest
	}
	if dgst == "" {
		if t.sealed {
			return "", "", errors.New("written without a digest")
		}
		if dgst, err = fileDigest(t.file); err != nil {
			return "", "", err
		}
	}
	switch {
	case t.source.Digest != "" && dgst != t.source.Digest:
		return "", "", fmt.Errorf("file digest %s does not match the TOC's %s", dgst, t.source.Digest)
	case t.source.Digest == "" && !chunkDigests && e.opts.RequireVerified:
		return "", "", errors.New("the TOC has no digests for this file; --require-verified refuses it")
	case t.source.Digest == "" && !chunkDigests:
		verified = ""
	case t.layer.TOC.Full && t.layer.unchecked:
		verified = ""
	case t.layer.TOC.Full:
		verified = "layer"
	case t.layer.Pinned:
		verified = "toc"
	default:
		verified = "toc-unpinned"
	}
	if !t.sealed {
		if err := e.setAttrs(t); err != nil {
			return "", "", err
		}
		if err := t.file.Close(); err != nil {
			return "", "", fmt.Errorf("writing %s: %w", t.name, err)
		}
	}
	if err := t.ops.rename(t.tmpName, t.rel); err != nil {
		return "", "", fmt.Errorf("renaming into place: %w", err)
	}
	return dgst, verified, nil
}

// setAttrs sets the mode, owner and times of the target's open temp file:
// through the file, no path to resolve.
func (e *engine) setAttrs(t *target) error {
	if err := t.file.Chmod(e.fileMode(t.source.Mode)); err != nil {
		return err
	}
	if e.opts.SameOwner && os.Geteuid() == 0 {
		if err := t.file.Chown(t.source.UID, t.source.GID); err != nil {
			return fmt.Errorf("setting owner: %w", err)
		}
	}
	if mt := t.want.Entry.ModTime(); !mt.IsZero() {
		if err := setTimes(t.file, mt); err != nil {
			return err
		}
	}
	return nil
}

// fileMode converts a tar mode: the permission bits, and setuid, setgid
// and sticky only with PreservePermissions.
func (e *engine) fileMode(mode int64) os.FileMode {
	m := os.FileMode(mode) & 0o777
	if e.opts.PreservePermissions {
		if mode&0o4000 != 0 {
			m |= os.ModeSetuid
		}
		if mode&0o2000 != 0 {
			m |= os.ModeSetgid
		}
		if mode&0o1000 != 0 {
			m |= os.ModeSticky
		}
	}
	return m
}

// chown applies a TOC's ownership with SameOwner when running as root.
func (e *engine) chown(name string, uid, gid int) error {
	if !e.opts.SameOwner || os.Geteuid() != 0 {
		return nil
	}
	if err := e.root.Lchown(name, uid, gid); err != nil {
		return fmt.Errorf("setting owner: %w", err)
	}
	return nil
}

func fileDigest(f *os.File) (string, error) {
	h := sha256.New()
	if _, err := copyPooled(h, io.NewSectionReader(f, 0, math.MaxInt64)); err != nil {
		return "", fmt.Errorf("hashing written file: %w", err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// copyBufs recycles the buffers of local copies and of hashing written
// files, which a whole-layer fetch does once per file: io.Copy's own
// 32 KiB buffer per call (os.File.WriteTo makes one too) kept the
// collector busy for a second of CPU on the 66,813 files of the benchmark's
// WG layer.
var copyBufs = sync.Pool{New: func() any {
	b := make([]byte, 256<<10)
	return &b
}}

// copyPooled copies src to dst through a recycled buffer.
func copyPooled(dst io.Writer, src io.Reader) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	return io.CopyBuffer(dst, struct{ io.Reader }{src}, *bp)
}

func (e *engine) hardlink(ctx context.Context, w *Want, src *target) *Outcome {
	o := &Outcome{Want: w, Path: w.Entry.Name}
	if err := ctx.Err(); err != nil {
		o.Status, o.Err = wire.StatusFailed, err
		return o
	}
	src.mu.Lock()
	srcErr := src.err
	src.mu.Unlock()
	if srcErr != nil {
		o.Status, o.Err = wire.StatusFailed, fmt.Errorf("link target %s failed", src.name)
		return o
	}
	if err := e.prepareLink(w.Entry.Name); err != nil {
		o.Status, o.Err = wire.StatusFailed, err
		return o
	}
	tmp := tempName(w.Entry.Name)
	if err := e.root.Link(src.name, tmp); err != nil {
		o.Status, o.Err = wire.StatusFailed, fmt.Errorf("linking to %s: %w", src.name, err)
		return o
	}
	if err := e.root.Rename(tmp, w.Entry.Name); err != nil {
		_ = e.root.Remove(tmp)
		o.Status, o.Err = wire.StatusFailed, fmt.Errorf("renaming into place: %w", err)
		return o
	}
	o.Status, o.Size = wire.StatusFetched, src.source.Size
	return o
}

func (e *engine) symlink(ctx context.Context, w *Want) *Outcome {
	o := &Outcome{Want: w, Path: w.Entry.Name}
	if err := ctx.Err(); err != nil {
		o.Status, o.Err = wire.StatusFailed, err
		return o
	}
	if err := e.prepareLink(w.Entry.Name); err != nil {
		o.Status, o.Err = wire.StatusFailed, err
		return o
	}
	tmp := tempName(w.Entry.Name)
	if err := e.root.Symlink(w.Entry.LinkName, tmp); err != nil {
		o.Status, o.Err = wire.StatusFailed, fmt.Errorf("creating symlink: %w", err)
		return o
	}
	if err := e.chown(tmp, w.Entry.UID, w.Entry.GID); err != nil {
		_ = e.root.Remove(tmp)
		o.Status, o.Err = wire.StatusFailed, err
		return o
	}
	if err := e.root.Rename(tmp, w.Entry.Name); err != nil {
		_ = e.root.Remove(tmp)
		o.Status, o.Err = wire.StatusFailed, fmt.Errorf("renaming into place: %w", err)
		return o
	}
	o.Status = wire.StatusFetched
	return o
}

func (e *engine) prepareLink(name string) error {
	if dir := path.Dir(name); dir != "." {
		if err := e.root.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("creating directory %s: %w", dir, err)
		}
	}
	return nil
}

func (e *engine) finishDir(ctx context.Context, w *Want) *Outcome {
	o := &Outcome{Want: w, Path: w.Entry.Name}
	if err := ctx.Err(); err != nil {
		o.Status, o.Err = wire.StatusFailed, err
		return o
	}
	// Through descriptors: the parent's from the table, then the
	// directory itself, never through a symlink.
	parent, err := e.dirfds.get(path.Dir(w.Entry.Name))
	if err == nil && parent == nil { // the table is full
		if parent, err = e.root.Open(path.Dir(w.Entry.Name)); err == nil {
			defer parent.Close()
		}
	}
	if err != nil {
		o.Status, o.Err = wire.StatusFailed, fmt.Errorf("opening parent directory: %w", err)
		return o
	}
	f, err := openDir(parent, path.Base(w.Entry.Name))
	if err != nil {
		if errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
			err = errors.New("path exists and is not a directory")
		}
		o.Status, o.Err = wire.StatusFailed, fmt.Errorf("creating directory: %w", err)
		return o
	}
	defer f.Close()
	if err := f.Chmod(e.fileMode(w.Entry.Mode) | 0o700); err != nil {
		o.Status, o.Err = wire.StatusFailed, err
		return o
	}
	if mt := w.Entry.ModTime(); !mt.IsZero() {
		_ = setTimes(f, mt)
	}
	o.Status = wire.StatusFetched
	return o
}

// tempName is a hidden name in name's directory, unique to this process
// (96 random bits): ".sg-<24 hex>.tmp", 32 bytes whatever the length of
// name, so a final name of NAME_MAX (255) bytes still has a temp name, and
// removeStaleTemps knows it after a kill.
func tempName(name string) string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	dir, _ := path.Split(name)
	return dir + ".sg-" + hex.EncodeToString(b[:]) + ".tmp"
}
