package fetch

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"os"
	"slices"
	"sort"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/stargz-get/stargz-get/internal/fill"
	"github.com/stargz-get/stargz-get/internal/libdeflate"
	"github.com/stargz-get/stargz-get/pkg/cache"
	"github.com/stargz-get/stargz-get/pkg/registry"
	"github.com/stargz-get/stargz-get/pkg/toc"
)

// do runs one request, retrying from the first member not yet finished.
// When the server refuses to serve its ranges together, do returns the
// requests, one per range, that the rest of it is split into.
func (e *engine) do(ctx context.Context, r *request) []*request {
	if r.hits != nil {
		return e.fromCache(ctx, r)
	}
	next := 0
	d := &decoders{buf: make([]byte, 128<<10)}
	if useLibdeflate() {
		if z, err := libdeflate.NewDecompressor(); err == nil {
			d.whole = z
			defer z.Free()
			defer d.release()
		}
	}
	for attempt := 1; ; attempt++ {
		err := e.stream(ctx, r, &next, d)
		if err == nil {
			return nil
		}
		if errors.Is(err, errSplit) {
			return e.split(r, next)
		}
		if ctx.Err() != nil || attempt >= e.opts.Tries {
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			for _, m := range r.members[next:] {
				for _, s := range m.segments {
					if !s.done {
						for _, w := range s.writes {
							e.segmentFailed(w.t, err)
						}
					}
				}
			}
			return nil
		}
		// The tail read with the TOC may be what was bad: download again.
		r.local = false
		wait := backoff(attempt)
		e.logf("bytes %d-%d of %s: %v; retrying in %s", r.members[next].offset, r.runs[len(r.runs)-1].end-1, r.layer.Blob, err, wait.Round(time.Millisecond))
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

// errSplit stops a multi-range request whose server would send its ranges
// one request after another: they are faster as requests of their own, in
// parallel.
var errSplit = errors.New("multi-range request refused")

// split turns the runs of r from member next on into requests of one run
// each.
func (e *engine) split(r *request, next int) []*request {
	i := sort.Search(len(r.runs), func(i int) bool { return r.runs[i].last > next })
	var reqs []*request
	first := next
	for _, x := range r.runs[i:] {
		ms := r.members[first:x.last]
		start := x.start
		if first == next {
			start = ms[0].offset
		}
		nr := &request{layer: r.layer, members: ms, runs: []run{{start: start, end: x.end, last: len(ms)}}}
		reqs = append(reqs, nr)
		first = x.last
		// Each part is a request of its own for the files it carries.
		for _, m := range ms {
			for _, s := range m.segments {
				for _, w := range s.writes {
					t := w.t
					t.mu.Lock()
					if t.lastReq != nr {
						t.lastReq = nr
						t.requests++
					}
					t.mu.Unlock()
				}
			}
		}
	}
	e.logf("%s: reading %d ranges as parallel requests", r.layer.Blob, len(reqs))
	return reqs
}

// multiRanger is a blob that reads several ranges in one request
// (registry.Blob).
type multiRanger interface {
	ReadSpans(ctx context.Context, spans []registry.Span) (*registry.SpanReader, error)
}

// decoders are a worker's buffer and decompressors, kept across its
// requests' members.
type decoders struct {
	buf   []byte
	zr    gzip.Reader
	whole *libdeflate.Decompressor // nil: every gzip member streams
	out   []byte                   // wholeOut bytes, once a member is decoded whole
	in    []byte                   // a large member's compressed bytes (see largeMember)
}

// stream reads members r.members[*next:] in one request.
func (e *engine) stream(ctx context.Context, r *request, next *int, d *decoders) error {
	// The runs left, the first starting at the first member not finished.
	i := sort.Search(len(r.runs), func(i int) bool { return r.runs[i].last > *next })
	runs := slices.Clone(r.runs[i:])
	runs[0].start = r.members[*next].offset
	var open func(x run) (io.Reader, error)
	switch mr, ok := r.layer.Blob.(multiRanger); {
	case r.local:
		t := r.layer.TOC
		open = func(x run) (io.Reader, error) {
			return bytes.NewReader(t.Tail[x.start-t.TailStart : x.end-t.TailStart]), nil
		}
	case ok && len(runs) > 1:
		spans := make([]registry.Span, len(runs))
		for i, x := range runs {
			spans[i] = registry.Span{Off: x.start, N: x.end - x.start}
		}
		sr, err := mr.ReadSpans(ctx, spans)
		if err != nil {
			return err
		}
		defer sr.Close()
		left := len(runs)
		open = func(run) (io.Reader, error) {
			if left > 1 && sr.Single() {
				return nil, errSplit
			}
			left--
			return sr.Next()
		}
	default:
		var body io.ReadCloser
		defer func() {
			if body != nil {
				body.Close()
			}
		}()
		open = func(x run) (io.Reader, error) {
			if body != nil {
				body.Close()
				body = nil
			}
			// The bytes of a member that runs into the tail read with the
			// TOC are not downloaded again.
			var fromTail []byte
			if t := r.layer.TOC; t.Tail != nil && x.start < t.TailStart && x.end > t.TailStart {
				fromTail = t.Tail[:x.end-t.TailStart]
				x.end = t.TailStart
			}
			var err error
			if a := r.layer.Ahead; a != nil {
				if rc, ok := a.claim(ctx, x.start, x.end); ok {
					body = rc
				}
			}
			if body == nil {
				if body, err = r.layer.Blob.ReadRange(ctx, x.start, x.end-x.start); err != nil {
					return nil, err
				}
			}
			if fromTail != nil {
				return io.MultiReader(body, bytes.NewReader(fromTail)), nil
			}
			return body, nil
		}
	}
	br := bufio.NewReaderSize(nil, 64<<10)
	for _, x := range runs {
		body, err := open(x)
		if err != nil {
			return err
		}
		if err := e.streamRun(r, x, body, br, next, d); err != nil {
			return err
		}
	}
	return nil
}

// streamRun reads the members of run x up to its last from body, which
// starts at x.start.
func (e *engine) streamRun(r *request, x run, body io.Reader, br *bufio.Reader, next *int, d *decoders) error {
	cr := &countingReader{r: body, e: e}
	br.Reset(cr)
	// pos is the blob offset of the next byte br hands out.
	pos := func() int64 { return x.start + cr.n - int64(br.Buffered()) }
	for ; *next < x.last; *next++ {
		m := r.members[*next]
		if _, err := br.Discard(int(m.offset - pos())); err != nil {
			return fmt.Errorf("skipping to member at %d: %w", m.offset, err)
		}
		if m.codec == toc.CodecZstd {
			if err := e.zstdMember(m, br, d.buf); err != nil {
				return err
			}
			continue
		}
		done := false
		if d.whole != nil {
			var err error
			if done, err = e.wholeMember(m, br, d); err != nil {
				return err
			}
			if !done {
				if done, err = e.largeMember(m, br, d); err != nil {
					return err
				}
			}
		}
		if !done {
			// The gzip reader reads the bufio.Reader itself (its fast
			// path) and stops at the member's end; where that is, is
			// checked after.
			if err := e.member(m, br, d); err != nil {
				return err
			}
		}
		switch p := pos(); {
		case p > m.end:
			return fmt.Errorf("member at %d ends at %d, past the %d the TOC gives", m.offset, p, m.end)
		case p < m.end:
			if _, err := br.Discard(int(m.end - p)); err != nil {
				return fmt.Errorf("reading member at %d: %w", m.offset, err)
			}
		}
	}
	return nil
}

// member streams one gzip member from r through klauspost/compress,
// writes its wanted segments and reads it to its end, where its CRC-32
// and length are checked.
func (e *engine) member(m *member, r io.Reader, d *decoders) error {
	if err := d.zr.Reset(r); err != nil {
		return fmt.Errorf("member at %d: %w", m.offset, err)
	}
	d.zr.Multistream(false)
	if err := e.segments(m, &d.zr, d.buf); err != nil {
		return err
	}
	if _, err := io.CopyBuffer(io.Discard, &d.zr, d.buf); err != nil {
		return fmt.Errorf("member at %d: decompressing: %w", m.offset, err)
	}
	return nil
}

// segments reads member m's decompressed stream from zr, writing and
// verifying its wanted segments.
func (e *engine) segments(m *member, zr io.Reader, buf []byte) error {
	var at int64 // position in the decompressed stream
	for _, s := range m.segments {
		if skip := s.chunk.InnerOffset - at; skip > 0 {
			if _, err := io.CopyBuffer(io.Discard, io.LimitReader(zr, skip), buf); err != nil {
				return fmt.Errorf("%s at %d: %w", m.codec, m.offset, err)
			}
			at += skip
		}
		h := sha256.New()
		ws := []io.Writer{h}
		// The bytes go to the cache as well, when it is on and the chunk
		// has a digest to be kept under: into room in a pack, recorded
		// once they verify.
		var slot *cache.Slot
		var key string
		if e.pack != nil && !s.done {
			if key = chunkKey(s.writes[0].t.source, s.chunk); key != "" {
				slot, _ = e.pack.Reserve(s.chunk.Size)
			}
		}
		if slot != nil {
			ws = append(ws, io.NewOffsetWriter(slot, 0))
		}
		for _, w := range s.writes {
			f, err := e.open(w.t)
			if err != nil {
				w.t.fail(err)
				continue
			}
			if f != nil {
				ws = append(ws, io.NewOffsetWriter(f, w.off))
			}
		}
		n, err := copyFilled(io.MultiWriter(ws...), io.LimitReader(zr, s.chunk.Size), buf)
		at += n
		got := "sha256:" + hex.EncodeToString(h.Sum(nil))
		if slot != nil {
			if err == nil && n == s.chunk.Size && got == key {
				slot.Commit(key)
			} else {
				slot.Abort()
			}
		}
		if err == nil && n < s.chunk.Size {
			err = io.ErrUnexpectedEOF
		}
		var pe *os.PathError
		switch {
		case errors.As(err, &pe):
			// A local write failed: the targets fail, and the stream
			// restarts after this segment (its position is lost).
			for _, w := range s.writes {
				w.t.fail(err)
			}
			if !s.done {
				s.done = true
				for _, w := range s.writes {
					e.segmentDone(w, s, "")
				}
			}
			return fmt.Errorf("%s at %d: %w", m.codec, m.offset, err)
		case err != nil:
			return fmt.Errorf("%s at %d: decompressing: %w", m.codec, m.offset, err)
		}
		if s.chunk.Digest != "" && got != s.chunk.Digest {
			return fmt.Errorf("chunk at %d of %q: digest %s, TOC says %s", s.chunk.FileOffset, s.writes[0].t.source.Name, got, s.chunk.Digest)
		}
		if s.done {
			continue
		}
		s.done = true
		for _, w := range s.writes {
			e.segmentDone(w, s, got)
		}
	}
	return nil
}

// copyFilled copies src to dst as io.CopyBuffer does, but fills buf
// before each write: a decompressor hands out at most its 32 KiB window
// per Read, and writing that as it comes cost the output file and the
// cache a pwrite each, four times as many as the 128 KiB buffer needs.
func copyFilled(dst io.Writer, src io.Reader, buf []byte) (int64, error) {
	var n int64
	for {
		k, err := fill.From(src, buf)
		if k > 0 {
			w, werr := dst.Write(buf[:k])
			n += int64(w)
			if werr != nil {
				return n, werr
			}
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err // io.ErrUnexpectedEOF of a cut stream included
		}
	}
}

// countingReader counts the bytes of a response body, for progress and
// to know the blob offset under a bufio.Reader.
type countingReader struct {
	r io.Reader
	e *engine
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	c.e.bytesDone.Add(int64(n))
	c.e.progress(false)
	return n, err
}
