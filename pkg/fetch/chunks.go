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
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/stargz-get/stargz-get/internal/libdeflate"
	"github.com/stargz-get/stargz-get/pkg/toc"
)

// ChunkSource produces the verified, uncompressed bytes of chunks. It is
// the one place where the streaming readers (Contents, and through it the
// tar writer, sg-fetch -o - and pkg/imagefs) get a chunk's bytes, so a
// chunk cache slots in here: a ChunkSource that answers from the cache by
// chunk digest and asks the one it wraps for the rest.
type ChunkSource interface {
	// ReadChunks fills dst[i] (of length cs[i].Size) with the bytes of
	// chunk cs[i] of layer l, each checked against its digest when the
	// TOC gives one. cs is sorted by Offset, then InnerOffset.
	ReadChunks(ctx context.Context, l *Layer, cs []toc.Chunk, dst [][]byte) error
}

// RemoteChunks returns the ChunkSource that downloads chunks from their
// layer blob: the members holding cs, joined into one range request across
// gaps up to opts.MaxGap, retried opts.Tries times from the first chunk
// not yet read. Chunks in the tail read with the TOC come from memory.
func RemoteChunks(opts Options) ChunkSource {
	opts = opts.withDefaults()
	return &remoteChunks{opts: opts}
}

type remoteChunks struct{ opts Options }

// withDefaults fills in the zero fields of opts.
func (o Options) withDefaults() Options {
	if o.Jobs <= 0 {
		o.Jobs = DefaultJobs
	}
	if o.MaxGap == 0 {
		o.MaxGap = DefaultMaxGap
	}
	if o.MaxRequestBytes <= 0 {
		o.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if o.Tries <= 0 {
		o.Tries = DefaultTries
	}
	if o.MaxRanges <= 0 {
		o.MaxRanges = DefaultMaxRanges
	}
	if o.Window <= 0 {
		o.Window = DefaultWindow
	}
	return o
}

// ErrDigest means bytes did not match the digest the TOC gives for them.
var ErrDigest = errors.New("digest mismatch")

func (rc *remoteChunks) ReadChunks(ctx context.Context, l *Layer, cs []toc.Chunk, dst [][]byte) error {
	if l.TOC.Full {
		return fmt.Errorf("layer %s is not eStargz: its files can only be extracted from the whole layer", describeBlob(l))
	}
	// Runs of chunks whose members are close enough for one request.
	start := 0
	for i := 1; i <= len(cs); i++ {
		if i < len(cs) && cs[i].Offset-cs[i-1].End <= rc.opts.MaxGap && cs[i].End-cs[start].Offset <= rc.opts.MaxRequestBytes {
			continue
		}
		if err := rc.run(ctx, l, cs[start:i], dst[start:i]); err != nil {
			return err
		}
		start = i
	}
	return nil
}

// run reads chunks whose members make one range, retrying.
func (rc *remoteChunks) run(ctx context.Context, l *Layer, cs []toc.Chunk, dst [][]byte) error {
	done := 0
	for attempt := 1; ; attempt++ {
		n, err := readRun(ctx, l, cs[done:], dst[done:], attempt > 1)
		done += n
		if err == nil {
			return nil
		}
		if errors.Is(err, ErrDigest) && attempt > 1 || ctx.Err() != nil || attempt >= rc.opts.Tries {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		wait := backoff(attempt)
		if rc.opts.Logf != nil {
			rc.opts.Logf("bytes %d-%d of %s: %v; retrying in %s", cs[done].Offset, cs[len(cs)-1].End-1, describeBlob(l), err, wait.Round(time.Millisecond))
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
		}
	}
}

// readRun reads the chunks cs from one range of the blob (or from the
// tail read with the TOC unless remote is set), and returns how many it
// finished.
func readRun(ctx context.Context, l *Layer, cs []toc.Chunk, dst [][]byte, remote bool) (int, error) {
	start, end := cs[0].Offset, cs[len(cs)-1].End
	var body io.Reader
	if t := l.TOC; !remote && t.Tail != nil && start >= t.TailStart {
		body = bytes.NewReader(t.Tail[start-t.TailStart : end-t.TailStart])
	} else {
		rb, err := l.Blob.ReadRange(ctx, start, end-start)
		if err != nil {
			return 0, err
		}
		defer rb.Close()
		body = rb
	}
	cr := &posReader{r: body}
	br := bufio.NewReaderSize(cr, 64<<10)
	pos := func() int64 { return start + cr.n - int64(br.Buffered()) }
	var zr gzip.Reader
	var zd *zstd.Decoder
	defer func() {
		if zd != nil {
			_ = zd.Reset(nil)
			zstdDecoders.Put(zd)
		}
	}()
	var wd *libdeflate.Decompressor // for members decoded whole, once one is
	var scratch []byte              // what they hold, see chunkWhole
	var dec io.Reader               // the current member's decompressed stream
	var at int64                    // position in it
	member := int64(-1)
	for i, c := range cs {
		if c.Zeros { // a hole: nothing to read
			clear(dst[i])
			if c.Digest != "" && zeroDigest(c.Size) != c.Digest {
				return i, fmt.Errorf("zeros chunk at %d: %w: TOC says %s", c.FileOffset, ErrDigest, c.Digest)
			}
			continue
		}
		if p := cs[max(i-1, 0)]; i > 0 && !p.Zeros && c.Offset == p.Offset && c.InnerOffset == p.InnerOffset && c.Size <= p.Size {
			copy(dst[i], dst[i-1]) // the same bytes, asked for twice
			continue
		}
		if c.Offset == member && c.InnerOffset < at {
			return i, fmt.Errorf("chunks at %d of member %d overlap: the TOC is inconsistent", c.InnerOffset, c.Offset)
		}
		if c.Offset != member {
			if _, err := br.Discard(int(c.Offset - pos())); err != nil {
				return i, fmt.Errorf("skipping to member at %d: %w", c.Offset, err)
			}
			// A chunk that is its member's only one here is decoded whole
			// into its buffer when libdeflate is at hand (see whole.go).
			if c.Codec != toc.CodecZstd && c.InnerOffset == 0 && (i+1 == len(cs) || cs[i+1].Offset != c.Offset) {
				if wd == nil && useLibdeflate() {
					if wd, _ = libdeflate.NewDecompressor(); wd != nil {
						defer wd.Free()
					}
				}
				if wd != nil {
					done, err := chunkWhole(wd, br, c, dst[i], &scratch)
					if err != nil {
						return i, err
					}
					if done {
						member, at, dec = c.Offset, c.Size, nil
						if err := checkChunk(c, dst[i]); err != nil {
							return i, err
						}
						continue
					}
				}
			}
			if c.Codec == toc.CodecZstd {
				if zd == nil {
					d, ok := zstdDecoders.Get().(*zstd.Decoder)
					if !ok {
						return i, fmt.Errorf("zstd frame at %d: creating a decoder failed", c.Offset)
					}
					zd = d
				}
				// The TOC gives the frame's end: the decoder reads no further.
				if err := zd.Reset(&io.LimitedReader{R: br, N: c.End - c.Offset}); err != nil {
					return i, fmt.Errorf("zstd frame at %d: %w", c.Offset, err)
				}
				dec = zd
			} else {
				if err := zr.Reset(br); err != nil {
					return i, fmt.Errorf("member at %d: %w", c.Offset, err)
				}
				zr.Multistream(false)
				dec = &zr
			}
			member, at = c.Offset, 0
		}
		if skip := c.InnerOffset - at; skip > 0 {
			if _, err := io.CopyN(io.Discard, dec, skip); err != nil {
				return i, fmt.Errorf("member at %d: decompressing: %w", c.Offset, err)
			}
			at += skip
		}
		if _, err := io.ReadFull(dec, dst[i]); err != nil {
			return i, fmt.Errorf("member at %d: decompressing: %w", c.Offset, err)
		}
		at += c.Size
		if err := checkChunk(c, dst[i]); err != nil {
			return i, err
		}
	}
	return len(cs), nil
}

// checkChunk checks chunk c's bytes b against the digest the TOC gives.
func checkChunk(c toc.Chunk, b []byte) error {
	if c.Digest == "" {
		return nil
	}
	sum := sha256.Sum256(b)
	if got := "sha256:" + hex.EncodeToString(sum[:]); got != c.Digest {
		return fmt.Errorf("chunk at %d of member %d: %w: got %s, TOC says %s", c.FileOffset, c.Offset, ErrDigest, got, c.Digest)
	}
	return nil
}

// chunkWhole decodes chunk c, at the start of the gzip member at br's
// next byte, into out with wd (through scratch: the member goes on with
// the next entries' tar headers), if peekWhole can; it reports whether it
// did, having read nothing from br when it did not (the member is then
// streamed). Larger members always stream here: reading one whole would
// hold it in memory besides its chunk's buffer, and on W1's 4 MiB chunks
// that cost 7 MiB for no gain in time.
func chunkWhole(wd *libdeflate.Decompressor, br *bufio.Reader, c toc.Chunk, out []byte, scratch *[]byte) (bool, error) {
	b, err := peekWhole(wd, br, c.Offset, c.End-c.Offset, c.Size, scratch)
	if b == nil || err != nil {
		return false, err
	}
	if len(b) < len(out) {
		return false, fmt.Errorf("member at %d: decompressing: %w", c.Offset, io.ErrUnexpectedEOF)
	}
	copy(out, b)
	return true, nil
}

// posReader counts the bytes read through it.
type posReader struct {
	r io.Reader
	n int64
}

func (p *posReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n += int64(n)
	return n, err
}

// describeBlob names a layer's blob in messages.
func describeBlob(l *Layer) string {
	return fmt.Sprint(l.Blob)
}
