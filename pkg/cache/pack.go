package cache

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Packs: content-addressed entries written many to a file. One file per
// small entry costs an inode, a create and a rename each (on ext4, about
// 100 µs of kernel time: 1.5 s for the 15,000 files of a whole Go
// toolchain layer), which would make a whole-layer fetch that keeps its
// chunks twice as slow. A Pack instead appends entries to one data file
// (X.pack) and, when done, writes their index (X.idx: digest, offset and
// length per line, under a header holding the sha256 of the lines), and
// renames both into place, index last: other runs see a pack whole or not
// at all. Entries are found by Packed (which reads the indexes) and read
// by LoadPacked, which checks each against its digest: an entry that fails
// is dropped from its pack's index, and a pack whose index is damaged is
// removed whole. Packs are evicted whole, by
// the modification time of their data file, which LoadPacked refreshes.
const (
	packExt  = ".pack"
	indexExt = ".idx"
	// PackMaxBytes is where a Pack starts a new file: small enough that
	// evicting one frees little at a time, large enough for few files.
	PackMaxBytes = 64 << 20
	packMagic    = "sg-cache pack v1"
)

// Loc is where a packed entry is: its pack (a name in the kind's
// directory) and its bytes there.
type Loc struct {
	Pack      string
	Off, Size int64
}

// Pack writes content-addressed entries of one kind into pack files. It
// is not safe for concurrent use.
type Pack struct {
	c    *Cache
	kind string
	dir  string

	f    *os.File
	name string // of the pack being written, without extension
	off  int64
	idx  bytes.Buffer

	mu  sync.Mutex // guards the slots' fields below
	cur *packFile  // written through slots
	err error
}

// NewPack returns a writer of packs of kind; a nil cache gives a writer
// that keeps nothing.
func (c *Cache) NewPack(kind string) (*Pack, error) {
	if c == nil {
		return nil, nil
	}
	if !namePart.MatchString(kind) {
		return nil, fmt.Errorf("invalid cache kind %q", kind)
	}
	return &Pack{c: c, kind: kind, dir: filepath.Join(c.dir, kind)}, nil
}

// Add appends data, whose sha256 digest dgst ("sha256:HEX") the caller
// has just computed, to the pack.
func (p *Pack) Add(dgst string, data []byte) error {
	if p == nil {
		return nil
	}
	if alg, hx, ok := cutDigest(dgst); !ok || alg != "sha256" || len(hx) != 64 {
		return fmt.Errorf("cache key %q is not a sha256 digest", dgst)
	}
	if p.f == nil {
		if err := os.MkdirAll(p.dir, 0o755); err != nil {
			return fmt.Errorf("making cache directory: %w", err)
		}
		var rnd [12]byte
		_, _ = rand.Read(rnd[:])
		p.name = "pack-" + hex.EncodeToString(rnd[:])
		f, err := os.OpenFile(filepath.Join(p.dir, ".tmp-"+p.name+packExt), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err != nil {
			return fmt.Errorf("writing cache pack: %w", err)
		}
		p.f, p.off = f, 0
		p.idx.Reset()
	}
	if _, err := p.f.Write(data); err != nil {
		p.abort()
		return fmt.Errorf("writing cache pack: %w", err)
	}
	fmt.Fprintf(&p.idx, "%s %d %d\n", dgst, p.off, len(data))
	p.off += int64(len(data))
	if p.off >= PackMaxBytes {
		return p.finish()
	}
	return nil
}

// Close finishes the pack being written, making its entries visible.
func (p *Pack) Close() error {
	if p == nil || p.f == nil {
		return nil
	}
	return p.finish()
}

func (p *Pack) abort() {
	if p.f != nil {
		p.f.Close()
		os.Remove(p.f.Name())
		p.f = nil
	}
}

// finish closes the data file, writes the index and renames both.
func (p *Pack) finish() error {
	f := p.f
	p.f = nil
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("writing cache pack: %w", err)
	}
	return p.install(p.name, f.Name(), p.idx.Bytes(), p.off)
}

// install renames the written data file tmp of pack name into place and
// writes its index idx beside it, renamed last.
func (p *Pack) install(name, tmp string, idx []byte, size int64) error {
	data := filepath.Join(p.dir, name+packExt)
	if err := os.Rename(tmp, data); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing cache pack: %w", err)
	}
	n, err := writeSealed(filepath.Join(p.dir, name+indexExt), packMagic, idx, nil)
	if err != nil {
		os.Remove(data)
		return fmt.Errorf("writing cache pack index: %w", err)
	}
	p.c.added(p.kind, data, size+n)
	return nil
}

// Packed returns the entries of the packs of kind by digest, from their
// indexes. An index that fails its check is removed with its pack (with a
// warning); one whose pack is gone is removed.
func (c *Cache) Packed(kind string) map[string]Loc {
	if c == nil || !namePart.MatchString(kind) {
		return nil
	}
	dir := filepath.Join(c.dir, kind)
	names, err := filepath.Glob(filepath.Join(dir, "pack-*"+indexExt))
	if err != nil || len(names) == 0 {
		return nil
	}
	locs := map[string]Loc{}
	for _, n := range names {
		pack := strings.TrimSuffix(filepath.Base(n), indexExt) + packExt
		if err := readIndex(n, pack, locs); err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				c.warn("cache pack index %s is damaged (%v): removed it and its pack", n, err)
			}
			c.removePack(kind, pack)
		}
	}
	return locs
}

// readIndex adds the entries of index file p (of pack) to locs, after
// checking its header, and that the pack is there.
func readIndex(p, pack string, locs map[string]Loc) error {
	if _, err := os.Stat(filepath.Join(filepath.Dir(p), pack)); err != nil {
		return err
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	data, err := decodePackIndex(b)
	if err != nil {
		return err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 {
			return errors.New("bad index line")
		}
		off, err1 := strconv.ParseInt(f[1], 10, 64)
		size, err2 := strconv.ParseInt(f[2], 10, 64)
		if err1 != nil || err2 != nil || off < 0 || size < 0 {
			return errors.New("bad index line")
		}
		locs[f[0]] = Loc{Pack: pack, Off: off, Size: size}
	}
	return nil
}

func decodePackIndex(b []byte) ([]byte, error) {
	data, _, err := unseal(packMagic, b)
	return data, err
}

// LoadPacked reads the entry at loc, whose digest must be dgst. An entry
// that does not match removes its whole pack and gives an error wrapping
// ErrDamaged; a pack gone (evicted by another run) gives nil, nil.
func (c *Cache) LoadPacked(kind string, loc Loc, dgst string) ([]byte, error) {
	if c == nil || !namePart.MatchString(kind) || !strings.HasSuffix(loc.Pack, packExt) || strings.ContainsAny(loc.Pack, `/\`) {
		return nil, nil
	}
	p := filepath.Join(c.dir, kind, loc.Pack)
	f, err := os.Open(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("reading cache pack %s: %w", p, err)
	}
	defer f.Close()
	data := make([]byte, loc.Size)
	if _, err = f.ReadAt(data, loc.Off); err == nil {
		sum := sha256.Sum256(data)
		if got := "sha256:" + hex.EncodeToString(sum[:]); got != dgst {
			err = fmt.Errorf("digest %s, wanted %s", got, dgst)
		}
	}
	if err != nil {
		c.dropPacked(kind, loc.Pack, dgst)
		return nil, fmt.Errorf("cache pack %s, entry at %d: %w: %v; removed it from the pack's index", p, loc.Off, ErrDamaged, err)
	}
	c.touch(p)
	return data, nil
}

// touch marks file p recently used, once per Cache: a pack holds
// thousands of entries, and a time update per entry read would cost a
// metadata write each.
func (c *Cache) touch(p string) {
	c.mu.Lock()
	if c.touched == nil {
		c.touched = map[string]bool{}
	}
	done := c.touched[p]
	c.touched[p] = true
	c.mu.Unlock()
	if !done {
		now := time.Now()
		_ = os.Chtimes(p, now, now)
	}
}

// dropPacked rewrites the index of pack without the entry dgst (under a
// temporary name, renamed into place); the pack's other entries stay. An
// index that cannot be read removes the pack.
func (c *Cache) dropPacked(kind, pack, dgst string) {
	dir := filepath.Join(c.dir, kind)
	base := strings.TrimSuffix(pack, packExt)
	ix := filepath.Join(dir, base+indexExt)
	b, err := os.ReadFile(ix)
	var data []byte
	if err == nil {
		data, err = decodePackIndex(b)
	}
	if err != nil {
		c.removePack(kind, pack)
		return
	}
	var kept bytes.Buffer
	for _, l := range bytes.SplitAfter(data, []byte{'\n'}) {
		if len(l) > 0 && !bytes.HasPrefix(l, []byte(dgst+" ")) {
			kept.Write(l)
		}
	}
	if _, err := writeSealed(ix, packMagic, kept.Bytes(), nil); err != nil {
		c.removePack(kind, pack)
	}
}

// removePack removes a pack and its index.
func (c *Cache) removePack(kind, pack string) {
	base := strings.TrimSuffix(pack, packExt)
	_ = os.Remove(filepath.Join(c.dir, kind, base+indexExt))
	_ = os.Remove(filepath.Join(c.dir, kind, base+packExt))
}

// Slots: entries written into a pack in place, by several writers at once.
// A Pack hands out room (Reserve), each writer writes its entry's bytes
// there as they come (WriteAt, safe concurrently) and then records it
// (Commit, once the bytes are checked) or not (Abort: the room stays
// unused). A pack file is finished when it is full and its last slot is
// done, or at Close. This spares a copy of every byte and a writer
// goroutine: the bytes go from the stream to the pack file directly.

// packFile is a pack being written through slots.
type packFile struct {
	f       *os.File
	name    string
	size    int64 // room handed out
	open    int   // slots not yet committed or aborted
	sealed  bool  // no more room is handed out
	idx     bytes.Buffer
	written bool
	err     error
}

// Slot is room for one entry in a pack.
type Slot struct {
	p   *Pack
	pf  *packFile
	Off int64
	n   int64
	// short is set by a write past the slot's room: Commit then records
	// nothing, as Abort does.
	short bool
}

// WriteAt writes b at off within the slot. Errors are kept for Commit,
// not returned: a cache that cannot be written never fails the writer.
func (s *Slot) WriteAt(b []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(b)) > s.n {
		s.short = true
		return len(b), nil
	}
	if _, err := s.pf.f.WriteAt(b, s.Off+off); err != nil {
		s.p.mu.Lock()
		if s.pf.err == nil {
			s.pf.err = err
		}
		s.p.mu.Unlock()
	}
	return len(b), nil
}

// Reserve returns room for an entry of n bytes.
func (p *Pack) Reserve(n int64) (*Slot, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cur == nil || p.cur.sealed || p.cur.size >= PackMaxBytes {
		if p.cur != nil && !p.cur.sealed {
			p.cur.sealed = true
			if p.cur.open == 0 {
				p.finishFile(p.cur)
			}
		}
		if err := os.MkdirAll(p.dir, 0o755); err != nil {
			return nil, fmt.Errorf("making cache directory: %w", err)
		}
		var rnd [12]byte
		_, _ = rand.Read(rnd[:])
		name := "pack-" + hex.EncodeToString(rnd[:])
		f, err := os.OpenFile(filepath.Join(p.dir, ".tmp-"+name+packExt), os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o644)
		if err != nil {
			return nil, fmt.Errorf("writing cache pack: %w", err)
		}
		p.cur = &packFile{f: f, name: name}
	}
	s := &Slot{p: p, pf: p.cur, Off: p.cur.size, n: n}
	p.cur.size += n
	p.cur.open++
	return s, nil
}

// Commit records the slot's bytes, whose sha256 digest is dgst.
func (s *Slot) Commit(dgst string) {
	s.done(dgst)
}

// Abort leaves the slot's room unused.
func (s *Slot) Abort() {
	s.done("")
}

func (s *Slot) done(dgst string) {
	p := s.p
	p.mu.Lock()
	defer p.mu.Unlock()
	pf := s.pf
	if dgst != "" && !s.short {
		fmt.Fprintf(&pf.idx, "%s %d %d\n", dgst, s.Off, s.n)
		pf.written = true
	}
	pf.open--
	if pf.sealed && pf.open == 0 {
		p.finishFile(pf)
	}
}

// finishFile renames a sealed pack file whose slots are all done into
// place with its index, or removes it when it holds nothing or failed.
// p.mu is held.
func (p *Pack) finishFile(pf *packFile) {
	if pf.f == nil {
		return
	}
	err := pf.f.Close()
	tmp := pf.f.Name()
	pf.f = nil
	if pf.err != nil || err != nil || !pf.written {
		os.Remove(tmp)
		if e := errors.Join(pf.err, err); e != nil && p.err == nil {
			p.err = fmt.Errorf("writing cache pack: %w", e)
		}
		return
	}
	if err := p.install(pf.name, tmp, pf.idx.Bytes(), pf.size); err != nil && p.err == nil {
		p.err = err
	}
}

// Wait seals the pack file being written through slots and, once all its
// slots are done, finishes it; it returns the first error writing packs
// through slots met. Call it after the last Commit or Abort.
func (p *Pack) Wait() error {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if pf := p.cur; pf != nil && !pf.sealed {
		pf.sealed = true
		if pf.open == 0 {
			p.finishFile(pf)
		}
	}
	return p.err
}
