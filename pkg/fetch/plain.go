package fetch

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"

	"github.com/sourcegraph/conc/pool"

	"github.com/stargz-get/stargz-get/pkg/toc"
	"github.com/stargz-get/stargz-get/pkg/wire"
)

// Plain reads a layer that is not eStargz: a plain gzip, zstd or
// uncompressed tar.
type Plain interface {
	// Stream returns the layer's tar from its start. Read to its end, it
	// checks the layer's digest (an error instead of io.EOF when that does
	// not match); closed early, it stops the download.
	Stream(ctx context.Context) (io.ReadCloser, error)
	// Span returns, for a layer with a seek index, the compressed bytes
	// [off, end) that hold the tar bytes [from, to); ok is false without
	// an index.
	Span(from, to int64) (off, end int64, ok bool)
	// Seek returns the tar bytes [from, to), read through the seek index.
	Seek(ctx context.Context, from, to int64) (io.ReadCloser, error)
	// Distrust drops the seek index: what it led to did not match it.
	Distrust(err error)
}

// IndexKeeper is a Plain layer that can keep a seek index made while its
// stream was read to the end, from t, the listing RunStream made on the
// way (every entry, with the digests of the regular files it wrote).
type IndexKeeper interface {
	KeepIndex(t *toc.TOC) error
}

// ErrIndexMismatch is matched (errors.Is) by the error of a file read
// through a seek index that the layer's bytes contradicted.
var ErrIndexMismatch = errors.New("the seek index does not match the layer")

// maxSeekRuns is how many runs of an indexed layer are read at once:
// three times the cores of a small machine, so that inflating is never
// short of a run to work on, while each run's stream holds a few segments
// in memory. The WG layer fetched whole through its index on 2 cores:
// 2 runs 5.38 s, 3 runs 4.54 s, 4 runs 4.27 s, 6 runs 4.04 s, 8 runs 4.09 s.
const maxSeekRuns = 6

// maxRunBytes caps the compressed bytes of one run of an indexed layer:
// longer stretches are split at an entry, each part read from its own
// checkpoint, so that they are inflated on several cores at once (one
// gzip stream inflates at about 100 MB/s on one core). A split costs at
// most the checkpoint spacing read twice.
const maxRunBytes = 16 << 20

// extractFull writes targets from a layer that is not eStargz, then
// finishes them: through its seek index when it has one, else from its
// stream, which stops after the last target.
func (e *engine) extractFull(ctx context.Context, l *Layer, targets []*target) {
	var err error
	switch {
	case l.Plain == nil:
		err = errors.New("the layer cannot be read whole")
	default:
		if _, _, ok := l.Plain.Span(0, 0); ok {
			e.extractSeek(ctx, l, targets)
			return
		}
		err = e.extractStream(ctx, l, targets)
	}
	e.finishUnwritten(targets, err, func(t *target) error {
		return fmt.Errorf("%s not found in the layer", t.source.Name)
	})
}

// writeAndFinish writes the targets of one tar entry and finishes them at
// once (checked against their digest, renamed, closed), not when the read
// ends: a read holds thousands of files, and several at once held more
// descriptors than a process may open.
func (e *engine) writeAndFinish(r io.Reader, ts []*target, buf []byte, compressed int64) error {
	if err := e.writeEntry(r, ts, buf, compressed); err != nil {
		return err
	}
	for _, t := range ts {
		e.complete(t)
	}
	return nil
}

// finishUnwritten finishes the targets a read left unwritten: failed with
// err when the read failed, else with what notFound says when they have
// contents (an empty file is made).
func (e *engine) finishUnwritten(ts []*target, err error, notFound func(t *target) error) {
	for _, t := range ts {
		t.mu.Lock()
		done := t.done
		t.mu.Unlock()
		if done {
			continue
		}
		if err != nil {
			t.fail(err)
		} else if t.file == nil && t.source.Size > 0 {
			t.fail(notFound(t))
		}
		e.complete(t)
	}
}

// byOffset groups targets by where their source's header is.
func byOffset(targets []*target) map[int64][]*target {
	m := map[int64][]*target{}
	for _, t := range targets {
		m[t.source.TarOffset] = append(m[t.source.TarOffset], t)
	}
	return m
}

// tarWalker reads a tar from a known offset, telling each header's offset.
type tarWalker struct {
	cnt struct {
		r io.Reader
		n int64
	}
	base  int64
	ahead int64 // offset of the next header, relative to base
	tr    *tar.Reader
}

func (c *tarWalker) Read(p []byte) (int, error) {
	k, err := c.cnt.r.Read(p)
	c.cnt.n += int64(k)
	return k, err
}

func newTarWalker(r io.Reader, base int64) *tarWalker {
	w := &tarWalker{base: base}
	w.cnt.r = r
	w.tr = tar.NewReader(w)
	return w
}

// next returns the next header and its offset in the layer's tar.
func (w *tarWalker) next() (*tar.Header, int64, error) {
	off := w.base + w.ahead
	h, err := w.tr.Next()
	if err == nil {
		w.ahead = w.cnt.n + toc.TarDataBlocks(h)
	}
	return h, off, err
}

// extractStream streams the layer from its start, writing each target as
// its entry passes, and stops after the last one.
func (e *engine) extractStream(ctx context.Context, l *Layer, targets []*target) error {
	want := byOffset(targets)
	last := int64(-1)
	for off := range want {
		last = max(last, off)
	}
	rc, err := l.Plain.Stream(ctx)
	if err != nil {
		return err
	}
	defer rc.Close()
	w := newTarWalker(rc, 0)
	buf := make([]byte, 256<<10)
	for {
		h, off, err := w.next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading layer tar: %w", err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		ts := want[off]
		if len(ts) == 0 {
			continue
		}
		if err := checkHeader(h, off, ts[0].source); err != nil {
			return err
		}
		if err := e.writeAndFinish(w.tr, ts, buf, 0); err != nil {
			return fmt.Errorf("extracting %s: %w", h.Name, err)
		}
		if off == last {
			return nil // the rest of the layer is not needed
		}
	}
}

// checkHeader makes sure the tar header at off is the entry's.
func checkHeader(h *tar.Header, off int64, e *toc.Entry) error {
	if h.Name != e.RawName || h.Typeflag != tar.TypeReg || h.Size != e.Size {
		return fmt.Errorf("%w: the tar header at byte %d is %q (type %q, %d bytes), the index says %q (%d bytes)", ErrIndexMismatch, off, h.Name, h.Typeflag, h.Size, e.RawName, e.Size)
	}
	return nil
}

// writeEntry writes the contents of the current tar entry into each
// target's temp file, and records their digest.
func (e *engine) writeEntry(r io.Reader, ts []*target, buf []byte, compressed int64) error {
	hash := sha256.New()
	ws := []io.Writer{hash}
	for _, t := range ts {
		// Each target is written once, into a temp file made here, which
		// then holds exactly what was written.
		f, err := e.open(t)
		if err != nil {
			t.fail(err)
		} else if f != nil {
			ws = append(ws, io.NewOffsetWriter(f, 0))
		}
	}
	n, err := copyFilled(io.MultiWriter(ws...), r, buf)
	e.bytesDone.Add(n)
	if err != nil {
		return err
	}
	dgst := "sha256:" + hex.EncodeToString(hash.Sum(nil))
	for _, t := range ts {
		t.mu.Lock()
		t.digest = dgst
		t.compressed += compressed
		t.requests++
		t.mu.Unlock()
	}
	e.progress(false)
	return nil
}

// seekRun is a stretch of an indexed layer read in one go.
type seekRun struct {
	from, to int64 // tar bytes
	off, end int64 // compressed bytes
	targets  []*target
}

// extractSeek reads the targets of an indexed layer lazily: targets whose
// compressed spans touch are read together, each run from the nearest
// checkpoint before its first entry, several runs at once (see
// maxRunBytes).
func (e *engine) extractSeek(ctx context.Context, l *Layer, targets []*target) {
	sort.Slice(targets, func(i, j int) bool { return targets[i].source.TarOffset < targets[j].source.TarOffset })
	var runs []*seekRun
	for _, t := range targets {
		from, to := t.source.TarOffset, t.source.DataOffset+t.source.Size
		off, end, _ := l.Plain.Span(from, to)
		if n := len(runs); n > 0 && off <= runs[n-1].end && runs[n-1].end-runs[n-1].off < maxRunBytes {
			r := runs[n-1]
			r.to, r.end = max(r.to, to), max(r.end, end)
			r.targets = append(r.targets, t)
			continue
		}
		runs = append(runs, &seekRun{from: from, to: to, off: off, end: end, targets: []*target{t}})
	}
	var distrust sync.Once
	p := pool.New().WithMaxGoroutines(min(maxSeekRuns, e.opts.Jobs))
	for _, r := range runs {
		p.Go(func() {
			err := e.readRun(ctx, l, r)
			if errors.Is(err, ErrIndexMismatch) {
				distrust.Do(func() { l.Plain.Distrust(err) })
			}
			e.finishUnwritten(r.targets, err, func(t *target) error {
				return fmt.Errorf("%w: %s not found at byte %d", ErrIndexMismatch, t.source.Name, t.source.TarOffset)
			})
		})
	}
	p.Wait()
}

// readRun reads one run's tar bytes and writes its targets.
func (e *engine) readRun(ctx context.Context, l *Layer, r *seekRun) error {
	off, end, _ := l.Plain.Span(r.from, r.to)
	rc, err := l.Plain.Seek(ctx, r.from, r.to)
	if err != nil {
		return err
	}
	defer rc.Close()
	want := byOffset(r.targets)
	w := newTarWalker(rc, r.from)
	buf := make([]byte, 256<<10)
	for left := len(want); left > 0; {
		h, hoff, err := w.next()
		if err == io.EOF {
			return fmt.Errorf("%w: the tar ends at byte %d", ErrIndexMismatch, hoff)
		}
		if err != nil {
			return fmt.Errorf("reading layer tar at byte %d through the seek index: %w", hoff, err)
		}
		ts := want[hoff]
		if len(ts) == 0 {
			if hoff > r.to {
				return fmt.Errorf("%w: no entry starts where the index says", ErrIndexMismatch)
			}
			continue
		}
		if err := checkHeader(h, hoff, ts[0].source); err != nil {
			return err
		}
		// The run's compressed bytes are shared out by the tar bytes
		// each entry takes, so that they add up to what was read.
		share := (end - off) * (w.ahead - (hoff - r.from)) / max(r.to-r.from, 1)
		if err := e.writeAndFinish(w.tr, ts, buf, share); err != nil {
			return fmt.Errorf("extracting %s: %w", h.Name, err)
		}
		left--
	}
	return nil
}

// park finishes what it can of a target written by RunStream and closes
// its temp file: it is renamed into place only once the whole stream is
// read (the layer digest checked), and a layer of a hundred thousand files
// must not hold as many descriptors open until then. Its mode, owner and
// times are set now, through the open file, so that the end of the run
// has only the rename left (see commit); the digest was taken as it was
// written.
func (e *engine) park(t *target) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.file == nil {
		return
	}
	if t.err == nil {
		t.err = e.setAttrs(t)
	}
	if err := t.file.Close(); err != nil && t.err == nil {
		t.err = fmt.Errorf("writing %s: %w", t.name, err)
	}
	t.file = nil
	t.sealed = true
}

// Selector picks, as a whole layer streams past, the entries RunStream
// writes.
type Selector interface {
	// Select reports whether entry e is wanted, and the Tag of its Want.
	Select(e *toc.Entry) (tag any, ok bool)
	// Done reports that nothing still to come is wanted.
	Done() bool
}

// RunStream fetches the entries sel selects from the layer l, which is not
// eStargz and has no seek index, in one pass over its stream: each file is
// written (under a temp name) as its entry passes, and the stream stops as
// soon as sel is done, so that bytes after the last wanted entry are not
// downloaded. l.TOC is built on the way (Full) and holds the entries
// passed. Files are renamed into place at the end: when the stream was
// read to its end the layer digest was checked first (a mismatch fails
// them all, and nothing is renamed), and results say "verified":"layer";
// a stream stopped early cannot check it, and results say nothing was
// verified. emit is called once per selected entry.
func RunStream(ctx context.Context, root *os.Root, l *Layer, maxEntries int64, sel Selector, opts Options, emit func(*Outcome)) error {
	e := newEngine(root, opts, emit)
	defer e.dirfds.close()
	b := toc.NewBuilder(l.TOC.Format, maxEntries)
	l.TOC = b.TOC()
	var (
		regs   []*target
		others []*Want
		byName = map[string]*target{}
	)
	err := func() error {
		rc, err := l.Plain.Stream(ctx)
		if err != nil {
			return err
		}
		defer rc.Close()
		w := newTarWalker(rc, 0)
		buf := make([]byte, 256<<10)
		for !sel.Done() {
			h, off, err := w.next()
			if err == io.EOF {
				// The end of the tar; read on to the end of the layer, so
				// that its digest is checked.
				if _, err := io.Copy(io.Discard, rc); err != nil {
					return fmt.Errorf("reading the layer: %w", err)
				}
				if k, ok := l.Plain.(IndexKeeper); ok {
					if err := k.KeepIndex(l.TOC); err != nil {
						e.logf("no seek index kept: %v", err)
					}
				}
				return nil
			}
			if err != nil {
				return fmt.Errorf("reading layer tar: %w", err)
			}
			te := toc.HeaderEntry(h)
			if te == nil {
				continue
			}
			ent, err := b.Add(te)
			if err != nil || ent == nil {
				if err != nil {
					return err
				}
				continue
			}
			ent.TarOffset, ent.DataOffset = off, w.base+w.cnt.n
			tag, ok := sel.Select(ent)
			if !ok {
				continue
			}
			want := &Want{Layer: l, Entry: ent, Tag: tag}
			if why := refusal(want, e.maxName); why != nil {
				e.fail(want, wire.StatusRefused, why)
				continue
			}
			if ent.Type != wire.TypeReg {
				others = append(others, want)
				continue
			}
			t := newTarget(want, ent)
			if err := e.prepare(t); err != nil {
				t.fail(err)
			} else if err := e.writeEntry(w.tr, []*target{t}, buf, 0); err != nil {
				return fmt.Errorf("extracting %s: %w", h.Name, err)
			} else {
				e.park(t)
			}
			ent.Digest = t.digest
			if old := byName[ent.Name]; old != nil { // a later entry of the same name replaces it
				old.fail(errors.New("a later entry for the same path replaces it"))
			}
			byName[ent.Name] = t
			regs = append(regs, t)
		}
		l.unchecked = true
		return nil
	}()
	e.filesTotal = len(regs)
	// A few at a time: each is a rename (park set the mode and times), and
	// a whole layer has tens of thousands.
	fin := pool.New().WithMaxGoroutines(finishers)
	for _, t := range regs {
		fin.Go(func() {
			if err != nil {
				t.fail(err)
			}
			e.complete(t)
		})
	}
	fin.Wait()
	var dirs, hardlinks, symlinks, specials []*Want
	for _, w := range others {
		switch w.Entry.Type {
		case wire.TypeDir:
			dirs = append(dirs, w)
		case wire.TypeSymlink:
			symlinks = append(symlinks, w)
		case wire.TypeHardlink:
			hardlinks = append(hardlinks, w)
		case wire.TypeFifo, wire.TypeChar, wire.TypeBlock:
			specials = append(specials, w)
		default:
			e.fail(w, wire.StatusRefused, fmt.Errorf("unknown entry type %q", w.Entry.Type))
		}
	}
	if err != nil {
		for _, w := range append(append(append(dirs, hardlinks...), symlinks...), specials...) {
			e.fail(w, wire.StatusFailed, err)
		}
		return err
	}
	dirs = e.makeDirs(dirs)
	for _, w := range specials {
		e.finish(e.special(ctx, w))
	}
	for _, w := range hardlinks {
		src, serr := l.TOC.Source(w.Entry)
		if serr != nil { // a hardlink to nothing, or a cycle
			e.fail(w, wire.StatusRefused, serr)
			continue
		}
		switch t := byName[src.Name]; {
		case t == nil || t.source != src:
			e.fail(w, wire.StatusFailed, fmt.Errorf("it is a hardlink to %s, which was not fetched with it: fetch both, or the directory holding them", w.Entry.LinkName))
		default:
			e.finish(e.hardlink(ctx, w, t))
		}
	}
	for _, w := range symlinks {
		e.finish(e.symlink(ctx, w))
	}
	fin = pool.New().WithMaxGoroutines(finishers)
	for _, w := range dirs {
		fin.Go(func() { e.finish(e.finishDir(ctx, w)) })
	}
	fin.Wait()
	return nil
}

// finishers is how many files or directories of a streamed layer are
// finished (mode, times, rename) at once.
const finishers = 4
