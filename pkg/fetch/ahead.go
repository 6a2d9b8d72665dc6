package fetch

import (
	"cmp"
	"context"
	"errors"
	"io"
	"slices"
	"sync/atomic"

	"github.com/stargz-get/stargz-get/pkg/registry"
	"github.com/stargz-get/stargz-get/pkg/toc"
)

// Ahead is a layer's data read before its TOC is at hand. A whole-layer
// fetch otherwise waits a round trip, the TOC's transfer and its decoding
// (about 0.1 s at 20 ms RTT for a 20k-file layer) before the first data
// request goes out; spans started at once keep the link busy meanwhile.
//
// Each span is one range request whose first bytes (up to aheadBuffer)
// are read into memory while the TOC is read. plan cuts a layer's runs at
// its spans' starts, so that each run begins in a span; the downloader of
// that run takes the span's request over (claim) instead of asking for
// its bytes anew. A span no run takes is closed when the plan is made.
//
// Nothing read ahead is trusted: the bytes go through the same decoding
// and checks against the TOC as any request's, and a span that does not
// line up with the TOC's members fails those checks and is read again
// with a request of its own, as a failed request is.
type Ahead struct {
	ctx    context.Context
	blob   toc.RangeReader
	spans  []*aheadSpan // by start, not overlapping
	cancel context.CancelFunc
}

type aheadSpan struct {
	start, end int64
	stop       atomic.Bool   // tells the reader to hand over
	done       chan struct{} // closed when the reader has returned
	claimed    atomic.Bool   // taken by a run, or closed
	dropped    atomic.Bool   // closed without a run taking it
	released   chan struct{} // closed once a dropped span's request is

	// Set by the reader, read after done.
	body io.ReadCloser
	buf  []byte
	err  error // of opening or reading; io.EOF when the span was read whole
}

// aheadBuffer is how many bytes of a span are read into memory before a
// run takes it: 16 spans sharing a 100 MB/s link get about 0.4 MB each
// in the 60 ms the TOC takes, and a span that fills its buffer waits
// (its connection's window holds the rest).
const aheadBuffer = 1 << 20

// NewAhead returns an Ahead of blob without spans; ctx bounds the
// requests Start sends. The caller attaches it to the layer (Layer.Ahead)
// before Run and closes it after.
func NewAhead(ctx context.Context, blob toc.RangeReader) *Ahead {
	ctx, cancel := context.WithCancel(ctx)
	return &Ahead{ctx: ctx, blob: blob, cancel: cancel}
}

// Start starts reading span sp, which overlaps none started before. It
// is not for concurrent use, nor after Run has begun.
func (a *Ahead) Start(sp registry.Span) {
	s := &aheadSpan{start: sp.Off, end: sp.Off + sp.N, done: make(chan struct{})}
	i, _ := slices.BinarySearchFunc(a.spans, s.start, func(x *aheadSpan, off int64) int { return cmp.Compare(x.start, off) })
	a.spans = slices.Insert(a.spans, i, s)
	go s.read(a.ctx, a.blob)
}

// read opens the span's request and buffers its first bytes until it is
// claimed or its buffer is full.
func (s *aheadSpan) read(ctx context.Context, blob toc.RangeReader) {
	defer close(s.done)
	body, err := blob.ReadRange(ctx, s.start, s.end-s.start)
	if err != nil {
		s.err = err
		return
	}
	s.body = body
	s.buf = offHeap(int(min(aheadBuffer, s.end-s.start)))[:0]
	for len(s.buf) < cap(s.buf) && !s.stop.Load() {
		// Small reads, so that a claim waits for little.
		n, err := body.Read(s.buf[len(s.buf):min(len(s.buf)+32<<10, cap(s.buf))])
		s.buf = s.buf[:len(s.buf)+n]
		if err != nil {
			s.err = err
			return
		}
	}
}

// Close stops the spans no run took and releases their requests.
func (a *Ahead) Close() {
	if a == nil {
		return
	}
	for _, s := range a.spans {
		s.drop()
	}
	a.cancel()
	for _, s := range a.spans {
		if s.released != nil {
			<-s.released
		}
	}
}

// drop closes the span unless a run took it, without waiting for its
// request to be answered (the plan is made by then, and the downloads are
// to start). Only the goroutine that calls Start, keep and Close calls it.
func (s *aheadSpan) drop() {
	if !s.claimed.CompareAndSwap(false, true) {
		return
	}
	s.stop.Store(true)
	s.released = make(chan struct{})
	go func() {
		defer close(s.released)
		<-s.done
		s.release()
	}()
}

// release lets go of what the span's reader left (its buffer and
// request) when no run uses them; only after done.
func (s *aheadSpan) release() {
	s.dropped.Store(true)
	freeOffHeap(s.buf)
	s.buf = nil
	if s.body != nil {
		s.body.Close()
	}
}

// spanOf returns the index of the span holding blob offset off.
func (a *Ahead) spanOf(off int64) (int, bool) {
	if a == nil {
		return 0, false
	}
	i, found := slices.BinarySearchFunc(a.spans, off, func(s *aheadSpan, off int64) int { return cmp.Compare(s.start, off) })
	if !found {
		i--
	}
	if i < 0 || off >= a.spans[i].end {
		return 0, false
	}
	return i, true
}

// takes says whether request r will take over one of a's spans (see
// claim).
func (a *Ahead) takes(r *request) bool {
	if a == nil || r.layer.Ahead != a || r.local || len(r.runs) != 1 {
		return false
	}
	i, ok := a.spanOf(r.runs[0].start)
	return ok && r.runs[0].start-a.spans[i].start <= aheadBuffer
}

// keep closes the spans in which no request's first run starts: no run
// will take them, and each would go on moving bytes for nothing.
func (a *Ahead) keep(reqs []*request) {
	if a == nil {
		return
	}
	used := make([]bool, len(a.spans))
	for _, r := range reqs {
		if a.takes(r) {
			i, _ := a.spanOf(r.runs[0].start)
			used[i] = true
		}
	}
	for i, s := range a.spans {
		if !used[i] {
			s.drop()
		}
	}
}

// claim returns the bytes [start, end) of the blob read through the span
// holding start, if that span is still free and starts at most
// aheadBuffer bytes before it: what the span read ahead, then the rest of
// its request, then, for bytes past the span's end, a request of their
// own, sent at once. ok is false when the caller is to send its own
// request.
func (a *Ahead) claim(ctx context.Context, start, end int64) (rc io.ReadCloser, ok bool) {
	i, found := a.spanOf(start)
	if !found {
		return nil, false
	}
	s := a.spans[i]
	skip := start - s.start
	if skip > aheadBuffer || !s.claimed.CompareAndSwap(false, true) {
		return nil, false
	}
	s.stop.Store(true)
	<-s.done
	if s.err != nil && !errors.Is(s.err, io.EOF) {
		s.release()
		return nil, false
	}
	r := &aheadReader{body: s.body}
	var parts []io.Reader
	if skip < int64(len(s.buf)) {
		r.buf = s.buf
		parts = append(parts, &bufReader{r: r, b: s.buf[skip:]})
		skip = 0
	} else {
		skip -= int64(len(s.buf))
	}
	// The reader holds the buffer now, and unmaps it once it is read:
	// the spans are kept until Close (16 MiB for W3, all the run).
	if r.buf == nil {
		freeOffHeap(s.buf)
	}
	s.buf = nil
	if s.err == nil { // more bytes to come from the span's request
		if skip > 0 {
			if _, err := io.CopyN(io.Discard, s.body, skip); err != nil {
				s.dropped.Store(true)
				s.body.Close()
				return nil, false
			}
		}
		parts = append(parts, s.body)
	}
	head := io.LimitReader(io.MultiReader(parts...), min(end, s.end)-start)
	if end <= s.end {
		r.r = head
		return r, true
	}
	r.tail = make(chan tailResult, 1)
	go func() {
		body, err := a.blob.ReadRange(ctx, s.end, end-s.end)
		r.tail <- tailResult{body, err}
	}()
	r.r = io.MultiReader(head, &tailReader{r: r})
	return r, true
}

// aheadReader reads a claimed span, then the request for the bytes past
// its end, if any.
type aheadReader struct {
	r    io.Reader
	body io.ReadCloser // the span's request
	buf  []byte        // what the span read ahead (see offHeap), until read

	tail    chan tailResult // the request past the span's end, if any
	tailGot *tailResult
}

type tailResult struct {
	body io.ReadCloser
	err  error
}

func (r *aheadReader) Read(p []byte) (int, error) { return r.r.Read(p) }

// Close closes both requests, waiting for the second to be answered.
func (r *aheadReader) Close() error {
	r.free()
	if r.body != nil {
		r.body.Close()
	}
	if t := r.tailResult(); t != nil && t.body != nil {
		t.body.Close()
	}
	return nil
}

func (r *aheadReader) tailResult() *tailResult {
	if r.tail == nil {
		return nil
	}
	if r.tailGot == nil {
		t := <-r.tail
		r.tailGot = &t
	}
	return r.tailGot
}

// free unmaps what the span read ahead.
func (r *aheadReader) free() {
	freeOffHeap(r.buf)
	r.buf = nil
}

// bufReader reads b, a part of r.buf, and frees r.buf at its end.
type bufReader struct {
	r *aheadReader
	b []byte
}

func (b *bufReader) Read(p []byte) (int, error) {
	if len(b.b) == 0 {
		b.r.free()
		return 0, io.EOF
	}
	n := copy(p, b.b)
	b.b = b.b[n:]
	return n, nil
}

// tailReader reads the request past a span's end once it is answered.
type tailReader struct{ r *aheadReader }

func (t *tailReader) Read(p []byte) (int, error) {
	res := t.r.tailResult()
	if res.err != nil {
		return 0, res.err
	}
	return res.body.Read(p)
}

// An AheadCutter cuts the spans worth reading ahead out of the extents of
// wanted files, given in blob order as they come (as sg-ls prints them),
// so that the first spans can be read while the rest of the input is.
//
// Only stretches at least one request long and mostly of wanted bytes
// count (a whole layer, a large file, or a large share of a layer), with
// files joined across gaps the plan would download too: scattered files
// are left to the plan. A stretch is cut into spans of about the size
// the plan gives its requests, each where a file or a chunk of one starts
// nearest the end of its share (those are members' starts, so that
// plan's runs start and end where the spans do). A span much longer than
// its share, because a large file lies across the share's end with no
// chunk start near it, ends at its share: the plan gives the bytes after
// it to requests of their own, at member boundaries the TOC has.
type AheadCutter struct {
	size, maxGap, maxSpan int64
	left                  *int // spans still to give, shared by the cutters of a run
	give                  func(registry.Span)

	open       bool  // a stretch is being cut
	start      int64 // where the stretch starts
	cuts       int   // shares of the stretch cut so far
	cut        int64 // where the next span starts
	end        int64 // where the stretch's files end so far
	wanted     int64 // bytes of files from cut to end
	prev       int64 // the last place a span may end before the share's end, or -1
	prevWanted int64 // bytes of files from cut to prev
	lastStart  int64
	given      int  // spans given in this stretch
	outOfOrder bool // an extent came before the last: no more spans
}

// NewAheadCutter returns a cutter for a fetch of about total compressed
// bytes of one layer with opts, giving each span to give. left, when set,
// is how many spans may be given yet, shared with other cutters; nil
// allows one span per job.
func NewAheadCutter(total int64, opts Options, left *int, give func(registry.Span)) *AheadCutter {
	opts = opts.withDefaults()
	if left == nil {
		n := opts.Jobs
		left = &n
	}
	return &AheadCutter{
		size:    requestCap(total, opts.Jobs, opts.MaxRequestBytes, minRequestBytes),
		maxGap:  max(opts.MaxGap, 0),
		maxSpan: opts.MaxRequestBytes,
		left:    left,
		give:    give,
	}
}

// Add takes the extent of the next wanted file, and where its chunks
// after the first start (Entry.ChunkOffsets), at which a span may end
// too. An extent out of blob order stops the cutting; the spans given
// stay.
func (c *AheadCutter) Add(w registry.Span, chunks ...int64) {
	if c.outOfOrder || w.N <= 0 {
		return
	}
	if c.open && w.Off < c.lastStart {
		c.outOfOrder = true
		return
	}
	if c.open && w.Off-c.end > c.maxGap {
		c.Flush()
	}
	if !c.open {
		c.open, c.start, c.cut, c.end, c.wanted, c.given, c.cuts, c.prev = true, w.Off, w.Off, w.Off, 0, 0, 0, -1
	}
	c.candidate(w.Off, c.wanted)
	c.wanted += max(w.Off+w.N-max(w.Off, c.end), 0)
	c.end = max(c.end, w.Off+w.N)
	c.lastStart = w.Off
	for _, p := range chunks {
		if p > c.cut && p < c.end {
			c.candidate(p, c.wanted-(c.end-p)) // the file's bytes from p on come after
		}
	}
}

// candidate takes p, where a span may end, with wanted of the bytes from
// c.cut to p wanted. Past the share's end, the span ends at p or at the
// candidate before it, whichever is nearer the share's end.
func (c *AheadCutter) candidate(p, wanted int64) {
	for p > c.cut {
		// Shares are laid from the stretch's start, so that a cut past
		// one's end makes the next shorter, not all after it later.
		target := c.start + int64(c.cuts+1)*c.size
		if *c.left == 1 {
			// The last span takes the rest of the stretch (up to twice
			// the share, see span): cut short, it would leave bytes for
			// a request that starts only when a downloader is free, and
			// ends the fetch late.
			target += c.size
		}
		if p < target {
			c.prev, c.prevWanted = p, wanted
			return
		}
		c.cuts++
		if c.prev > c.cut && target-c.prev < p-target {
			c.span(c.prev, c.prevWanted)
			c.cut, c.wanted, wanted = c.prev, c.wanted-c.prevWanted, wanted-c.prevWanted
			c.prev = -1
			continue // p may be past the next share's end too
		}
		c.span(p, wanted)
		c.cut, c.wanted, c.prev = p, c.wanted-wanted, -1
		return
	}
}

// Flush ends the stretch being cut, giving its last span.
func (c *AheadCutter) Flush() {
	if !c.open {
		return
	}
	c.open = false
	if c.given > 0 || c.end-c.cut >= c.size {
		c.span(c.end, c.wanted)
	}
}

// span gives the span from c.cut to next, if it is mostly wanted (of
// which wanted bytes are).
func (c *AheadCutter) span(next, wanted int64) {
	n := next - c.cut
	if *c.left <= 0 || n <= 0 || wanted*2 < n {
		return
	}
	switch {
	case *c.left == 1 && n <= 2*c.size:
		// The last span takes the rest (see candidate).
	case n > c.size*5/4:
		n = c.size
	}
	*c.left--
	c.given++
	c.give(registry.Span{Off: c.cut, N: min(n, c.maxSpan)})
}
