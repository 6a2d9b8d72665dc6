package gzindex

import (
	"context"
	"fmt"
	"io"

	"github.com/stargz-get/stargz-get/internal/fill"
)

// OpenFunc opens the blob's bytes [off, end).
type OpenFunc func(ctx context.Context, off, end int64) (io.ReadCloser, error)

// Span returns the blob bytes [off, end) that hold the uncompressed bytes
// [from, to): from the nearest checkpoint at or before from to just past
// the first block boundary at or after to.
func (ix *Index) Span(from, to int64) (off, end int64) {
	cp, end := ix.span(from, to)
	return cp.In, end
}

// Open returns the uncompressed bytes [from, to) of the layer, read
// through open from the nearest checkpoint: only the blob bytes of Span.
func (ix *Index) Open(ctx context.Context, open OpenFunc, from, to int64) (io.ReadCloser, error) {
	if from < 0 || to < from || to > ix.Uncompressed {
		return nil, fmt.Errorf("uncompressed range %d-%d outside the layer's %d bytes", from, to, ix.Uncompressed)
	}
	cp, end := ix.span(from, to)
	window, err := ix.window(cp)
	if err != nil {
		return nil, err
	}
	rc, err := open(ctx, cp.In, end)
	if err != nil {
		return nil, err
	}
	z := newInflater(rc, cp.In)
	z.resume(cp, window)
	if _, err := io.CopyN(io.Discard, z, from-cp.Out); err != nil {
		rc.Close()
		return nil, fmt.Errorf("inflating from the checkpoint at byte %d: %w", cp.In, fill.Cut(err))
	}
	return struct {
		io.Reader
		io.Closer
	}{io.LimitReader(z, to-from), rc}, nil
}
