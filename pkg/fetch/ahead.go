package fetch

import (
	"bytes"
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

// ReadAhead starts reading spans of blob, each with a range request of
// its own; ctx bounds them all. The caller attaches the result to the
// layer (Layer.Ahead) before Run and closes it after.
func ReadAhead(ctx context.Context, blob toc.RangeReader, spans []registry.Span) *Ahead {
	ctx, cancel := context.WithCancel(ctx)
	a := &Ahead{blob: blob, cancel: cancel}
	for _, sp := range spans {
		s := &aheadSpan{start: sp.Off, end: sp.Off + sp.N, done: make(chan struct{})}
		a.spans = append(a.spans, s)
		go s.read(ctx, blob)
	}
	slices.SortFunc(a.spans, func(x, y *aheadSpan) int { return cmp.Compare(x.start, y.start) })
	return a
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
	s.buf = make([]byte, 0, min(aheadBuffer, s.end-s.start))
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
}

// drop closes the span unless a run took it.
func (s *aheadSpan) drop() {
	if !s.claimed.CompareAndSwap(false, true) {
		return
	}
	s.dropped.Store(true)
	s.stop.Store(true)
	<-s.done
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

// keep closes the spans in which no request's first run starts: no run
// will take them, and each would go on moving bytes for nothing.
func (a *Ahead) keep(reqs []*request) {
	if a == nil {
		return
	}
	used := make([]bool, len(a.spans))
	for _, r := range reqs {
		if r.layer.Ahead != a || r.local || len(r.runs) != 1 {
			continue
		}
		if i, ok := a.spanOf(r.runs[0].start); ok && r.runs[0].start-a.spans[i].start <= aheadBuffer {
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
		s.dropped.Store(true)
		if s.body != nil {
			s.body.Close()
		}
		return nil, false
	}
	r := &aheadReader{body: s.body}
	var parts []io.Reader
	if skip < int64(len(s.buf)) {
		parts = append(parts, bytes.NewReader(s.buf[skip:]))
		skip = 0
	} else {
		skip -= int64(len(s.buf))
	}
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
	body io.ReadCloser // the span's request; nil when it was read whole

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

// tailReader reads the request past a span's end once it is answered.
type tailReader struct{ r *aheadReader }

func (t *tailReader) Read(p []byte) (int, error) {
	res := t.r.tailResult()
	if res.err != nil {
		return 0, res.err
	}
	return res.body.Read(p)
}

// AheadSpans picks the spans of a layer blob worth reading ahead, given
// where the contents of the wanted files lie (Entry.Offset and
// CompressedSize of their records; files the chunk cache holds left out).
// Only stretches at least one request long and mostly of wanted bytes
// count (a whole layer, a large file, or a large share of a layer):
// scattered files are left to the plan. Such a stretch is cut into spans of about the size plan gives
// its requests, at most one span per job, each cut at the file start
// nearest to an even share (files start where members start, so that
// plan's runs start and end where the spans do).
func AheadSpans(wanted []registry.Span, opts Options) []registry.Span {
	opts = opts.withDefaults()
	ws := slices.Clone(wanted)
	slices.SortFunc(ws, func(x, y registry.Span) int { return cmp.Compare(x.Off, y.Off) })
	// Stretches: files joined across gaps plan would download too.
	type stretch struct {
		start, end int64
		files      []int64 // starts of the files in it, ascending
		wanted     int64   // bytes of files in it, gaps not counted
	}
	var stretches []stretch
	var total int64
	for _, w := range ws {
		if w.N <= 0 {
			continue
		}
		if n := len(stretches); n > 0 && w.Off-stretches[n-1].end <= max(opts.MaxGap, 0) {
			st := &stretches[n-1]
			st.wanted += max(w.Off+w.N-max(w.Off, st.end), 0)
			st.end = max(st.end, w.Off+w.N)
			if w.Off > st.files[len(st.files)-1] {
				st.files = append(st.files, w.Off)
			}
			continue
		}
		stretches = append(stretches, stretch{start: w.Off, end: w.Off + w.N, files: []int64{w.Off}, wanted: w.N})
	}
	for _, st := range stretches {
		total += st.end - st.start
	}
	size := requestCap(total, opts.Jobs, opts.MaxRequestBytes, minRequestBytes)
	var spans []registry.Span
	for _, st := range stretches {
		length := st.end - st.start
		n := min(int64(opts.Jobs-len(spans)), (length+size/2)/size)
		if length < size || n < 1 || st.wanted*2 < length {
			continue
		}
		cuts := []int64{st.start}
		for i := int64(1); i < n; i++ {
			ideal := st.start + i*length/n
			j, _ := slices.BinarySearch(st.files, ideal)
			cut := st.end
			if j < len(st.files) {
				cut = st.files[j]
			}
			if j > 0 && ideal-st.files[j-1] < cut-ideal {
				cut = st.files[j-1]
			}
			if cut > cuts[len(cuts)-1] && cut < st.end {
				cuts = append(cuts, cut)
			}
		}
		cuts = append(cuts, st.end)
		for i := range len(cuts) - 1 {
			// A span much longer than its share (a large file lies across
			// the share's end) is cut short there: the plan gives the
			// bytes after it to other requests, at member boundaries,
			// which the large file's chunks have and records do not give.
			n := cuts[i+1] - cuts[i]
			if n > size*5/4 {
				n = size
			}
			spans = append(spans, registry.Span{Off: cuts[i], N: min(n, opts.MaxRequestBytes)})
		}
	}
	return spans
}
