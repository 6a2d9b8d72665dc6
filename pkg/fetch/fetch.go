package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sourcegraph/conc"
	"github.com/sourcegraph/conc/pool"

	"github.com/stargz-get/stargz-get/internal/libdeflate"
	"github.com/stargz-get/stargz-get/pkg/cache"
	"github.com/stargz-get/stargz-get/pkg/toc"
	"github.com/stargz-get/stargz-get/pkg/wire"
)

// Defaults for Options (Jobs is sg-fetch's -j).
const (
	// DefaultJobs is the number of parallel range downloaders. Measured
	// with the benchmark (25 MB/s per connection, 20 ms RTT): 100
	// scattered files take 0.91 s at 4, 0.60 s at 8, 0.53 s at 16;
	// whole-layer and big-file fetches are flat from 8 to 32, and 32 costs
	// more memory.
	DefaultJobs = 16
	// DefaultMaxGap is the largest run of unwanted compressed bytes
	// downloaded (and discarded) to join two members into one request;
	// at 25 MB/s it costs well under one 20 ms round trip.
	DefaultMaxGap = 64 << 10
	// DefaultMaxRequestBytes caps one range request, so a whole-layer fetch
	// is spread over all downloaders.
	DefaultMaxRequestBytes = 8 << 20
	// DefaultMaxRanges caps the byte ranges one request asks for. Runs of
	// wanted members too far apart to join are asked for together in
	// multi-range requests (answered with multipart/byteranges), so 100
	// scattered small files cost a few requests, not 100; a server that
	// does not answer them is asked range by range.
	DefaultMaxRanges = 64
	// DefaultWindow is how many uncompressed bytes Contents keeps in
	// flight: 12 chunks of eStargz's default 4 MiB, enough to fill a
	// 100 MB/s link at 25 MB/s per connection with room to spare, and
	// well under 100 MiB of memory whatever the file size.
	DefaultWindow = 48 << 20
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
	// Ahead, when set, holds spans of the blob read before the TOC was at
	// hand (see NewAhead); Run's downloaders take them over.
	Ahead *Ahead
	// Plain reads a layer that is not eStargz (TOC.Full is set): files are
	// extracted from its stream, stopping after the last one wanted, or,
	// when it has a seek index, read lazily from the nearest checkpoints.
	Plain Plain

	// unchecked is set by RunStream when the layer's stream stopped before
	// its end, so that its digest was not checked.
	unchecked bool
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
	// CachedBytes are the uncompressed bytes read from the chunk cache.
	CachedBytes int64
	Duration    time.Duration
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
	// MaxRanges caps the byte ranges of one request; 0 means
	// DefaultMaxRanges, 1 turns multi-range requests off.
	MaxRanges int
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
	// root; by default they are refused (wire.StatusRefused).
	Devices bool
	// RequireVerified fails files that have no digests to check (legacy
	// stargz); callers refuse unpinned layers themselves.
	RequireVerified bool
	// Window bounds the uncompressed bytes Contents holds at once
	// (downloading, or downloaded and not yet written out, in order); 0
	// means DefaultWindow. A single chunk larger than it is still read.
	Window int64
	// Chunks is where Contents gets chunks' bytes; nil means
	// RemoteChunks(opts). A chunk cache goes here.
	Chunks ChunkSource
	// Cache, when set, keeps verified chunks across runs (kind ChunkKind,
	// each under its digest): Run reads the chunks it holds from it
	// instead of the registry, checking each against its digest, and
	// stores those it downloads from a bounded background writer; Contents
	// reads through CachedChunks when Chunks is nil.
	Cache *cache.Cache
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

	// copyOf is the target downloading the same contents, if any; copies
	// are the targets copying from this one, copying whether one of them
	// has been started (see startCopy).
	copyOf  *target
	copies  []*target
	copying atomic.Bool

	// skip marks the chunks read from the cache, which plan leaves out;
	// cached counts their bytes (under mu).
	skip   []bool
	cached int64

	// set up by plan, read-only afterwards
	pending    int
	requests   int      // how many requests carry its chunks
	lastReq    *request // the last request counted in requests
	compressed int64

	// dh is the target's directory (set by prepare); ops and rel are how
	// the file is handled, the operations of its directory and its name
	// relative to them (set by acquire on first use).
	dh  *dirHandle
	ops dirOps
	rel string

	mu      sync.Mutex
	tmpName string // relative to r
	file    *os.File
	err     error
	started time.Time
	digest  string // of a single-chunk file, from its chunk's hash
	done    bool
	ok      bool // done, verified and renamed into place
	sealed  bool // written, mode and times set, closed: only the rename is left (see park)
}

type engine struct {
	root *os.Root
	opts Options
	// maxName is the longest name part the output filesystem takes.
	maxName int

	outMu sync.Mutex
	emit  func(*Outcome)

	bytesDone  atomic.Int64
	bytesTotal int64
	filesDone  atomic.Int64
	filesTotal int
	dirMu      sync.Mutex
	dirs       map[string]*dirHandle // by directory, see dir
	ready      chan struct{}         // closed when directories are made, if they are made while downloading
	dirfds     *dirTable             // descriptors of the output directories, for the run
	progMu     sync.Mutex
	lastProg   time.Time
	pack       *cache.Pack // where downloaded chunks are kept; nil without a cache
	// copyQueue holds the local copies of files downloaded once, for the
	// copies goroutines (see startCopy).
	copyQueue chan *target
	copies    conc.WaitGroup
}

// newEngine returns an engine writing into root; its dirfds must be
// closed when the run is over.
func newEngine(root *os.Root, opts Options, emit func(*Outcome)) *engine {
	return &engine{root: root, opts: opts.withDefaults(), emit: emit, dirs: map[string]*dirHandle{},
		dirfds: newDirTable(root), maxName: nameMax(root)}
}

// Run fetches wants into root and calls emit once per want (from any
// goroutine, serialized). When several wants map to the same path, the
// last one is fetched and the earlier ones are skipped. Run returns when
// every want has an outcome; a cancelled ctx fails the rest.
func Run(ctx context.Context, root *os.Root, wants []*Want, opts Options, emit func(*Outcome)) {
	e := newEngine(root, opts, emit)
	defer e.dirfds.close()
	// Last want per path wins.
	lastFor := make(map[string]int, len(wants))
	for i, w := range wants {
		lastFor[w.Entry.Name] = i
	}
	var (
		targets   []*target
		dirs      []*Want
		specials  []*Want // fifos and devices
		links     []*Want // symlinks and hardlinks to fetched files, made last
		targetFor = make(map[layerPath]*target, len(wants))
	)
	for i, w := range wants {
		if lastFor[w.Entry.Name] != i {
			e.fail(w, wire.StatusSkipped, errors.New("a later entry for the same path replaces it"))
			continue
		}
		if why := refusal(w, e.maxName); why != nil {
			e.fail(w, wire.StatusRefused, why)
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
			targetFor[layerPath{w.Layer, w.Entry.Name}] = t
		case wire.TypeHardlink:
			src, err := w.Layer.TOC.Source(w.Entry)
			if err != nil { // a hardlink to nothing, or a cycle
				e.fail(w, wire.StatusRefused, err)
				continue
			}
			if src.Type != wire.TypeReg {
				e.fail(w, wire.StatusRefused, fmt.Errorf("hardlink to %s %q is not supported", src.Type, src.Name))
				continue
			}
			links = append(links, w)
		case wire.TypeFifo, wire.TypeChar, wire.TypeBlock:
			specials = append(specials, w)
		default:
			e.fail(w, wire.StatusRefused, fmt.Errorf("unknown entry type %q", w.Entry.Type))
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
		if _, ok := targetFor[layerPath{w.Layer, src.Name}]; ok {
			hardlinks = append(hardlinks, w)
			continue
		}
		targets = append(targets, newTarget(w, src))
	}

	dirs = e.runTargets(ctx, targets, dirs)
	for _, w := range specials {
		e.finish(e.special(ctx, w))
	}
	for _, w := range hardlinks {
		src, _ := w.Layer.TOC.Source(w.Entry)
		e.finish(e.hardlink(ctx, w, targetFor[layerPath{w.Layer, src.Name}]))
	}
	for _, w := range symlinks {
		e.finish(e.symlink(ctx, w))
	}
	// Directory modes and times last, when nothing more is written into
	// them; a few at a time (each is a path walk and three system calls,
	// and whole layers have thousands), in any order: setting one
	// directory's mode or times changes nothing of its parent's, and the
	// owner keeps write permission (see finishDir).
	p := pool.New().WithMaxGoroutines(4)
	for _, w := range dirs {
		p.Go(func() { e.finish(e.finishDir(ctx, w)) })
	}
	p.Wait()
}

// refusal says which rule writing w would break, if any: a name that
// climbs out or is absolute, a link pointing out (Entry.Unsafe), a name
// part longer than maxName, or a parent that is a symlink in the layer.
func refusal(w *Want, maxName int) error {
	if why := w.Entry.Unsafe(); why != "" {
		return errors.New(why)
	}
	if why := longComponent(w.Entry.Name, maxName); why != "" {
		return errors.New(why)
	}
	if link, ok := w.Layer.TOC.SymlinkParent(w.Entry.Name); ok {
		return fmt.Errorf("its parent %s is a symlink in the layer, and nothing is written through a symlink", link)
	}
	return nil
}

func newTarget(w *Want, source *toc.Entry) *target {
	return &target{want: w, layer: w.Layer, name: w.Entry.Name, source: source}
}

// layerPath names an entry of one layer.
type layerPath struct {
	layer *Layer
	name  string
}

// fail reports that w was not written, with status failed, refused or
// skipped.
func (e *engine) fail(w *Want, status string, err error) {
	e.finish(&Outcome{Want: w, Path: w.Entry.Name, Status: status, Err: err})
}

func (e *engine) finish(o *Outcome) {
	if o == nil {
		return
	}
	e.outMu.Lock()
	defer e.outMu.Unlock()
	e.emit(o)
}

// makeDirs makes the directories of directory entries, and returns the
// entries made.
func (e *engine) makeDirs(dirs []*Want) []*Want {
	made := dirs[:0:0]
	for _, w := range dirs {
		if err := e.mkdirEntry(w.Entry.Name); err != nil {
			e.fail(w, wire.StatusFailed, err)
			continue
		}
		made = append(made, w)
	}
	return made
}

// rootEmpty reports whether the output directory holds nothing.
func (e *engine) rootEmpty() bool {
	f, err := e.root.Open(".")
	if err != nil {
		return false
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	return len(names) == 0 && errors.Is(err, io.EOF)
}

// waitReady waits until the directories are made (see runTargets).
func (e *engine) waitReady() {
	if e.ready != nil {
		<-e.ready
	}
}

// runTargets makes the directories, fetches the regular files, and returns
// the directory entries made.
func (e *engine) runTargets(ctx context.Context, all []*target, dirs []*Want) []*Want {
	var targets []*target
	if e.rootEmpty() {
		// Nothing of an earlier run can be there: no file to look for, so
		// the downloads start at once and the directories (tens of ms for
		// a whole layer) are made while the first answers are on their
		// way; writing a file waits for them (see open).
		targets = all
		e.ready = make(chan struct{})
		go func() {
			defer close(e.ready)
			dirs = e.makeDirs(dirs)
			for _, t := range all {
				if err := e.prepare(t); err != nil {
					t.fail(err)
				}
			}
		}()
	} else {
		dirs = e.makeDirs(dirs)
		for _, t := range all {
			if err := e.prepare(t); err != nil {
				t.fail(err)
				e.complete(t)
				continue
			}
			if !e.opts.Refetch {
				if o := e.alreadyThere(t); o != nil {
					e.finish(o)
					continue
				}
			}
			targets = append(targets, t)
		}
	}
	e.filesTotal = len(targets)
	// Identical contents (same digest and size, in any layer) are
	// downloaded once and copied locally.
	var copies []*target
	type contents struct {
		digest string
		size   int64
	}
	first := make(map[contents]*target, len(targets))
	unique := targets[:0:0]
	for _, t := range targets {
		if t.source.Digest != "" && t.source.Size > 0 {
			k := contents{t.source.Digest, t.source.Size}
			if p, ok := first[k]; ok {
				t.copyOf = p
				p.copies = append(p.copies, t)
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
	var hits []*request
	var cachedOffs map[*Layer][]int64
	if e.opts.Cache != nil {
		hits, cachedOffs = e.lookupCache(targets)
		if p, err := e.opts.Cache.NewPack(ChunkKind); err == nil {
			e.pack = p
			defer func() {
				if err := p.Wait(); err != nil {
					e.logf("keeping chunks in the cache: %v", err)
				}
			}()
		}
	}
	if err := libdeflate.Load(); err != nil && total > 0 {
		e.logf("small gzip members stream through klauspost/compress: %v", err)
	}
	maxReq := requestCap(total, e.opts.Jobs, e.opts.MaxRequestBytes, minRequestBytes)
	reqs := plan(targets, e.opts.MaxGap, maxReq, e.opts.MaxRequestBytes, e.opts.Jobs, e.opts.MaxRanges, cachedOffs)
	aheadDone := map[*Ahead]bool{}
	for _, r := range reqs {
		e.bytesTotal += r.bytes()
		if a := r.layer.Ahead; a != nil && !aheadDone[a] {
			aheadDone[a] = true
			a.keep(reqs)
		}
	}
	// The requests that take over spans read ahead first: their bytes
	// are flowing already, and a span left waiting behind other requests
	// fills its buffer, stops, and ends the fetch late.
	taking, rest := reqs[:0:0], reqs[:0:0]
	for _, r := range reqs {
		if r.layer.Ahead.takes(r) {
			taking = append(taking, r)
		} else {
			rest = append(rest, r)
		}
	}
	reqs = append(taking, rest...)
	// The downloads first, so that they start at once; the downloaders
	// free first read the cached chunks meanwhile.
	reqs = append(reqs, hits...)
	var empty []*target
	for _, t := range targets {
		if t.pending == 0 {
			empty = append(empty, t)
		}
	}
	// Copies start as their source is done (see complete), beside the
	// downloads.
	e.copyQueue = make(chan *target, len(copies)) // never blocks: each is queued once
	for range localCopies {
		e.copies.Go(func() {
			for t := range e.copyQueue {
				if err := ctx.Err(); err != nil {
					t.fail(err)
				} else {
					e.copyLocal(t)
				}
				e.complete(t)
			}
		})
	}
	q := newQueue(reqs)
	var downloaders conc.WaitGroup
	for range e.opts.Jobs {
		downloaders.Go(func() {
			for r := q.take(); r != nil; r = q.take() {
				func() {
					var more []*request
					// Done even when do panics, so that the other
					// downloaders finish and the panic reaches Wait.
					defer func() { q.done(more...) }()
					more = e.do(ctx, r)
				}()
			}
		})
	}
	p := pool.New().WithMaxGoroutines(e.opts.Jobs)
	// Files without contents are finished now; the others as their last
	// chunk verifies.
	e.waitReady()
	for _, t := range empty {
		e.complete(t)
	}
	byLayer := map[*Layer][]*target{}
	for _, t := range full {
		byLayer[t.layer] = append(byLayer[t.layer], t)
	}
	for l, ts := range byLayer {
		p.Go(func() { e.extractFull(ctx, l, ts) })
	}
	downloaders.Wait()
	p.Wait()
	// Copies whose source never completed (it failed before any chunk,
	// or the run was cancelled) start now, and fail.
	for _, t := range copies {
		e.startCopy(t)
	}
	close(e.copyQueue)
	e.copies.Wait()
	return dirs
}

// localCopies is how many files are copied locally at once, as their
// sources are done: each is a few system calls and a copy in the kernel,
// and a layer holding its contents several times over has tens of
// thousands.
const localCopies = 4

// startCopy queues the copy of target t from its source, once; the
// caller (a downloader finishing the source) goes on at once.
func (e *engine) startCopy(t *target) {
	if t.copying.CompareAndSwap(false, true) {
		e.copyQueue <- t
	}
}

// open opens the target's temp file on first use. It returns nil, nil when
// the target has already failed.
func (e *engine) open(t *target) (*os.File, error) {
	e.waitReady()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.err != nil || t.done {
		return nil, nil
	}
	if t.file != nil {
		return t.file, nil
	}
	e.acquire(t)
	t.started = time.Now()
	t.tmpName = tempName(t.rel)
	f, err := t.ops.create(t.tmpName)
	if err != nil {
		return nil, fmt.Errorf("creating temp file: %w", err)
	}
	t.file = f
	return f, nil
}

func (e *engine) segmentDone(w segWrite, s *segment, dgst string) {
	t := w.t
	t.mu.Lock()
	t.pending--
	if w.off == 0 && s.chunk.Size == t.source.Size {
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
