package blob

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"

	"io"
	"sync"
	"sync/atomic"
)

// Defaults for a Stream.
const (
	// DefaultSegmentBytes is the largest range one segment asks for: big
	// enough that a request's round trip is small beside its transfer
	// (2 MiB take 80 ms at 25 MB/s, against a 20 ms RTT).
	DefaultSegmentBytes = 2 << 20
	// DefaultWindow is how many segments are in flight at once: enough
	// connections to fill a link that gives each one 25 MB/s well past
	// what inflating one gzip stream can take (about 100 MB/s), and with
	// DefaultSegmentBytes at most 16 MiB of memory, so that a whole layer
	// is listed in well under 100 MiB.
	DefaultWindow = 8
	// FirstSegmentBytes is the first segment's size; each next one doubles
	// up to the segment size, so that a stream stopped early (the wanted
	// file is near the start) has not asked for much more.
	FirstSegmentBytes = 512 << 10
)

// RangeReader reads byte ranges of a blob of known size, as
// registry.Blob does.
type RangeReader interface {
	ReadRange(ctx context.Context, off, n int64) (io.ReadCloser, error)
	Size() int64
}

// StreamOption configures NewStream.
type StreamOption func(*streamOptions) error

type streamOptions struct {
	segment int64
	window  int
	digest  string
	end     int64 // 0: the blob's end
}

// WithEnd makes the stream end at blob offset end instead of the blob's
// end.
func WithEnd(end int64) StreamOption {
	return func(o *streamOptions) error {
		if end <= 0 {
			return fmt.Errorf("stream end must be positive, got %d", end)
		}
		o.end = end
		return nil
	}
}

// WithSegmentBytes sets the largest segment (DefaultSegmentBytes).
func WithSegmentBytes(n int64) StreamOption {
	return func(o *streamOptions) error {
		if n <= 0 {
			return fmt.Errorf("segment size must be positive, got %d", n)
		}
		o.segment = n
		return nil
	}
}

// WithWindow sets how many segments are in flight at once
// (DefaultWindow).
func WithWindow(n int) StreamOption {
	return func(o *streamOptions) error {
		if n < 1 {
			return fmt.Errorf("window must be at least 1, got %d", n)
		}
		o.window = n
		return nil
	}
}

// WithDigest makes a stream of a whole blob hash what it delivers and,
// at the end, fail with ErrDigestMismatch instead of io.EOF unless the
// sha256 digest is dgst ("sha256:HEX").
func WithDigest(dgst string) StreamOption {
	return func(o *streamOptions) error {
		o.digest = dgst
		return nil
	}
}

// Stream reads a blob in order from a starting offset to its end, asking
// for the bytes ahead in parallel ranged segments (a bounded window of
// them), so that a reader slower or faster than one connection is never
// waiting on a single request. Closing it stops the segments still in
// flight: a stream closed early has moved at most one window of segments
// beyond what was read.
type Stream struct {
	ctx    context.Context
	cancel context.CancelFunc
	r      RangeReader
	opts   streamOptions
	end    int64

	queue chan *segment // in order; its capacity bounds the window
	free  chan []byte   // full-size buffers of segments read, for reuse
	wg    sync.WaitGroup
	moved atomic.Int64

	cur  *segment
	pos  int64 // offset of the next byte Read delivers
	err  error // sticky
	once sync.Once

	// With a digest to check, the segments are hashed in order on a
	// goroutine of their own, off the reader's path.
	hashQueue chan *segment
	hashed    chan string // the digest, once every segment is hashed
	// At a stream segment the hasher hands its state over to the reader,
	// which hashes the rest as it reads it.
	handoff chan hash.Hash
	inline  hash.Hash
	body    io.ReadCloser // of a stream segment
}

// rangeIgnorer is a RangeReader that can tell that the server ignores
// ranges (registry.Blob).
type rangeIgnorer interface{ RangeIgnored() bool }

// segment is one ranged read, filled in the background, or (stream) the
// rest of the blob read by the reader itself, from one request.
type segment struct {
	stream bool
	n      int64 // a stream segment's length
	off    int64
	buf    []byte
	done   chan struct{}
	err    error
	rd     int // bytes of buf already delivered
	// refs counts the reader and the hasher still using buf; the last
	// one gives a full-size buf back for a later segment.
	refs atomic.Int32
}

// release ends one user's use of seg.buf.
func (s *Stream) release(seg *segment) {
	if seg.refs.Add(-1) == 0 && int64(len(seg.buf)) == s.opts.segment {
		select {
		case s.free <- seg.buf:
		default:
		}
	}
}

// NewStream starts reading r from off to its end (or WithEnd's).
func NewStream(ctx context.Context, r RangeReader, off int64, opts ...StreamOption) (*Stream, error) {
	o := streamOptions{segment: DefaultSegmentBytes, window: DefaultWindow}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	size := r.Size()
	if o.end != 0 {
		if o.end > size {
			return nil, fmt.Errorf("stream end %d outside blob of %d bytes", o.end, size)
		}
		size = o.end
	}
	if off < 0 || off > size {
		return nil, fmt.Errorf("stream start %d outside bytes 0-%d", off, size)
	}
	if o.digest != "" && (off != 0 || size != r.Size()) {
		return nil, errors.New("a stream checked against the blob digest must read the whole blob")
	}
	ctx, cancel := context.WithCancel(ctx)
	s := &Stream{ctx: ctx, cancel: cancel, r: r, opts: o, end: size, pos: off,
		queue: make(chan *segment, o.window-1), free: make(chan []byte, o.window+1)}
	if o.digest != "" {
		n := (size-off)/FirstSegmentBytes + 2
		s.hashQueue, s.hashed, s.handoff = make(chan *segment, n), make(chan string, 1), make(chan hash.Hash, 1)
		go s.hash()
	}
	s.wg.Add(1)
	go s.produce(off)
	return s, nil
}

// produce starts segments in order, at most a window of them unread.
func (s *Stream) produce(off int64) {
	defer s.wg.Done()
	defer close(s.queue)
	if s.hashQueue != nil {
		defer close(s.hashQueue)
	}
	n := min(int64(FirstSegmentBytes), s.opts.segment)
	start := off
	for off < s.end {
		seg := &segment{off: off, done: make(chan struct{})}
		if k := min(n, s.end-off); k == s.opts.segment && len(s.free) > 0 {
			seg.buf = <-s.free
		} else {
			seg.buf = make([]byte, k)
		}
		seg.refs.Store(1)
		if s.hashQueue != nil {
			seg.refs.Store(2)
		}
		off += int64(len(seg.buf))
		n = min(2*n, s.opts.segment)
		// Queued before it is started, so that what is in flight is the
		// queue and the segment being read: one window.
		select {
		case s.queue <- seg:
		case <-s.ctx.Done():
			return
		}
		if s.hashQueue != nil {
			s.hashQueue <- seg // never full: it has room for every segment
		}
		s.wg.Add(1)
		go s.fill(seg)
		if ri, ok := s.r.(rangeIgnorer); ok && seg.off == start && off < s.end {
			// Whether the server honours ranges is known after the
			// first one; if not, each segment would cost the blob up to
			// its end: the rest comes from one request instead.
			select {
			case <-seg.done:
			case <-s.ctx.Done():
				return
			}
			if ri.RangeIgnored() {
				rest := &segment{stream: true, off: off, n: s.end - off, done: make(chan struct{})}
				close(rest.done)
				select {
				case s.queue <- rest:
				case <-s.ctx.Done():
					return
				}
				if s.hashQueue != nil {
					s.hashQueue <- rest
				}
				return
			}
		}
	}
}

// hash hashes the segments in order; it reports "" when one failed.
func (s *Stream) hash() {
	h := sha256.New()
	ok := true
	for seg := range s.hashQueue {
		if !ok {
			continue
		}
		if seg.stream {
			s.handoff <- h
			return
		}
		select {
		case <-seg.done:
		case <-s.ctx.Done():
			ok = false
			continue
		}
		if seg.err != nil {
			ok = false
			continue
		}
		h.Write(seg.buf)
		s.release(seg)
	}
	if ok {
		s.hashed <- "sha256:" + hex.EncodeToString(h.Sum(nil))
	} else {
		s.hashed <- ""
	}
}

// fill reads one segment.
func (s *Stream) fill(seg *segment) {
	defer s.wg.Done()
	defer close(seg.done)
	body, err := s.r.ReadRange(s.ctx, seg.off, int64(len(seg.buf)))
	if err != nil {
		seg.err = err
		return
	}
	defer body.Close()
	got := 0
	for got < len(seg.buf) && err == nil {
		var k int
		k, err = body.Read(seg.buf[got:])
		got += k
		s.moved.Add(int64(k))
	}
	if got < len(seg.buf) {
		if err == io.EOF || err == nil {
			err = io.ErrUnexpectedEOF
		}
		seg.err = fmt.Errorf("reading bytes %d-%d: %w", seg.off, seg.off+int64(len(seg.buf))-1, err)
	}
}

// Read delivers the blob's bytes in order.
func (s *Stream) Read(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if s.body != nil {
		return s.readBody(p)
	}
	for s.cur == nil || s.cur.rd == len(s.cur.buf) {
		if s.cur != nil {
			s.release(s.cur)
		}
		s.cur = nil
		var seg *segment
		var ok bool
		select {
		case seg, ok = <-s.queue:
		case <-s.ctx.Done():
			s.err = s.ctx.Err()
			return 0, s.err
		}
		if !ok {
			if err := s.ctx.Err(); err != nil {
				s.err = err
			} else {
				s.err = s.finish()
			}
			return 0, s.err
		}
		select {
		case <-seg.done:
		case <-s.ctx.Done():
			s.err = s.ctx.Err()
			return 0, s.err
		}
		if seg.err != nil {
			s.err = seg.err
			return 0, s.err
		}
		if seg.stream {
			return s.startBody(seg, p)
		}
		s.cur = seg
	}
	n := copy(p, s.cur.buf[s.cur.rd:])
	s.cur.rd += n
	s.pos += int64(n)
	return n, nil
}

// startBody opens the stream segment seg and reads from it.
func (s *Stream) startBody(seg *segment, p []byte) (int, error) {
	if s.handoff != nil {
		select {
		case s.inline = <-s.handoff:
		case <-s.ctx.Done():
			s.err = s.ctx.Err()
			return 0, s.err
		}
	}
	body, err := s.r.ReadRange(s.ctx, seg.off, seg.n)
	if err != nil {
		s.err = err
		return 0, err
	}
	s.body = body
	return s.readBody(p)
}

// readBody reads from the stream segment.
func (s *Stream) readBody(p []byte) (int, error) {
	if s.pos == s.end {
		s.body.Close()
		s.body = nil
		s.err = s.finish()
		return 0, s.err
	}
	p = p[:min(int64(len(p)), s.end-s.pos)]
	n, err := s.body.Read(p)
	s.moved.Add(int64(n))
	s.pos += int64(n)
	if s.inline != nil {
		s.inline.Write(p[:n])
	}
	if err != nil && err != io.EOF {
		s.err = err
		return n, err
	}
	if err == io.EOF && s.pos < s.end {
		s.err = fmt.Errorf("reading bytes %d-%d: %w", s.pos, s.end-1, io.ErrUnexpectedEOF)
		return n, s.err
	}
	return n, nil
}

// finish checks the digest at the end of the blob.
func (s *Stream) finish() error {
	s.drainFree()
	if s.pos != s.end {
		return fmt.Errorf("stream ended at byte %d of %d", s.pos, s.end)
	}
	if s.hashed != nil {
		var got string
		if s.inline != nil {
			got = "sha256:" + hex.EncodeToString(s.inline.Sum(nil))
		} else {
			select {
			case got = <-s.hashed:
			case <-s.ctx.Done():
				return s.ctx.Err()
			}
		}
		if got != s.opts.digest {
			return fmt.Errorf("%w: the blob's %d bytes have digest %s, want %s", ErrDigestMismatch, s.end, got, s.opts.digest)
		}
	}
	return io.EOF
}

// drainFree lets the buffers kept for reuse go.
func (s *Stream) drainFree() {
	for {
		select {
		case <-s.free:
		default:
			return
		}
	}
}

// Offset returns the offset of the next byte Read delivers.
func (s *Stream) Offset() int64 { return s.pos }

// BytesMoved returns how many bytes the segments have received so far
// (after Close: in all).
func (s *Stream) BytesMoved() int64 { return s.moved.Load() }

// Close stops the segments in flight and waits for them to end.
func (s *Stream) Close() error {
	s.once.Do(func() {
		s.cancel()
		for range s.queue { // unblock the producer
		}
		s.wg.Wait()
		if s.body != nil {
			s.body.Close()
		}
		s.drainFree()
	})
	return nil
}
