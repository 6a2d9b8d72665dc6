package fetch

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/stargz-get/stargz-get/internal/fill"
	"github.com/stargz-get/stargz-get/internal/libdeflate"
)

// Small gzip members are decoded whole by libdeflate where it can be
// loaded. Most eStargz members are small (14,923 of the W3 layer's 15,046
// are at most 64 KiB compressed and 256 KiB decoded), and for them
// klauspost's per-member setup and its slower inner loop made inflating
// most of a whole-layer fetch's CPU; libdeflate decodes a member that
// lies whole in the worker's read buffer straight from there into a
// buffer of the worker's own, so it costs no allocation. Larger members
// are decoded whole too, within a memory budget (see largeMember); the
// rest stream through klauspost. Either way the chunks are checked
// against their digests after.
//
// wholeOut is the size of each worker's output buffer, the most a member
// decoded whole may hold.
const wholeOut = 256 << 10

// useLibdeflate says whether small gzip members are decoded whole (tests
// turn it off to cover the streaming path).
var useLibdeflate = func() bool { return libdeflate.Load() == nil }

// wholeMembers counts the members decoded whole, for tests.
var wholeMembers atomic.Int64

// wholeMember decodes gzip member m whole and writes its wanted segments,
// if m lies whole in br's buffer and holds at most wholeOut bytes. It
// returns false, having read nothing from br, when m is to be streamed
// instead.
func (e *engine) wholeMember(m *member, br *bufio.Reader, d *decoders) (bool, error) {
	b, err := peekWhole(d.whole, br, m.offset, m.end-m.offset, m.need(), &d.out)
	if b == nil || err != nil {
		return err != nil, err
	}
	return true, e.segments(m, bytes.NewReader(b), d.buf)
}

// peekWhole decodes with z the gzip member at br's next byte, the first
// of a span of n bytes that starts at blob offset off, into *buf
// (wholeOut bytes, made on first use), if the span lies whole in br's
// buffer and the member holds at most wholeOut bytes. It returns what the
// member holds, having taken the member from br, or nil, having read
// nothing, when the member is to be streamed instead.
//
// The span may hold more than the member (the next entries' headers in
// members of their own), so the trailer at its end only hints at the
// member's size, and need, what the caller wants of it, is a floor; a
// guess that proves short is raised.
func peekWhole(z *libdeflate.Decompressor, br *bufio.Reader, off, n, need int64, buf *[]byte) ([]byte, error) {
	if n <= 0 || n > int64(br.Size()) || need > wholeOut {
		return nil, nil
	}
	src, err := br.Peek(int(n))
	if err != nil {
		return nil, fmt.Errorf("reading member at %d: %w", off, fill.Cut(err))
	}
	if *buf == nil {
		*buf = make([]byte, wholeOut)
	}
	b, used, err := gunzipFit(z, *buf, src, need)
	if b == nil || err != nil {
		if err != nil {
			err = fmt.Errorf("member at %d: decompressing: %w", off, err)
		}
		return nil, err // still in br: stream it
	}
	br.Discard(used) // the rest of the span, if any, is skipped after
	wholeMembers.Add(1)
	return b, nil
}

// gunzipFit decodes with z the gzip member at the start of src into out,
// first into room for what the trailer at the end of src says (src may
// go on past the member, so it is only a hint) or for need if more, then
// into four times that, up to all of out. It returns the bytes decoded
// and how many of src the member took, or nil when the member holds more
// than out.
func gunzipFit(z *libdeflate.Decompressor, out, src []byte, need int64) ([]byte, int, error) {
	size := min(max(libdeflate.ISize(src), need)+4<<10, int64(len(out)))
	for {
		k, used, err := z.Gunzip(out[:size], src)
		switch {
		case errors.Is(err, libdeflate.ErrInsufficientSpace) && size < int64(len(out)):
			size = min(size*4, int64(len(out)))
			continue
		case errors.Is(err, libdeflate.ErrInsufficientSpace):
			return nil, 0, nil
		case err != nil:
			return nil, 0, err
		}
		return out[:k], used, nil
	}
}

// need returns how much of m's decoded stream its wanted segments take.
func (m *member) need() int64 {
	var need int64
	for _, s := range m.segments {
		need = max(need, s.chunk.InnerOffset+s.chunk.Size)
	}
	return need
}

// Large members (over the read buffer or wholeOut, such as the 4 MiB
// chunks of large files) are decoded whole too when memory allows: W3's
// 123 of them hold 62% of its bytes, and klauspost took 0.5 s of the
// fetch's 1.4 s of CPU on them, which libdeflate does in a third of
// that. On two cores that the registry and proxy share, the fetch is
// CPU-bound: W3 0.87 s against 0.97 s, 9 interleaved runs. (A previous
// session measured no gain, when the machine was faster and the fetch
// waited on its TOC; see BENCHMARKS.md.)
//
// The compressed member is read into a buffer the worker keeps, mapped
// outside the Go heap (their sizes are charged to largeInBudget, and a
// worker that finds it spent streams instead), then decoded into one of
// two shared output buffers, held only while the member is decoded and
// written (a worker that finds none free streams the member from memory).
// W3's peak RSS goes from 77 to 83-85 MB (the buffers spans are read
// ahead into are outside the Go heap too, and let go once read).
const (
	largeIn       = 2 << 20        // most compressed bytes of a member decoded whole
	largeInBudget = 12 << 20       // input buffers of all workers together
	largeOut      = 4<<20 + 64<<10 // eStargz's default chunk, and room for the next header
	largeOutSlots = 2              // output buffers, shared
	largeInStep   = 256 << 10      // input buffers grow by this much
)

var (
	largeMembers atomic.Int64 // decoded whole, for tests
	largeInUsed  atomic.Int64
	largeOuts    = make(chan []byte, largeOutSlots)
	largeOutMade atomic.Int32
)

// largeMember decodes gzip member m whole into a shared buffer and
// writes its wanted segments, if it fits the limits above. It returns
// false, having read nothing from br, when m is to be streamed instead.
func (e *engine) largeMember(m *member, br *bufio.Reader, d *decoders) (bool, error) {
	n, need := m.end-m.offset, m.need()
	if n > largeIn || need > largeOut-4<<10 {
		return false, nil
	}
	if int64(cap(d.in)) < n {
		grown := (n + largeInStep - 1) / largeInStep * largeInStep
		if largeInUsed.Add(grown-int64(cap(d.in))) > largeInBudget {
			largeInUsed.Add(int64(cap(d.in)) - grown)
			return false, nil
		}
		freeOffHeap(d.in)
		d.in = offHeap(int(grown))
	}
	in := d.in[:n]
	if _, err := io.ReadFull(br, in); err != nil {
		return true, fmt.Errorf("reading member at %d: %w", m.offset, fill.Cut(err))
	}
	out := takeLargeOut()
	if out == nil {
		// Every output buffer is in use: stream it from memory rather
		// than wait (the connection would stall meanwhile).
		return true, e.member(m, bytes.NewReader(in), d)
	}
	defer func() { largeOuts <- out }()
	b, _, err := gunzipFit(d.whole, out, in, need)
	switch {
	case err != nil:
		return true, fmt.Errorf("member at %d: decompressing: %w", m.offset, err)
	case b == nil:
		// More than largeOut: stream it from memory after all.
		return true, e.member(m, bytes.NewReader(in), d)
	}
	wholeMembers.Add(1)
	largeMembers.Add(1)
	return true, e.segments(m, bytes.NewReader(b), d.buf)
}

// takeLargeOut returns a free shared output buffer, made while there are
// fewer than largeOutSlots, or nil. The buffers are kept for the life of
// the process.
func takeLargeOut() []byte {
	select {
	case b := <-largeOuts:
		return b
	default:
	}
	for {
		n := largeOutMade.Load()
		if n >= largeOutSlots {
			return nil
		}
		if largeOutMade.CompareAndSwap(n, n+1) {
			return offHeap(largeOut)
		}
	}
}

// release gives back the worker's share of largeInBudget.
func (d *decoders) release() {
	largeInUsed.Add(-int64(cap(d.in)))
	freeOffHeap(d.in)
	d.in = nil
}
