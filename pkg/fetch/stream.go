package fetch

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"os"
	"time"

	"github.com/klauspost/compress/gzip"
)

// do runs one request, retrying from the first member not yet finished.
func (e *engine) do(ctx context.Context, r *request) {
	next := 0
	buf := make([]byte, 128<<10)
	var zr gzip.Reader
	for attempt := 1; ; attempt++ {
		err := e.stream(ctx, r, &next, buf, &zr)
		if err == nil {
			return
		}
		if ctx.Err() != nil || attempt >= e.opts.Tries {
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			for _, m := range r.members[next:] {
				for _, s := range m.segments {
					if !s.done {
						for _, t := range s.targets {
							e.segmentFailed(t, err)
						}
					}
				}
			}
			return
		}
		wait := backoff(attempt)
		e.logf("bytes %d-%d of %s: %v; retrying in %s", r.members[next].offset, r.end-1, r.layer.Blob, err, wait.Round(time.Millisecond))
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

// stream reads members r.members[*next:] in one range request.
func (e *engine) stream(ctx context.Context, r *request, next *int, buf []byte, zr *gzip.Reader) error {
	start := r.members[*next].offset
	body, err := r.layer.Blob.ReadRange(ctx, start, r.end-start)
	if err != nil {
		return err
	}
	defer body.Close()
	br := bufio.NewReaderSize(&countingReader{r: body, e: e}, 64<<10)
	pos := start
	for ; *next < len(r.members); *next++ {
		m := r.members[*next]
		if _, err := br.Discard(int(m.offset - pos)); err != nil {
			return fmt.Errorf("skipping to member at %d: %w", m.offset, err)
		}
		lim := &limitedByteReader{r: br, n: m.end - m.offset}
		if err := e.member(m, lim, buf, zr); err != nil {
			return err
		}
		if _, err := io.CopyBuffer(io.Discard, lim, buf); err != nil {
			return fmt.Errorf("reading member at %d: %w", m.offset, err)
		}
		pos = m.end
	}
	return nil
}

// member decodes one gzip member and writes its wanted segments.
func (e *engine) member(m *member, lim *limitedByteReader, buf []byte, zr *gzip.Reader) error {
	if err := zr.Reset(lim); err != nil {
		return fmt.Errorf("member at %d: %w", m.offset, err)
	}
	zr.Multistream(false)
	var at int64 // position in the decompressed stream
	for _, s := range m.segments {
		if skip := s.chunk.InnerOffset - at; skip > 0 {
			if _, err := io.CopyBuffer(io.Discard, io.LimitReader(zr, skip), buf); err != nil {
				return fmt.Errorf("member at %d: %w", m.offset, err)
			}
			at += skip
		}
		h := sha256.New()
		ws := []io.Writer{h}
		for _, t := range s.targets {
			f, err := t.open(e.root)
			if err != nil {
				t.fail(err)
				continue
			}
			if f != nil {
				ws = append(ws, io.NewOffsetWriter(f, s.chunk.FileOffset))
			}
		}
		n, err := io.CopyBuffer(io.MultiWriter(ws...), io.LimitReader(zr, s.chunk.Size), buf)
		at += n
		if err == nil && n < s.chunk.Size {
			err = io.ErrUnexpectedEOF
		}
		var pe *os.PathError
		switch {
		case errors.As(err, &pe):
			// A local write failed: the targets fail, and the stream
			// restarts after this segment (its position is lost).
			for _, t := range s.targets {
				t.fail(err)
			}
			if !s.done {
				s.done = true
				for _, t := range s.targets {
					e.segmentDone(t, s, "")
				}
			}
			return fmt.Errorf("member at %d: %w", m.offset, err)
		case err != nil:
			return fmt.Errorf("member at %d: decompressing: %w", m.offset, err)
		}
		got := "sha256:" + hex.EncodeToString(h.Sum(nil))
		if s.chunk.Digest != "" && got != s.chunk.Digest {
			return fmt.Errorf("chunk at %d of %q: digest %s, TOC says %s", s.chunk.FileOffset, s.targets[0].source.Name, got, s.chunk.Digest)
		}
		if s.done {
			continue
		}
		s.done = true
		for _, t := range s.targets {
			e.segmentDone(t, s, got)
		}
	}
	return nil
}

type countingReader struct {
	r io.Reader
	e *engine
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.e.bytesDone.Add(int64(n))
	c.e.progress(false)
	return n, err
}

// limitedByteReader is io.LimitReader for a bufio.Reader that keeps
// io.ByteReader, so the gzip reader reads exactly the member's bytes
// without buffering of its own.
type limitedByteReader struct {
	r *bufio.Reader
	n int64
}

func (l *limitedByteReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	if err == io.EOF && l.n > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (l *limitedByteReader) ReadByte() (byte, error) {
	if l.n <= 0 {
		return 0, io.EOF
	}
	b, err := l.r.ReadByte()
	if err == nil {
		l.n--
	} else if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return b, err
}
