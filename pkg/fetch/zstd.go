package fetch

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// zstdMaxWindow bounds the memory one zstd decoder may use: zstd:chunked
// writers use windows of 8 MiB at most at their default levels, and a
// frame asking for more is refused rather than trusted.
const zstdMaxWindow = 64 << 20

// zstdDecoders holds decoders between members: a decoder's tables cost
// more to set up than a frame of a small file costs to decode.
var zstdDecoders = sync.Pool{New: func() any {
	d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxWindow(zstdMaxWindow))
	if err != nil {
		return err
	}
	return d
}}

// zstdMember decodes the zstd frames of member m from br, which is at m's
// start, writes its wanted segments, and leaves br at m's end. The TOC
// gives each span's exact end, so the decoder reads no further than it.
func (e *engine) zstdMember(m *member, br *bufio.Reader, buf []byte) error {
	d, ok := zstdDecoders.Get().(*zstd.Decoder)
	if !ok {
		return fmt.Errorf("%s at %d: creating decoder: %v", m.codec, m.offset, zstdDecoders.New())
	}
	defer zstdDecoders.Put(d)
	lr := &io.LimitedReader{R: br, N: m.end - m.offset}
	if err := d.Reset(lr); err != nil {
		return fmt.Errorf("%s at %d: %w", m.codec, m.offset, err)
	}
	err := e.segments(m, d, buf)
	_ = d.Reset(nil) // let go of br
	if err != nil {
		return err
	}
	if _, err := br.Discard(int(lr.N)); err != nil {
		return fmt.Errorf("reading %s at %d: %w", m.codec, m.offset, err)
	}
	return nil
}

// zeroDigests caches the digests of runs of zero bytes by length.
var zeroDigests sync.Map // int64 -> string

// zeroDigest returns the sha256 digest of n zero bytes.
func zeroDigest(n int64) string {
	if d, ok := zeroDigests.Load(n); ok {
		return d.(string)
	}
	h := sha256.New()
	zeros := make([]byte, min(n, 1<<20))
	for left := n; left > 0; {
		k := min(left, int64(len(zeros)))
		h.Write(zeros[:k])
		left -= k
	}
	d := "sha256:" + hex.EncodeToString(h.Sum(nil))
	zeroDigests.Store(n, d)
	return d
}
