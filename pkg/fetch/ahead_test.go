package fetch_test

import (
	"context"
	"errors"
	"testing"

	"github.com/stargz-get/stargz-get/internal/testenv"
	"github.com/stargz-get/stargz-get/pkg/fetch"
	"github.com/stargz-get/stargz-get/pkg/registry"
	"github.com/stargz-get/stargz-get/pkg/wire"
)

// extent is where a regular file's contents lie, as sg-ls records say
// (offset, compressedSize, chunkOffsets).
type extent struct {
	span   registry.Span
	chunks []int64
}

// extents returns the extents of the layer's regular files, in TOC order.
func extents(l *fetch.Layer) []extent {
	var xs []extent
	for _, e := range l.TOC.Entries {
		if e.Type != wire.TypeReg {
			continue
		}
		if off, end := e.CompressedSpan(); end > off {
			xs = append(xs, extent{registry.Span{Off: off, N: end - off}, e.ChunkStarts()})
		}
	}
	return xs
}

// cut returns the spans to read ahead for the files xs, as sg-fetch cuts
// them from its input.
func cut(xs []extent, total int64, opts fetch.Options) []registry.Span {
	var spans []registry.Span
	c := fetch.NewAheadCutter(total, opts, nil, func(sp registry.Span) { spans = append(spans, sp) })
	for _, x := range xs {
		c.Add(x.span, x.chunks...)
	}
	c.Flush()
	return spans
}

// fetchAhead fetches the whole layer with spans read ahead from
// aheadBlob, and checks the tree.
func fetchAhead(t *testing.T, fl *testenv.Layer, b *blobFile, l *fetch.Layer, aheadBlob *blobFile, spans []registry.Span, opts fetch.Options) *fetch.Ahead {
	t.Helper()
	a := fetch.NewAhead(context.Background(), aheadBlob)
	for _, sp := range spans {
		a.Start(sp)
	}
	l.Ahead = a
	fetchWhole(t, fl, l, opts)
	a.Close()
	return a
}

// fetchWhole fetches the whole layer l (of fixture layer fl) and checks
// that every entry was fetched, the tree, and that no temp file is left.
func fetchWhole(t *testing.T, fl *testenv.Layer, l *fetch.Layer, opts fetch.Options) {
	t.Helper()
	dir := t.TempDir()
	for p, o := range run(t, context.Background(), dir, wantAll(l, ""), opts) {
		if o.Status != wire.StatusFetched {
			t.Errorf("%s: %s: %v", p, o.Status, o.Err)
		}
	}
	if err := testenv.CheckTree(dir, fl.Files, nil); err != nil {
		t.Error(err)
	}
	noTemp(t, dir)
}

// TestReadAheadWholeLayer: spans picked from the files' extents, read
// before the plan is made, are taken over by the runs: the layer comes
// whole, each byte once, with no request beyond the spans'.
func TestReadAheadWholeLayer(t *testing.T) {
	for _, tc := range []struct {
		name  string
		layer *testenv.Layer
		jobs  int
	}{
		{"gotree -j 4", fixtures.GoTree.Layers[0], 4},
		{"gotree -j 8", fixtures.GoTree.Layers[0], 8},
		{"minchunk -j 3", fixtures.MinChunk.Layers[0], 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := open(t, tc.layer)
			l := readTOC(t, b)
			l.TOC.Tail = nil // every member from the blob, counted
			opts := fetch.Options{Jobs: tc.jobs}
			spans := cut(extents(l), l.TOC.Offset, opts)
			if len(spans) != tc.jobs {
				t.Fatalf("%d spans for %d jobs, want one per job", len(spans), tc.jobs)
			}
			a := fetchAhead(t, tc.layer, b, l, b, spans, opts)
			if got := a.Claimed(); got != len(spans) {
				t.Errorf("runs took %d of %d spans", got, len(spans))
			}
			if got, max := b.bytes.Load(), l.TOC.Offset; got > max {
				t.Errorf("downloaded %d bytes, more than the %d bytes of data before the TOC", got, max)
			}
		})
	}
}

// TestReadAheadMisaligned: spans that do not start where members do (the
// records lied, or were edited) still give the right files: a run skips
// to its first member, and reads past its span's end with a request of
// its own.
func TestReadAheadMisaligned(t *testing.T) {
	fl := fixtures.GoTree.Layers[0]
	b := open(t, fl)
	l := readTOC(t, b)
	l.TOC.Tail = nil
	opts := fetch.Options{Jobs: 4}
	spans := cut(extents(l), l.TOC.Offset, opts)
	for i := range spans {
		spans[i].Off += 1000
	}
	a := fetchAhead(t, fl, b, l, b, spans, opts)
	if a.Claimed() == 0 {
		t.Error("no run took a span")
	}
}

// TestReadAheadBadBytes: bytes read ahead that are not the layer's (or a
// span whose request fails) never land: the runs fail their checks and
// read their bytes again with requests of their own.
func TestReadAheadBadBytes(t *testing.T) {
	fl := fixtures.GoTree.Layers[0]
	for _, tc := range []struct {
		name  string
		fault func(call, off, n int64, body []byte) ([]byte, error)
	}{
		{"corrupt", func(call, off, n int64, body []byte) ([]byte, error) {
			bad := make([]byte, len(body))
			for i := range bad {
				bad[i] = body[i] ^ 0x5a
			}
			return bad, nil
		}},
		{"refused", func(call, off, n int64, body []byte) ([]byte, error) {
			return nil, errors.New("503 Service Unavailable")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := open(t, fl)
			l := readTOC(t, b)
			l.TOC.Tail = nil
			bad := &blobFile{data: b.data, fault: tc.fault}
			opts := fetch.Options{Jobs: 4}
			spans := cut(extents(l), l.TOC.Offset, opts)
			fetchAhead(t, fl, b, l, bad, spans, opts)
			if bad.requests.Load() == 0 {
				t.Error("nothing was read ahead")
			}
			var spanned int64
			for _, s := range spans {
				spanned += s.N
			}
			if got := b.bytes.Load(); got < spanned {
				t.Errorf("%d bytes from the layer itself, want the %d of the spans again", got, spanned)
			}
		})
	}
}

// TestAheadCutterOnlyForLargeShares: scattered small files are left to
// the plan; spans hold only wanted bytes (and gaps plan would download
// anyway); a whole layer is cut where files or their chunks start into
// at most one span per job, none over the request cap.
func TestAheadCutterOnlyForLargeShares(t *testing.T) {
	b := open(t, fixtures.GoTree.Layers[0])
	l := readTOC(t, b)
	all := extents(l)
	var small, every []extent
	var smallBytes, everyBytes int64
	for i, x := range all {
		if i%50 == 0 {
			every = append(every, x)
			everyBytes += x.span.N
			if x.span.N < 64<<10 {
				small = append(small, x)
				smallBytes += x.span.N
			}
		}
	}
	opts := fetch.Options{Jobs: 8}
	if spans := cut(small, smallBytes, opts); len(spans) != 0 {
		t.Errorf("%d spans for %d scattered small files, want none", len(spans), len(small))
	}
	for _, s := range cut(every, everyBytes, opts) {
		for off := s.Off; off < s.Off+s.N; {
			next := int64(-1)
			for _, x := range every {
				if x.span.Off <= off+fetch.DefaultMaxGap && off < x.span.Off+x.span.N {
					next = max(next, x.span.Off+x.span.N)
				}
			}
			if next < 0 {
				t.Fatalf("span %d+%d holds byte %d, of no wanted file", s.Off, s.N, off)
			}
			off = next
		}
	}
	starts := map[int64]bool{}
	for _, x := range all {
		starts[x.span.Off] = true
		for _, c := range x.chunks {
			starts[c] = true
		}
	}
	opts.MaxRequestBytes = 1 << 20
	spans := cut(all, l.TOC.Offset, opts)
	if len(spans) != 8 {
		t.Fatalf("%d spans of a whole layer for 8 jobs, want 8", len(spans))
	}
	for i, s := range spans {
		if !starts[s.Off] {
			t.Errorf("span %d starts at %d, where no file or chunk does", i, s.Off)
		}
		if s.N > opts.MaxRequestBytes {
			t.Errorf("span %d is %d bytes, over the %d cap", i, s.N, opts.MaxRequestBytes)
		}
		if i > 0 && s.Off < spans[i-1].Off+spans[i-1].N {
			t.Errorf("span %d overlaps the one before", i)
		}
	}
}

// TestAheadCutterInBlobOrderOnly: extents that come out of blob order
// (entries sorted by name, say) stop the cutting, and cutters sharing a
// budget of spans give no more than it between them.
func TestAheadCutterInBlobOrderOnly(t *testing.T) {
	b := open(t, fixtures.GoTree.Layers[0])
	l := readTOC(t, b)
	all := extents(l)
	opts := fetch.Options{Jobs: 8}
	var got []registry.Span
	give := func(sp registry.Span) { got = append(got, sp) }
	c := fetch.NewAheadCutter(l.TOC.Offset, opts, nil, give)
	for i := len(all) - 1; i >= 0; i-- {
		c.Add(all[i].span, all[i].chunks...)
	}
	c.Flush()
	if len(got) != 0 {
		t.Errorf("%d spans from extents in reverse order, want none", len(got))
	}
	left := 5
	for range 2 {
		c := fetch.NewAheadCutter(l.TOC.Offset, opts, &left, give)
		for _, x := range all {
			c.Add(x.span, x.chunks...)
		}
		c.Flush()
	}
	if len(got) != 5 || left != 0 {
		t.Errorf("two cutters sharing 5 spans gave %d, %d left", len(got), left)
	}
}
