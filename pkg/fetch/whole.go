package fetch

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
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
// stream through klauspost as before: decoding them whole too (read into
// a buffer first) saved W3 another 0.15 s of CPU but no time, for
// 10-13 MiB more memory. Either way the chunks are checked against their
// digests after.
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
	var need int64
	for _, s := range m.segments {
		need = max(need, s.chunk.InnerOffset+s.chunk.Size)
	}
	b, err := peekWhole(d.whole, br, m.offset, m.end-m.offset, need, &d.out)
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
	for size := max(libdeflate.ISize(src), need) + 4<<10; size <= wholeOut; size *= 4 {
		k, used, err := z.Gunzip((*buf)[:size], src)
		switch {
		case errors.Is(err, libdeflate.ErrInsufficientSpace):
			continue
		case err != nil:
			return nil, fmt.Errorf("member at %d: decompressing: %w", off, err)
		}
		br.Discard(used) // the rest of the span, if any, is skipped after
		wholeMembers.Add(1)
		return (*buf)[:k], nil
	}
	return nil, nil // still in br: stream it
}
