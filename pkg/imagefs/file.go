package imagefs

import (
	"errors"
	"io"
	"io/fs"
	"path"
	"sort"
	"sync"

	"github.com/stargz-get/stargz-get/pkg/toc"
)

// dir is an open directory.
type dir struct {
	fsys *FS
	n    *node
	info *fileInfo
	pos  int
}

func (d *dir) Stat() (fs.FileInfo, error) { return d.info, nil }
func (d *dir) Close() error               { return nil }
func (d *dir) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: d.n.name, Err: errors.New("is a directory")}
}

// ReadDir reads the next n entries (all with n <= 0), as fs.ReadDirFile
// says.
func (d *dir) ReadDir(n int) ([]fs.DirEntry, error) {
	left := d.n.children[d.pos:]
	if n > 0 && len(left) == 0 {
		return nil, io.EOF
	}
	if n > 0 && n < len(left) {
		left = left[:n]
	}
	d.pos += len(left)
	out := make([]fs.DirEntry, len(left))
	for i, c := range left {
		out[i] = fs.FileInfoToDirEntry(d.fsys.info(d.fsys.nodes[path.Join(d.n.name, c)], c))
	}
	return out, nil
}

// File is an open file of an FS: an fs.File, io.ReaderAt and io.Seeker.
// A read downloads only the chunks it touches (kept while nearby reads
// may want them again), and a read ending where the next begins fetches
// the following chunks ahead. ReadAt may be called concurrently.
type File struct {
	fsys  *FS
	n     *node
	info  *fileInfo
	entry *toc.Entry // the entry holding the contents

	mu     sync.Mutex // guards off and the chunk slots
	off    int64
	slots  map[int]*slot
	recent []int // chunk indexes, least recently used first
	closed bool
}

// slot is one chunk, fetched or being fetched.
type slot struct {
	done chan struct{}
	data []byte
	err  error
}

// keepChunks is how many chunks a File keeps besides its read-ahead.
const keepChunks = 4

func (f *FS) newFile(n *node, info *fileInfo) (*File, error) {
	e, err := contents(n)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: n.name, Err: err}
	}
	return &File{fsys: f, n: n, info: info, entry: e, slots: map[int]*slot{}}, nil
}

// Stat returns the file's FileInfo.
func (f *File) Stat() (fs.FileInfo, error) { return f.info, nil }

// Close releases the chunks the file holds.
func (f *File) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return &fs.PathError{Op: "close", Path: f.n.name, Err: fs.ErrClosed}
	}
	f.closed, f.slots, f.recent = true, nil, nil
	return nil
}

// Read reads from the current offset.
func (f *File) Read(p []byte) (int, error) {
	f.mu.Lock()
	off := f.off
	f.mu.Unlock()
	n, err := f.readAt(p, off, true)
	f.mu.Lock()
	f.off = off + int64(n)
	f.mu.Unlock()
	if err == io.EOF && n > 0 && n == len(p) {
		err = nil
	}
	return n, err
}

// Seek sets the offset of the next Read, as io.Seeker says.
func (f *File) Seek(offset int64, whence int) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += f.off
	case io.SeekEnd:
		offset += f.entry.Size
	default:
		return 0, &fs.PathError{Op: "seek", Path: f.n.name, Err: fs.ErrInvalid}
	}
	if offset < 0 {
		return 0, &fs.PathError{Op: "seek", Path: f.n.name, Err: fs.ErrInvalid}
	}
	f.off = offset
	return offset, nil
}

// ReadAt reads len(p) bytes at off, as io.ReaderAt says.
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, &fs.PathError{Op: "read", Path: f.n.name, Err: fs.ErrInvalid}
	}
	return f.readAt(p, off, false)
}

func (f *File) readAt(p []byte, off int64, sequential bool) (int, error) {
	size := f.entry.Size
	if off >= size {
		return 0, io.EOF
	}
	want := min(int64(len(p)), size-off)
	cs := f.entry.Chunks
	first := sort.Search(len(cs), func(i int) bool { return cs[i].FileOffset+cs[i].Size > off })
	var n int64
	for i := first; i < len(cs) && n < want; {
		// Up to keepChunks chunks at a time, fetched together.
		last := i
		for last+1 < len(cs) && last+1-i < keepChunks && cs[last+1].FileOffset < off+want {
			last++
		}
		idx := make([]int, 0, last-i+1)
		for k := i; k <= last; k++ {
			idx = append(idx, k)
		}
		ahead := 0
		if sequential {
			ahead = f.fsys.ahead
		}
		slots, err := f.get(idx, min(ahead, len(cs)-1-last))
		if err != nil {
			return int(n), &fs.PathError{Op: "read", Path: f.n.name, Err: err}
		}
		for k, s := range slots {
			c := cs[idx[k]]
			from := max(off+n-c.FileOffset, 0)
			m := copy(p[n:want], s.data[from:])
			n += int64(m)
		}
		i = last + 1
	}
	if n < int64(len(p)) {
		return int(n), io.EOF
	}
	return int(n), nil
}

// get returns the slots of chunks idx, fetching those missing in one
// call, and starts fetching the ahead chunks after the last.
func (f *File) get(idx []int, ahead int) ([]*slot, error) {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil, fs.ErrClosed
	}
	out := make([]*slot, len(idx))
	var missing, later []want
	for k, i := range idx {
		out[k], missing = f.slot(i, missing)
	}
	for i := idx[len(idx)-1] + 1; i <= idx[len(idx)-1]+ahead; i++ {
		_, later = f.slot(i, later)
	}
	f.evict(len(idx) + ahead)
	f.mu.Unlock()
	if len(missing) > 0 {
		f.fetch(missing)
	}
	if len(later) > 0 {
		go f.fetch(later)
	}
	for _, s := range out {
		select {
		case <-s.done:
		case <-f.fsys.ctx.Done():
			return nil, f.fsys.ctx.Err()
		}
		if s.err != nil {
			return nil, s.err
		}
	}
	return out, nil
}

// want is a chunk to fetch into its slot.
type want struct {
	i int
	s *slot
}

// slot returns chunk i's slot, making it (and adding it to missing) when
// there is none; f.mu is held.
func (f *File) slot(i int, missing []want) (*slot, []want) {
	s, ok := f.slots[i]
	if !ok || (s.err != nil && isDone(s)) {
		s = &slot{done: make(chan struct{})}
		f.slots[i] = s
		missing = append(missing, want{i, s})
	}
	f.recent = append(removeInt(f.recent, i), i)
	return s, missing
}

func isDone(s *slot) bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// evict drops the least recently used chunks beyond keep+keepChunks;
// f.mu is held.
func (f *File) evict(keep int) {
	for len(f.recent) > keep+keepChunks {
		delete(f.slots, f.recent[0])
		f.recent = f.recent[1:]
	}
}

// fetch reads chunks ws (sorted) into their slots.
func (f *File) fetch(ws []want) {
	cs := make([]toc.Chunk, len(ws))
	dst := make([][]byte, len(ws))
	for k, w := range ws {
		cs[k] = f.entry.Chunks[w.i]
		dst[k] = make([]byte, cs[k].Size)
	}
	err := f.fsys.chunks.ReadChunks(f.fsys.ctx, f.n.layer, cs, dst)
	for k, w := range ws {
		w.s.data, w.s.err = dst[k], err
		close(w.s.done)
	}
}

func removeInt(s []int, v int) []int {
	for i, x := range s {
		if x == v {
			return append(s[:i], s[i+1:]...)
		}
	}
	return s
}
