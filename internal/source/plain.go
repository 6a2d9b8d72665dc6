package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/stargz-get/stargz-get/pkg/blob"
	"github.com/stargz-get/stargz-get/pkg/fetch"
	"github.com/stargz-get/stargz-get/pkg/gzindex"
	"github.com/stargz-get/stargz-get/pkg/registry"
	"github.com/stargz-get/stargz-get/pkg/toc"
	"github.com/stargz-get/stargz-get/pkg/wire"
)

// indexKind is the cache kind of seek indexes, keyed by layer digest.
const indexKind = "gzindex"

// Indexed reports whether a seek index of the layer dgst is cached.
func (s *Source) Indexed(dgst string) bool { return s.Cache.Has(indexKind, dgst) }

// OpenStreaming opens the layer rec describes for sg-fetch: like Open,
// except that a plain layer without a cached seek index is not listed
// first (listed is false, the TOC is empty): fetch.RunStream lists it
// while it extracts, stopping after the last file wanted.
func (s *Source) OpenStreaming(ctx context.Context, repo name.Repository, rec wire.Layer) (l *fetch.Layer, listed bool, err error) {
	return s.openAny(ctx, repo, rec, false)
}

func (s *Source) warnf(format string, args ...any) {
	if s.Warnf != nil {
		s.Warnf(format, args...)
	}
}

// compressionOf maps a plain layer format to toc.Decompress's names.
var compressionOf = map[string]string{
	wire.FormatGzip: toc.CompressionGzip, wire.FormatZstd: toc.CompressionZstd,
	wire.FormatZstdChunked: toc.CompressionZstd, wire.FormatTar: toc.CompressionNone,
}

// openIndexed opens a plain gzip layer through its cached seek index,
// reading nothing of the blob; it returns nil, nil when the index is
// missing or unusable (then removed, with a warning).
func (s *Source) openIndexed(ctx context.Context, repo name.Repository, rec wire.Layer, what string) (*fetch.Layer, error) {
	b, ok := s.Cache.Get(indexKind, rec.Digest)
	if !ok {
		return nil, nil
	}
	// The entries go into the TOC as they are read, and the windows stay
	// compressed until a read needs one: the index is never resident
	// twice, nor its windows at all when only listing.
	ix, t, err := gzindex.LoadTOC(b, rec.Digest, rec.Size, wire.FormatGzip, s.TOC.MaxEntries)
	if err == nil {
		bl, err := s.blob(ctx, repo, rec.Digest, rec.Size, what)
		if err != nil {
			return nil, err
		}
		p := &plainLayer{s: s, blob: bl, compression: toc.CompressionGzip, what: what}
		p.ix.Store(ix)
		if s.Logf != nil {
			s.Logf("%s: listed from its cached seek index (%d entries, %d checkpoints), no blob bytes read", what, len(t.Entries), len(ix.Checkpoints))
		}
		return &fetch.Layer{Blob: bl, TOC: t, Pinned: true, Plain: p}, nil
	}
	s.warnf("the cached seek index of %s is unusable (%v): removed it", what, err)
	s.Cache.Remove(indexKind, rec.Digest)
	return nil, nil
}

// openPlain opens a layer that is not eStargz. Listed (list), it is
// streamed once, whole, in parallel segments, checked against its digest
// and listed; a gzip layer's seek index is built on the way and cached.
func (s *Source) openPlain(ctx context.Context, repo name.Repository, rec wire.Layer, what string, list bool) (*fetch.Layer, bool, error) {
	compression := compressionOf[rec.Format]
	if compression == "" {
		return nil, false, fmt.Errorf("%s is %s, which cannot be read: %w", what, rec.Format, ErrNotLazy)
	}
	bl, err := s.blob(ctx, repo, rec.Digest, rec.Size, what)
	if err != nil {
		return nil, false, err
	}
	p := &plainLayer{s: s, blob: bl, compression: compression, what: what}
	l := &fetch.Layer{Blob: bl, TOC: toc.NewBuilder(rec.Format, s.TOC.MaxEntries).TOC(), Pinned: true, Plain: p}
	if !list {
		return l, false, nil
	}
	if s.Logf != nil {
		s.Logf("%s is %s, not eStargz: streaming it whole (%d bytes) to list it", what, rec.Format, rec.Size)
	}
	st, err := blob.NewStream(ctx, bl, 0, blob.WithDigest(rec.Digest))
	if err != nil {
		return nil, false, err
	}
	defer st.Close()
	var entries []gzindex.Entry
	var ix *gzindex.Index
	if compression == toc.CompressionGzip {
		ix, err = gzindex.Build(st, rec.Digest, rec.Size, gzindex.WithMaxEntries(cmpOr(s.TOC.MaxEntries, toc.DefaultMaxEntries)))
		if ix != nil {
			entries = ix.Entries
		}
	} else {
		entries, err = listTar(st, compression, s.TOC.MaxEntries)
	}
	st.Close() // its buffers go before the index is written out
	if err != nil {
		if errors.Is(err, blob.ErrDigestMismatch) {
			s.Cache.Remove(indexKind, rec.Digest)
		}
		return nil, false, fmt.Errorf("reading %s: %w", what, err)
	}
	if ix != nil {
		// Written out before the TOC is made, so that the two do not
		// take memory at once.
		s.keep(ix, what)
		p.ix.Store(ix)
	}
	if l.TOC, err = gzindex.EntriesTOC(entries, rec.Format, s.TOC.MaxEntries); err != nil {
		return nil, false, fmt.Errorf("reading %s: %w", what, err)
	}
	if ix != nil {
		ix.Entries = nil // in the TOC now; reading through the index needs no more
	}
	if s.Logf != nil {
		s.Logf("%s: %d entries; %d bytes moved", what, len(l.TOC.Entries), st.BytesMoved())
	}
	return l, true, nil
}

// keep caches a seek index; a cache that cannot be written is a warning
// (once per run).
func (s *Source) keep(ix *gzindex.Index, what string) {
	if s.Cache == nil {
		return
	}
	b, err := ix.Marshal()
	if err == nil {
		err = s.Cache.Put(indexKind, ix.Layer, b)
	}
	if err != nil {
		s.warnCache.Do(func() {
			s.warnf("cannot keep the seek index of %s: %v; going on without (give a writable --cache-dir, or --no-cache)", what, err)
		})
		return
	}
	if s.Logf != nil {
		s.Logf("%s: seek index of %d checkpoints (%d bytes) cached in %s", what, len(ix.Checkpoints), len(b), s.Cache.Dir())
	}
}

// listTar lists a zstd or uncompressed tar stream and reads it to its
// end, so that the stream checks the layer digest.
func listTar(r io.Reader, compression string, maxEntries int64) ([]gzindex.Entry, error) {
	tr, err := toc.Decompress(r, compression)
	if err != nil {
		return nil, err
	}
	defer tr.Close()
	entries, _, err := gzindex.List(tr, maxEntries)
	if err != nil {
		return nil, err
	}
	if _, err := io.Copy(io.Discard, tr); err != nil {
		return nil, fmt.Errorf("reading the layer past its tar: %w", err)
	}
	if _, err := io.Copy(io.Discard, r); err != nil { // a decoder may stop at its frame's end
		return nil, err
	}
	return entries, nil
}

func cmpOr(v, def int64) int64 {
	if v > 0 {
		return v
	}
	return def
}

// plainLayer reads a layer that is not eStargz for the fetcher.
type plainLayer struct {
	s           *Source
	blob        *registry.Blob
	compression string
	what        string
	ix          atomic.Pointer[gzindex.Index]
	rec         atomic.Pointer[gzindex.Recorder] // of the last Stream (gzip)
}

// Stream returns the layer's tar from its start, checked against the
// layer digest at its end.
func (p *plainLayer) Stream(ctx context.Context) (io.ReadCloser, error) {
	st, err := blob.NewStream(ctx, p.blob, 0, blob.WithDigest(p.blob.Digest().String()))
	if err != nil {
		return nil, err
	}
	if p.compression == toc.CompressionGzip && p.s.Cache != nil {
		// Recording checkpoints as it inflates (on a goroutine of its
		// own), so that a stream read to its end leaves a seek index
		// behind (see KeepIndex).
		rec, err := gzindex.NewRecorder(st, p.blob.Digest().String(), p.blob.Size())
		if err != nil {
			st.Close()
			return nil, err
		}
		p.rec.Store(rec)
		return &streamCloser{Reader: rec, ra: rec, tr: io.NopCloser(nil), st: st, p: p}, nil
	}
	tr, err := toc.Decompress(st, p.compression)
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("reading %s: %w", p.what, err)
	}
	// Inflating on a goroutine of its own, ahead of the tar walk, the
	// hashing and the file writes of the caller.
	ra := blob.ReadAhead(tr, aheadBuffers, aheadBufferSize)
	return &streamCloser{Reader: ra, ra: ra, tr: tr, st: st, p: p}, nil
}

// KeepIndex implements fetch.IndexKeeper: the stream of a gzip layer was
// read to its end (its digest checked) and t lists every entry of it with
// the digests of all regular files, so the checkpoints recorded on the
// way and t make the layer's seek index, cached as sg-ls would.
func (p *plainLayer) KeepIndex(t *toc.TOC) error {
	rec := p.rec.Swap(nil)
	if rec == nil {
		return nil
	}
	entries := make([]gzindex.Entry, 0, len(t.Entries))
	for _, e := range t.Entries {
		if e.Type == wire.TypeReg && e.Digest == "" {
			return fmt.Errorf("%s: %s was not written, so its digest is not known", p.what, e.Name)
		}
		entries = append(entries, gzindex.FromTOC(e))
	}
	ix, err := rec.Index(entries)
	if err != nil {
		return fmt.Errorf("%s: %w", p.what, err)
	}
	p.s.keep(ix, p.what)
	return nil
}

// aheadBuffers and aheadBufferSize bound how far inflating runs ahead of
// the reader of a layer's stream: 1 MiB of tar, a fraction of one segment
// of the compressed stream when it is stopped early.
const (
	aheadBuffers    = 4
	aheadBufferSize = 256 << 10
)

// streamCloser closes a layer's read-ahead, decompressor and stream, in
// that order, and logs what moved.
type streamCloser struct {
	io.Reader
	ra io.Closer
	tr io.Closer
	st *blob.Stream
	p  *plainLayer
}

func (c *streamCloser) Read(b []byte) (int, error) {
	n, err := c.Reader.Read(b)
	if errors.Is(err, blob.ErrDigestMismatch) {
		c.p.s.Cache.Remove(indexKind, c.p.blob.Digest().String())
	}
	return n, err
}

func (c *streamCloser) Close() error {
	c.ra.Close()
	c.tr.Close()
	c.st.Close()
	if l := c.p.s.Logf; l != nil {
		l("%s: stream closed at byte %d of %d; %d bytes moved", c.p.what, c.st.Offset(), c.p.blob.Size(), c.st.BytesMoved())
	}
	return nil
}

// Span implements fetch.Plain.
func (p *plainLayer) Span(from, to int64) (off, end int64, ok bool) {
	ix := p.ix.Load()
	if ix == nil {
		return 0, 0, false
	}
	off, end = ix.Span(from, to)
	return off, end, true
}

// Seek implements fetch.Plain.
func (p *plainLayer) Seek(ctx context.Context, from, to int64) (io.ReadCloser, error) {
	ix := p.ix.Load()
	if ix == nil {
		return nil, errors.New("no seek index")
	}
	rc, err := ix.Open(ctx, func(ctx context.Context, off, end int64) (io.ReadCloser, error) {
		if p.s.Logf != nil {
			p.s.Logf("%s: reading bytes %d-%d through the seek index for tar bytes %d-%d", p.what, off, end-1, from, to-1)
		}
		return blob.NewStream(ctx, p.blob, off, blob.WithEnd(end), blob.WithSegmentBytes(seekSegment), blob.WithWindow(seekWindow))
	}, from, to)
	if errors.Is(err, gzindex.ErrCorrupt) {
		err = fmt.Errorf("%w: %w", fetch.ErrIndexMismatch, err)
	}
	return rc, err
}

// seekSegment and seekWindow are the segments of a read through the seek
// index and how many it has in flight: enough to outrun inflating (four
// connections, 100 MB/s at 25 MB/s each), small enough that the runs of a
// whole-layer fetch read at once (fetch.maxSeekRuns) hold 16 MiB, not the
// 128 MiB of eight whole-layer streams.
const (
	seekSegment = 1 << 20
	seekWindow  = 4
)

// Distrust implements fetch.Plain.
func (p *plainLayer) Distrust(err error) {
	p.ix.Store(nil)
	p.s.Cache.Remove(indexKind, p.blob.Digest().String())
	p.s.warnf("the cached seek index of %s does not match the layer (%v): removed it; run again to rebuild it", p.what, err)
}
