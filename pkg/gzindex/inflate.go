package gzindex

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/klauspost/compress/flate"

	"github.com/stargz-get/stargz-get/internal/fill"
)

// gzip header flags (RFC 1952).
const (
	flagHCRC    = 1 << 1
	flagExtra   = 1 << 2
	flagName    = 1 << 3
	flagComment = 1 << 4
)

// maxHeaderField bounds a gzip header's name, comment or extra field.
const maxHeaderField = 1 << 20

// counter counts the bytes read through it.
type counter struct {
	r io.Reader
	n int64
}

func (c *counter) Read(p []byte) (int, error) {
	k, err := c.r.Read(p)
	c.n += int64(k)
	return k, err
}

// inflater reads the uncompressed stream of a gzip blob, member after
// member, from the blob's start or from a checkpoint. While building, it
// reports each block end (onBlock) and each member start (onMember).
type inflater struct {
	cnt  *counter
	br   *bufio.Reader
	base int64 // offset in the blob of the first byte of cnt
	fr   io.ReadCloser
	out  int64 // uncompressed offset of the next byte
	// flateStart is the blob offset where the current member's deflate
	// data starts.
	flateStart int64
	memberOut  int64 // uncompressed offset where the current member starts
	onBlock    func(cp flate.InflateCheckpoint, in int64, out int64)
	onMember   func(in, out int64)
	onEnd      func(in, out int64) // a member's deflate data ended
	err        error
}

// newInflater reads from r, whose first byte is at blob offset base.
func newInflater(r io.Reader, base int64) *inflater {
	cnt := &counter{r: r}
	return &inflater{cnt: cnt, br: bufio.NewReaderSize(cnt, 64<<10), base: base}
}

// pos is the blob offset of the next byte the inflater has not consumed.
func (z *inflater) pos() int64 { return z.base + z.cnt.n - int64(z.br.Buffered()) }

// startMember reads a member's gzip header and starts inflating it. It
// returns io.EOF when the blob ends where a member could start.
func (z *inflater) startMember() error {
	start := z.pos()
	var h [10]byte
	if _, err := io.ReadFull(z.br, h[:1]); err != nil {
		if err == io.EOF {
			return io.EOF
		}
		return fmt.Errorf("reading gzip header at byte %d: %w", start, err)
	}
	if _, err := io.ReadFull(z.br, h[1:]); err != nil {
		return fmt.Errorf("reading gzip header at byte %d: %w", start, fill.Cut(err))
	}
	if h[0] != 0x1f || h[1] != 0x8b || h[2] != 8 {
		return fmt.Errorf("no gzip header at byte %d: not a gzip stream", start)
	}
	flg := h[3]
	if flg&flagExtra != 0 {
		var l [2]byte
		if _, err := io.ReadFull(z.br, l[:]); err != nil {
			return fmt.Errorf("reading gzip header at byte %d: %w", start, fill.Cut(err))
		}
		if _, err := z.br.Discard(int(binary.LittleEndian.Uint16(l[:]))); err != nil {
			return fmt.Errorf("reading gzip header at byte %d: %w", start, fill.Cut(err))
		}
	}
	for _, f := range []byte{flagName, flagComment} {
		if flg&f == 0 {
			continue
		}
		for n := 0; ; n++ {
			c, err := z.br.ReadByte()
			if err != nil {
				return fmt.Errorf("reading gzip header at byte %d: %w", start, fill.Cut(err))
			}
			if c == 0 {
				break
			}
			if n > maxHeaderField {
				return fmt.Errorf("gzip header at byte %d: name or comment over %d bytes", start, maxHeaderField)
			}
		}
	}
	if flg&flagHCRC != 0 {
		if _, err := z.br.Discard(2); err != nil {
			return fmt.Errorf("reading gzip header at byte %d: %w", start, fill.Cut(err))
		}
	}
	if z.onMember != nil {
		z.onMember(start, z.out)
	}
	z.flateStart, z.memberOut = z.pos(), z.out
	opts := []flate.ReaderOpt{flate.WithPartialBlock()}
	if z.onBlock != nil {
		opts = append(opts, flate.WithEobCallback(z.block))
	}
	z.fr = flate.NewReaderOpts(z.br, opts...)
	return nil
}

// resume starts inflating mid-member at checkpoint cp, whose byte is the
// first one of the reader; window is its window.
func (z *inflater) resume(cp *Checkpoint, window []byte) {
	z.out = cp.Out
	if cp.Member { // startMember reads the header
		return
	}
	z.flateStart, z.memberOut = cp.In, cp.Out
	z.fr = flate.NewReaderOpts(z.br, flate.WithPartialBlock(), flate.WithResumeFrom(flate.InflateCheckpoint{
		CompressedOffset: 0, UncompressedOffset: 0, BitOffset: cp.Bit, Window: window,
	}))
}

func (z *inflater) block(cp flate.InflateCheckpoint) {
	z.onBlock(cp, z.flateStart, z.memberOut)
}

// Read delivers the uncompressed bytes.
func (z *inflater) Read(p []byte) (int, error) {
	for {
		if z.err != nil {
			return 0, z.err
		}
		if z.fr == nil {
			if err := z.startMember(); err != nil {
				z.err = err
				continue
			}
		}
		n, err := z.fr.Read(p)
		z.out += int64(n)
		if err == io.EOF {
			// The member's deflate data ended exactly here: the trailer
			// (CRC-32 and size, which the layer digest makes redundant)
			// follows, then perhaps another member.
			if z.onEnd != nil {
				z.onEnd(z.pos(), z.out)
			}
			if _, derr := z.br.Discard(8); derr != nil {
				z.err = fmt.Errorf("reading gzip trailer: %w", fill.Cut(derr))
			}
			z.fr = nil
			err = nil
		} else if err != nil {
			z.err = fmt.Errorf("inflating at byte %d: %w", z.pos(), err)
		}
		if n > 0 {
			return n, nil
		}
	}
}
