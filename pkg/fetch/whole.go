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
	n := m.end - m.offset
	if n <= 0 || n > int64(br.Size()) {
		return false, nil
	}
	src, err := br.Peek(int(n))
	if err != nil {
		return true, fmt.Errorf("reading member at %d: %w", m.offset, fill.Cut(err))
	}
	// The span may hold more than the member (the next entries' headers
	// in members of their own), so the trailer at its end only hints at
	// the size, and what the wanted chunks need is a floor; a guess that
	// proves short is raised.
	var need int64
	for _, s := range m.segments {
		need = max(need, s.chunk.InnerOffset+s.chunk.Size)
	}
	if d.out == nil {
		d.out = make([]byte, wholeOut)
	}
	for size := max(libdeflate.ISize(src), need) + 4<<10; ; size *= 4 {
		if size > wholeOut {
			return false, nil // still in br: stream it
		}
		k, used, err := d.whole.Gunzip(d.out[:size], src)
		switch {
		case errors.Is(err, libdeflate.ErrInsufficientSpace):
			continue
		case err != nil:
			return true, fmt.Errorf("member at %d: decompressing: %w", m.offset, err)
		}
		br.Discard(used) // the rest of the span, if any, is skipped after
		wholeMembers.Add(1)
		return true, e.segments(m, bytes.NewReader(d.out[:k]), d.buf)
	}
}
