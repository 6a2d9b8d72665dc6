package fetch

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"os"
	"path"
	"regexp"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/sourcegraph/conc/pool"

	"github.com/stargz-get/stargz-get/pkg/toc"
	"github.com/stargz-get/stargz-get/pkg/wire"
)

// Defaults for Options (Jobs is sg-fetch's -j).
const (
	// DefaultJobs is the number of parallel range downloaders.
	DefaultJobs = 8
	// DefaultMaxGap is the largest run of unwanted compressed bytes
	// downloaded (and discarded) to join two members into one request;
	// at 25 MB/s it costs well under one 20 ms round trip.
	DefaultMaxGap = 64 << 10
	// DefaultMaxRequestBytes caps one range request, so a whole-layer fetch
	// is spread over all downloaders.
	DefaultMaxRequestBytes = 8 << 20
	// minRequestBytes keeps small fetches from being split needlessly.
	minRequestBytes = 256 << 10
	// DefaultTries is how often a range request is tried before the files
	// it carries fail.
	DefaultTries = 4
)

// Layer is a layer blob with its parsed TOC.
type Layer struct {
	// Blob reads the layer's bytes.
	Blob toc.RangeReader
	// TOC is the layer's table of contents.
	TOC *toc.TOC
	// Pinned says the TOC's digest matched the manifest's TOC digest
	// annotation, chaining every chunk digest to the manifest.
	Pinned bool
	// Spool holds a whole non-eStargz layer, downloaded and checked
	// against its digest, when TOC.Full is set; files are extracted from
	// it by streaming it once.
	Spool *os.File
}

// Want is one entry to fetch.
type Want struct {
	Layer *Layer
	Entry *toc.Entry
	// Tag is the caller's, returned in the Outcome (e.g. the input record).
	Tag any
}

// Outcome is what happened to one Want.
type Outcome struct {
	Want *Want
	// Path is the entry's path relative to the output directory.
	Path            string
	Status          string // a wire.Status* constant
	Err             error
	Size            int64
	Digest          string
	Verified        string
	CompressedBytes int64
	Requests        int
	Duration        time.Duration
}

// Progress is a snapshot of a run's progress.
type Progress struct {
	BytesDone, BytesTotal int64 // compressed bytes downloaded / planned
	FilesDone, FilesTotal int
}

// Options configure Run.
type Options struct {
	Jobs            int   // parallel range downloaders; 0 means DefaultJobs
	MaxGap          int64 // 0 means DefaultMaxGap; negative means never merge across a gap
	MaxRequestBytes int64 // 0 means DefaultMaxRequestBytes
	Tries           int   // 0 means DefaultTries
	// Progress, when set, is called (from any goroutine, serialized) as
	// bytes arrive and files finish.
	Progress func(Progress)
	// Logf, when set, receives retry and fallback notes for --verbose.
	Logf func(format string, args ...any)
	// PreservePermissions keeps setuid, setgid and sticky bits, which are
	// dropped by default so that nothing fetched gains privileges.
	PreservePermissions bool
	// SameOwner applies the TOC's uid and gid when running as root.
	SameOwner bool
	// Devices creates fifos, and char and block devices when running as
	// root; by default they are skipped.
	Devices bool
	// RequireVerified fails files that have no digests to check (legacy
	// stargz); callers refuse unpinned layers themselves.
	RequireVerified bool
	// Refetch downloads files even when an identical file (same size and
	// digest) is already in place; by default those are skipped, so that a
	// re-run after an interruption fetches only what is missing.
	Refetch bool
}

// target is one regular file being written.
type target struct {
	want   *Want
	layer  *Layer
	name   string     // output path relative to the root
	source *toc.Entry // the entry holding the contents (differs for hardlinks)

	// copyOf is the target downloading the same contents, if any.
	copyOf *target

	// set up by plan, read-only afterwards
	pending    int
	requests   map[*request]struct{}
	compressed int64

	mu      sync.Mutex
	tmpName string
	file    *os.File
	err     error
	started time.Time
	digest  string // of a single-chunk file, from its chunk's hash
	done    bool
}

type engine struct {
	root *os.Root
	opts Options

	outMu sync.Mutex
	emit  func(*Outcome)

	bytesDone  atomic.Int64
	bytesTotal int64
	filesDone  atomic.Int64
	filesTotal int
	cleaned    sync.Map // directories cleared of stale temp files
	progMu     sync.Mutex
	lastProg   time.Time
}

// Run fetches wants into root and calls emit once per want (from any
// goroutine, serialized). When several wants map to the same path, the
// last one is fetched and the earlier ones are skipped. Run returns when
// every want has an outcome; a cancelled ctx fails the rest.
func Run(ctx context.Context, root *os.Root, wants []*Want, opts Options, emit func(*Outcome)) {
	if opts.Jobs <= 0 {
		opts.Jobs = DefaultJobs
	}
	if opts.MaxGap == 0 {
		opts.MaxGap = DefaultMaxGap
	}
	if opts.MaxRequestBytes <= 0 {
		opts.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if opts.Tries <= 0 {
		opts.Tries = DefaultTries
	}
	e := &engine{root: root, opts: opts, emit: emit}

	// Last want per path wins.
	lastFor := map[string]int{}
	for i, w := range wants {
		lastFor[w.Entry.Name] = i
	}
	var (
		targets   []*target
		dirs      []*Want
		specials  []*Want // fifos and devices
		links     []*Want // symlinks and hardlinks to fetched files, made last
		targetFor = map[string]*target{}
	)
	for i, w := range wants {
		if lastFor[w.Entry.Name] != i {
			e.finish(&Outcome{Want: w, Path: w.Entry.Name, Status: wire.StatusSkipped, Err: errors.New("a later entry for the same path replaces it")})
			continue
		}
		if why := w.Entry.Unsafe(); why != "" {
			e.finish(&Outcome{Want: w, Path: w.Entry.Name, Status: wire.StatusFailed, Err: fmt.Errorf("refused: %s", why)})
			continue
		}
		if link, ok := w.Layer.TOC.SymlinkParent(w.Entry.Name); ok {
			e.finish(&Outcome{Want: w, Path: w.Entry.Name, Status: wire.StatusFailed, Err: fmt.Errorf("refused: its parent %s is a symlink in the layer, and nothing is written through a symlink", link)})
			continue
		}
		switch w.Entry.Type {
		case wire.TypeDir:
			dirs = append(dirs, w)
		case wire.TypeSymlink:
			links = append(links, w)
		case wire.TypeReg:
			t := newTarget(w, w.Entry)
			targets = append(targets, t)
			targetFor[layerPath(w.Layer, w.Entry.Name)] = t
		case wire.TypeHardlink:
			src, err := w.Layer.TOC.Source(w.Entry)
			if err != nil {
				e.finish(&Outcome{Want: w, Path: w.Entry.Name, Status: wire.StatusFailed, Err: err})
				continue
			}
			if src.Type != wire.TypeReg {
				e.finish(&Outcome{Want: w, Path: w.Entry.Name, Status: wire.StatusFailed, Err: fmt.Errorf("hardlink to %s %q is not supported", src.Type, src.Name)})
				continue
			}
			links = append(links, w)
		case wire.TypeFifo, wire.TypeChar, wire.TypeBlock:
			specials = append(specials, w)
		default:
			e.finish(&Outcome{Want: w, Path: w.Entry.Name, Status: wire.StatusFailed, Err: fmt.Errorf("refused: unknown entry type %q", w.Entry.Type)})
		}
	}
	// A hardlink whose source is not fetched becomes a copy of the source.
	var hardlinks []*Want
	var symlinks []*Want
	for _, w := range links {
		if w.Entry.Type == wire.TypeSymlink {
			symlinks = append(symlinks, w)
			continue
		}
		src, _ := w.Layer.TOC.Source(w.Entry)
		if _, ok := targetFor[layerPath(w.Layer, src.Name)]; ok {
			hardlinks = append(hardlinks, w)
			continue
		}
		targets = append(targets, newTarget(w, src))
	}

	for _, w := range dirs {
		if err := e.root.MkdirAll(w.Entry.Name, 0o755); err != nil {
			e.finish(&Outcome{Want: w, Path: w.Entry.Name, Status: wire.StatusFailed, Err: fmt.Errorf("creating directory: %w", err)})
		}
	}
	e.runTargets(ctx, targets)
	for _, w := range specials {
		e.finish(e.special(ctx, w))
	}
	for _, w := range hardlinks {
		src, _ := w.Layer.TOC.Source(w.Entry)
		e.finish(e.hardlink(ctx, w, targetFor[layerPath(w.Layer, src.Name)]))
	}
	for _, w := range symlinks {
		e.finish(e.symlink(ctx, w))
	}
	// Directory modes and times last, deepest first, so a read-only
	// directory does not stop its contents from being written.
	sort.SliceStable(dirs, func(i, j int) bool { return depth(dirs[i].Entry.Name) > depth(dirs[j].Entry.Name) })
	for _, w := range dirs {
		e.finish(e.finishDir(ctx, w))
	}
}

func newTarget(w *Want, source *toc.Entry) *target {
	return &target{want: w, layer: w.Layer, name: w.Entry.Name, source: source, requests: map[*request]struct{}{}}
}

func layerPath(l *Layer, name string) string { return fmt.Sprintf("%p/%s", l, name) }

func depth(name string) int {
	n := 0
	for _, c := range name {
		if c == '/' {
			n++
		}
	}
	return n
}

func (e *engine) finish(o *Outcome) {
	if o == nil {
		return
	}
	e.outMu.Lock()
	defer e.outMu.Unlock()
	e.emit(o)
}

func (e *engine) runTargets(ctx context.Context, all []*target) {
	var targets []*target
	for _, t := range all {
		if !e.opts.Refetch {
			if o := e.alreadyThere(t); o != nil {
				e.finish(o)
				continue
			}
		}
		targets = append(targets, t)
	}
	e.filesTotal = len(targets)
	// Identical contents (same digest and size, in any layer) are
	// downloaded once and copied locally.
	var copies []*target
	first := map[string]*target{}
	unique := targets[:0:0]
	for _, t := range targets {
		if t.source.Digest != "" && t.source.Size > 0 {
			k := t.source.Digest + "/" + strconv.FormatInt(t.source.Size, 10)
			if p, ok := first[k]; ok {
				t.copyOf = p
				copies = append(copies, t)
				continue
			}
			first[k] = t
		}
		unique = append(unique, t)
	}
	targets = unique
	var full []*target // from whole layers: extracted, not planned
	lazy := targets[:0:0]
	for _, t := range targets {
		if t.layer.TOC.Full {
			full = append(full, t)
		} else {
			lazy = append(lazy, t)
		}
	}
	targets = lazy
	var total int64
	for _, t := range targets {
		for _, c := range t.source.Chunks {
			total += c.End - c.Offset
		}
	}
	maxReq := requestCap(total, e.opts.Jobs, e.opts.MaxRequestBytes, minRequestBytes)
	reqs := plan(targets, e.opts.MaxGap, maxReq)
	for _, r := range reqs {
		e.bytesTotal += r.end - r.start
	}
	// Files without contents are finished now; the others as their last
	// chunk verifies.
	for _, t := range targets {
		if err := e.prepare(t); err != nil {
			t.fail(err)
			continue
		}
		if t.pending == 0 {
			e.complete(t)
		}
	}
	p := pool.New().WithMaxGoroutines(e.opts.Jobs)
	for _, r := range reqs {
		p.Go(func() { e.do(ctx, r) })
	}
	byLayer := map[*Layer][]*target{}
	for _, t := range full {
		if err := e.prepare(t); err != nil {
			t.fail(err)
		}
		byLayer[t.layer] = append(byLayer[t.layer], t)
	}
	for l, ts := range byLayer {
		p.Go(func() { e.extractFull(ctx, l, ts) })
	}
	p.Wait()
	for _, t := range copies {
		if err := e.prepare(t); err != nil {
			t.fail(err)
		} else if err := ctx.Err(); err != nil {
			t.fail(err)
		} else {
			e.copyLocal(t)
		}
		e.complete(t)
	}
}

// extractFull writes targets from a whole layer's spool, streaming it
// once, then finishes them.
func (e *engine) extractFull(ctx context.Context, l *Layer, targets []*target) {
	bySource := map[string][]*target{}
	for _, t := range targets {
		bySource[t.source.Name] = append(bySource[t.source.Name], t)
	}
	err := func() error {
		if l.Spool == nil {
			return errors.New("whole layer not downloaded")
		}
		tr, err := toc.Decompress(io.NewSectionReader(l.Spool, 0, math.MaxInt64), l.TOC.Format)
		if err != nil {
			return err
		}
		defer tr.Close()
		r := tar.NewReader(tr)
		buf := make([]byte, 256<<10)
		for {
			h, err := r.Next()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return fmt.Errorf("reading layer tar: %w", err)
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			ts := bySource[toc.CleanName(h.Name)]
			if h.Typeflag != tar.TypeReg || len(ts) == 0 {
				continue
			}
			// A name may occur twice in a tar; the last one wins, so each
			// occurrence is written from the start.
			hash := sha256.New()
			ws := []io.Writer{hash}
			var files []*os.File
			for _, t := range ts {
				f, err := t.open(e.root)
				if err != nil {
					t.fail(err)
				} else if f != nil {
					ws = append(ws, io.NewOffsetWriter(f, 0))
					files = append(files, f)
				}
			}
			n, err := io.CopyBuffer(io.MultiWriter(ws...), r, buf)
			e.bytesDone.Add(n)
			if err != nil {
				return fmt.Errorf("extracting %s: %w", h.Name, err)
			}
			for _, f := range files {
				if err := f.Truncate(n); err != nil {
					return err
				}
			}
			dgst := "sha256:" + hex.EncodeToString(hash.Sum(nil))
			for _, t := range ts {
				t.mu.Lock()
				t.digest = dgst
				t.mu.Unlock()
			}
		}
	}()
	for _, t := range targets {
		if err != nil {
			t.fail(err)
		} else if t.file == nil && t.source.Size > 0 {
			t.fail(fmt.Errorf("%s not found in the layer", t.source.Name))
		}
		e.complete(t)
	}
}

// copyLocal writes a target whose contents another target (copyOf)
// downloaded, from that file, hashing as it goes; commit then verifies the
// digest like any other file.
func (e *engine) copyLocal(t *target) {
	src := t.copyOf
	src.mu.Lock()
	srcErr := src.err
	src.mu.Unlock()
	if srcErr != nil {
		t.fail(fmt.Errorf("its contents were to come from %s, which failed", src.name))
		return
	}
	in, err := e.root.Open(src.name)
	if err != nil {
		t.fail(fmt.Errorf("copying from %s: %w", src.name, err))
		return
	}
	defer in.Close()
	f, err := t.open(e.root)
	if err != nil || f == nil {
		t.fail(fmt.Errorf("creating temp file: %w", err))
		return
	}
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(f, h), in); err != nil {
		t.fail(fmt.Errorf("copying from %s: %w", src.name, err))
		return
	}
	t.mu.Lock()
	t.digest = "sha256:" + hex.EncodeToString(h.Sum(nil))
	t.mu.Unlock()
}

// prepare creates the target's parent directories and clears temp files
// a killed earlier run left there.
func (e *engine) prepare(t *target) error {
	dir := path.Dir(t.name)
	if dir != "." {
		if err := e.root.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("creating directory %s: %w", dir, err)
		}
	}
	if _, seen := e.cleaned.LoadOrStore(dir, true); !seen {
		e.removeStaleTemps(dir)
	}
	return nil
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

var tempPattern = regexp.MustCompile(`^\.sg-[0-9a-f]{12}-.*\.tmp$`)

// alreadyThere returns a skipped outcome when the target's path already
// holds a regular file with the same size and digest, else nil.
func (e *engine) alreadyThere(t *target) *Outcome {
	if t.source.Digest == "" {
		return nil
	}
	fi, err := e.root.Lstat(t.name)
	if err != nil || !fi.Mode().IsRegular() || fi.Size() != t.source.Size {
		return nil
	}
	f, err := e.root.Open(t.name)
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

// do runs one request, retrying from the first member not yet finished.
func (e *engine) do(ctx context.Context, r *request) {
	next := 0
	buf := make([]byte, 128<<10)
	var zr gzip.Reader
	for attempt := 1; ; attempt++ {
		err := e.stream(ctx, r, &next, buf, &zr)
		if err == nil {
			return
		}
		if ctx.Err() != nil || attempt >= e.opts.Tries {
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			for _, m := range r.members[next:] {
				for _, s := range m.segments {
					if !s.done {
						for _, t := range s.targets {
							e.segmentFailed(t, err)
						}
					}
				}
			}
			return
		}
		wait := backoff(attempt)
		e.logf("bytes %d-%d of %s: %v; retrying in %s", r.members[next].offset, r.end-1, r.layer.Blob, err, wait.Round(time.Millisecond))
		select {
		case <-time.After(wait):
		case <-ctx.Done():
		}
	}
}

// backoff is exponential with full jitter, from 100 ms to 5 s.
func backoff(attempt int) time.Duration {
	d := time.Duration(float64(100*time.Millisecond) * math.Pow(2, float64(attempt-1)))
	d = min(d, 5*time.Second)
	return d/2 + time.Duration(mrand.Int64N(int64(d/2)+1))
}

// stream reads members r.members[*next:] in one range request.
func (e *engine) stream(ctx context.Context, r *request, next *int, buf []byte, zr *gzip.Reader) error {
	start := r.members[*next].offset
	body, err := r.layer.Blob.ReadRange(ctx, start, r.end-start)
	if err != nil {
		return err
	}
	defer body.Close()
	br := bufio.NewReaderSize(&countingReader{r: body, e: e}, 64<<10)
	pos := start
	for ; *next < len(r.members); *next++ {
		m := r.members[*next]
		if _, err := br.Discard(int(m.offset - pos)); err != nil {
			return fmt.Errorf("skipping to member at %d: %w", m.offset, err)
		}
		lim := &limitedByteReader{r: br, n: m.end - m.offset}
		if err := e.member(m, lim, buf, zr); err != nil {
			return err
		}
		if _, err := io.CopyBuffer(io.Discard, lim, buf); err != nil {
			return fmt.Errorf("reading member at %d: %w", m.offset, err)
		}
		pos = m.end
	}
	return nil
}

// member decodes one gzip member and writes its wanted segments.
func (e *engine) member(m *member, lim *limitedByteReader, buf []byte, zr *gzip.Reader) error {
	if err := zr.Reset(lim); err != nil {
		return fmt.Errorf("member at %d: %w", m.offset, err)
	}
	zr.Multistream(false)
	var at int64 // position in the decompressed stream
	for _, s := range m.segments {
		if skip := s.chunk.InnerOffset - at; skip > 0 {
			if _, err := io.CopyBuffer(io.Discard, io.LimitReader(zr, skip), buf); err != nil {
				return fmt.Errorf("member at %d: %w", m.offset, err)
			}
			at += skip
		}
		h := sha256.New()
		ws := []io.Writer{h}
		for _, t := range s.targets {
			f, err := t.open(e.root)
			if err != nil {
				t.fail(err)
				continue
			}
			if f != nil {
				ws = append(ws, io.NewOffsetWriter(f, s.chunk.FileOffset))
			}
		}
		n, err := io.CopyBuffer(io.MultiWriter(ws...), io.LimitReader(zr, s.chunk.Size), buf)
		at += n
		if err == nil && n < s.chunk.Size {
			err = io.ErrUnexpectedEOF
		}
		var pe *os.PathError
		switch {
		case errors.As(err, &pe):
			// A local write failed: the targets fail, and the stream
			// restarts after this segment (its position is lost).
			for _, t := range s.targets {
				t.fail(err)
			}
			if !s.done {
				s.done = true
				for _, t := range s.targets {
					e.segmentDone(t, s, "")
				}
			}
			return fmt.Errorf("member at %d: %w", m.offset, err)
		case err != nil:
			return fmt.Errorf("member at %d: decompressing: %w", m.offset, err)
		}
		got := "sha256:" + hex.EncodeToString(h.Sum(nil))
		if s.chunk.Digest != "" && got != s.chunk.Digest {
			return fmt.Errorf("chunk at %d of %q: digest %s, TOC says %s", s.chunk.FileOffset, s.targets[0].source.Name, got, s.chunk.Digest)
		}
		if s.done {
			continue
		}
		s.done = true
		for _, t := range s.targets {
			e.segmentDone(t, s, got)
		}
	}
	return nil
}

// open opens the target's temp file on first use. It returns nil, nil when
// the target has already failed.
func (t *target) open(root *os.Root) (*os.File, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.err != nil || t.done {
		return nil, nil
	}
	if t.file != nil {
		return t.file, nil
	}
	t.started = time.Now()
	t.tmpName = tempName(t.name)
	f, err := root.OpenFile(t.tmpName, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("creating temp file: %w", err)
	}
	t.file = f
	return f, nil
}

func (e *engine) segmentDone(t *target, s *segment, dgst string) {
	t.mu.Lock()
	t.pending--
	if s.chunk.FileOffset == 0 && s.chunk.Size == t.source.Size {
		t.digest = dgst
	}
	last := t.pending == 0
	t.mu.Unlock()
	if last {
		e.complete(t)
	}
}

func (e *engine) segmentFailed(t *target, err error) {
	t.mu.Lock()
	t.pending--
	if t.err == nil {
		t.err = err
	}
	last := t.pending == 0
	t.mu.Unlock()
	if last {
		e.complete(t)
	}
}

// fail records err for a target with no chunks in flight.
func (t *target) fail(err error) {
	t.mu.Lock()
	if t.err == nil {
		t.err = err
	}
	t.mu.Unlock()
}

// complete finishes a target whose chunks are all accounted for: verify,
// set mode and time, rename into place, report.
func (e *engine) complete(t *target) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done {
		return
	}
	t.done = true
	o := &Outcome{Want: t.want, Path: t.name, Size: t.source.Size, CompressedBytes: t.compressed, Requests: len(t.requests)}
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
			_ = e.root.Remove(t.tmpName)
		}
		o.Status, o.Err = wire.StatusFailed, err
	} else {
		o.Status = wire.StatusFetched
	}
	e.filesDone.Add(1)
	e.progress(true)
	e.finish(o)
}

// commit verifies the complete temp file and renames it into place.
func (e *engine) commit(t *target) (dgst, verified string, err error) {
	if t.file == nil { // empty file
		t.started = time.Now()
		t.tmpName = tempName(t.name)
		if t.file, err = e.root.OpenFile(t.tmpName, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600); err != nil {
			return "", "", fmt.Errorf("creating temp file: %w", err)
		}
	}
	dgst = t.digest
	if dgst == "" {
		if dgst, err = fileDigest(t.file); err != nil {
			return "", "", err
		}
	}
	chunkDigests := true
	for _, c := range t.source.Chunks {
		chunkDigests = chunkDigests && c.Digest != ""
	}
	switch {
	case t.source.Digest != "" && dgst != t.source.Digest:
		return "", "", fmt.Errorf("file digest %s does not match the TOC's %s", dgst, t.source.Digest)
	case t.source.Digest == "" && !chunkDigests && e.opts.RequireVerified:
		return "", "", errors.New("the TOC has no digests for this file; --require-verified refuses it")
	case t.source.Digest == "" && !chunkDigests:
		verified = ""
	case t.layer.TOC.Full:
		verified = "layer"
	case t.layer.Pinned:
		verified = "toc"
	default:
		verified = "toc-unpinned"
	}
	if err := t.file.Close(); err != nil {
		return "", "", fmt.Errorf("writing %s: %w", t.name, err)
	}
	ent := t.want.Entry
	if err := e.root.Chmod(t.tmpName, e.fileMode(t.source.Mode)); err != nil {
		return "", "", err
	}
	if err := e.chown(t.tmpName, t.source.UID, t.source.GID); err != nil {
		return "", "", err
	}
	if mt := ent.ModTime(); !mt.IsZero() {
		if err := e.root.Chtimes(t.tmpName, mt, mt); err != nil {
			return "", "", err
		}
	}
	if err := e.root.Rename(t.tmpName, t.name); err != nil {
		return "", "", fmt.Errorf("renaming into place: %w", err)
	}
	return dgst, verified, nil
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
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, math.MaxInt64)); err != nil {
		return "", fmt.Errorf("hashing written file: %w", err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
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
	fi, err := e.root.Lstat(w.Entry.Name)
	if err != nil || !fi.IsDir() {
		if err == nil {
			err = errors.New("path exists and is not a directory")
		}
		o.Status, o.Err = wire.StatusFailed, fmt.Errorf("creating directory: %w", err)
		return o
	}
	if err := e.root.Chmod(w.Entry.Name, e.fileMode(w.Entry.Mode)|0o700); err != nil {
		o.Status, o.Err = wire.StatusFailed, err
		return o
	}
	if mt := w.Entry.ModTime(); !mt.IsZero() {
		_ = e.root.Chtimes(w.Entry.Name, mt, mt)
	}
	o.Status = wire.StatusFetched
	return o
}

// tempName is a hidden name beside name, unique to this process.
func tempName(name string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	dir, base := path.Split(name)
	return dir + ".sg-" + hex.EncodeToString(b[:]) + "-" + base + ".tmp"
}

func (e *engine) logf(format string, args ...any) {
	if e.opts.Logf != nil {
		e.opts.Logf(format, args...)
	}
}

// progress reports at most every 100 ms, and always when force is set.
func (e *engine) progress(force bool) {
	if e.opts.Progress == nil {
		return
	}
	e.progMu.Lock()
	defer e.progMu.Unlock()
	if !force && time.Since(e.lastProg) < 100*time.Millisecond {
		return
	}
	e.lastProg = time.Now()
	e.opts.Progress(Progress{
		BytesDone: e.bytesDone.Load(), BytesTotal: e.bytesTotal,
		FilesDone: int(e.filesDone.Load()), FilesTotal: e.filesTotal,
	})
}

type countingReader struct {
	r io.Reader
	e *engine
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.e.bytesDone.Add(int64(n))
	c.e.progress(false)
	return n, err
}

// limitedByteReader is io.LimitReader for a bufio.Reader that keeps
// io.ByteReader, so the gzip reader reads exactly the member's bytes
// without buffering of its own.
type limitedByteReader struct {
	r *bufio.Reader
	n int64
}

func (l *limitedByteReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	if err == io.EOF && l.n > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (l *limitedByteReader) ReadByte() (byte, error) {
	if l.n <= 0 {
		return 0, io.EOF
	}
	b, err := l.r.ReadByte()
	if err == nil {
		l.n--
	} else if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return b, err
}
