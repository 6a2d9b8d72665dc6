package toc_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/containerd/stargz-snapshotter/estargz"

	"github.com/stargz-get/stargz-get/internal/testenv"
	"github.com/stargz-get/stargz-get/pkg/toc"
)

var fixtures *testenv.Fixtures

func TestMain(m *testing.M) {
	var err error
	if fixtures, err = testenv.BuildFixtures(filepath.Join(os.TempDir(), "stargz-get-fixtures")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// blob serves ranges of bytes and counts requests.
type blob struct {
	data     []byte
	requests atomic.Int64
}

func (b *blob) Size() int64 { return int64(len(b.data)) }
func (b *blob) ReadRange(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	b.requests.Add(1)
	if off < 0 || off+n > int64(len(b.data)) {
		return nil, fmt.Errorf("range %d+%d outside %d bytes", off, n, len(b.data))
	}
	return io.NopCloser(bytes.NewReader(b.data[off : off+n])), nil
}

func load(t *testing.T, l *testenv.Layer) *blob {
	t.Helper()
	data, err := os.ReadFile(l.BlobPath)
	if err != nil {
		t.Fatal(err)
	}
	return &blob{data: data}
}

func TestReadMatchesEstargz(t *testing.T) {
	for _, img := range []*testenv.Image{fixtures.GoTree, fixtures.MinChunk, fixtures.Multi} {
		for i, l := range img.Layers {
			t.Run(fmt.Sprintf("%s/%d", img.Name, i), func(t *testing.T) {
				b := load(t, l)
				got, err := toc.Read(context.Background(), b, toc.Options{})
				if err != nil {
					t.Fatal(err)
				}
				if got.Digest.String() != l.TOCDigest {
					t.Errorf("TOC digest %s, estargz.Build said %s", got.Digest, l.TOCDigest)
				}
				if got.Format != "estargz" {
					t.Errorf("format %q", got.Format)
				}
				// Compare each file's chunks with what estargz's own reader
				// says, and check extents end at the next member or the TOC.
				r, err := estargz.Open(io.NewSectionReader(bytes.NewReader(b.data), 0, b.Size()))
				if err != nil {
					t.Fatal(err)
				}
				for _, e := range got.Entries {
					if e.Type != "reg" || e.Size == 0 {
						continue
					}
					for _, c := range e.Chunks {
						want, ok := r.ChunkEntryForOffset(e.Name, c.FileOffset)
						if !ok || want.Offset != c.Offset || want.ChunkSize != c.Size || want.InnerOffset != c.InnerOffset || want.ChunkDigest != c.Digest {
							t.Fatalf("%s chunk at %d: got %+v, estargz has %+v", e.Name, c.FileOffset, c, want)
						}
						if c.End <= c.Offset || c.End > got.Offset {
							t.Fatalf("%s chunk at %d: extent %d-%d outside the data (TOC at %d)", e.Name, c.FileOffset, c.Offset, c.End, got.Offset)
						}
					}
				}
			})
		}
	}
}

func TestReadRequests(t *testing.T) {
	b := load(t, fixtures.GoTree.Layers[0])
	if _, err := toc.Read(context.Background(), b, toc.Options{}); err != nil {
		t.Fatal(err)
	}
	if got := b.requests.Load(); got != 1 {
		t.Errorf("default tail: %d requests, want 1", got)
	}
	// A tail too small for the TOC costs exactly one more request.
	b.requests.Store(0)
	tc, err := toc.Read(context.Background(), b, toc.Options{TailBytes: 4096})
	if err != nil {
		t.Fatal(err)
	}
	if got := b.requests.Load(); got != 2 || tc.Requests != 2 {
		t.Errorf("4 KiB tail: %d requests (TOC says %d), want 2", got, tc.Requests)
	}
}

func TestProbeAndNotStargz(t *testing.T) {
	b := load(t, fixtures.Gzip.Layers[0])
	if _, err := toc.Probe(context.Background(), b); !errors.Is(err, toc.ErrNotStargz) {
		t.Errorf("Probe(plain gzip) = %v, want ErrNotStargz", err)
	}
	if _, err := toc.Read(context.Background(), b, toc.Options{}); !errors.Is(err, toc.ErrNotStargz) {
		t.Errorf("Read(plain gzip) = %v, want ErrNotStargz", err)
	}
	f, err := toc.Probe(context.Background(), load(t, fixtures.GoTree.Layers[0]))
	if err != nil || f != "estargz" {
		t.Errorf("Probe(eStargz) = %q, %v", f, err)
	}
}

func TestHostileFooterAndTOC(t *testing.T) {
	good := load(t, fixtures.Multi.Layers[0])
	footerAt := len(good.data) - estargz.FooterSize
	for _, tc := range []struct {
		name   string
		mutate func([]byte) []byte
		want   string
	}{
		{"TOC offset past the end", func(d []byte) []byte {
			return append(d[:footerAt:footerAt], estargz.CreateGzipFooter([]byte(fmt.Sprintf("%016xSTARGZ", 1<<40)))...)
		}, "outside the blob"},
		{"TOC offset in the footer", func(d []byte) []byte {
			return append(d[:footerAt:footerAt], estargz.CreateGzipFooter([]byte(fmt.Sprintf("%016xSTARGZ", footerAt)))...)
		}, "outside the blob"},
		{"TOC offset at a data member", func(d []byte) []byte {
			return append(d[:footerAt:footerAt], estargz.CreateGzipFooter([]byte(fmt.Sprintf("%016xSTARGZ", 0)))...)
		}, "TOC"},
		{"truncated", func(d []byte) []byte { return d[:len(d)-10] }, "footer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &blob{data: tc.mutate(bytes.Clone(good.data))}
			_, err := toc.Read(context.Background(), b, toc.Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Read = %v, want an error about %q", err, tc.want)
			}
		})
	}
	// Limits.
	b := load(t, fixtures.GoTree.Layers[0])
	for _, tc := range []struct {
		opts toc.Options
		want string
	}{
		{toc.Options{MaxTOCBytes: 100}, "--max-toc-bytes"},
		{toc.Options{MaxTOCJSONBytes: 100}, "--max-toc-json-bytes"},
		{toc.Options{MaxEntries: 100}, "--max-toc-entries"},
	} {
		if _, err := toc.Read(context.Background(), b, tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Read(%+v) = %v, want an error naming %s", tc.opts, err, tc.want)
		}
	}
}

// failingBlob fails range requests starting between after and before.
type failingBlob struct {
	*blob
	after, before int64
}

func (b *failingBlob) ReadRange(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	if off > b.after && off < b.before {
		b.requests.Add(1)
		return nil, errors.New("connection reset by test")
	}
	return b.blob.ReadRange(ctx, off, n)
}

// A TOC bigger than the tail read comes in parallel pieces; with its
// offset known from an earlier listing, it comes in pieces at once, with
// no tail read. Either way the TOC is the same, and a wrong offset only
// costs requests.
func TestReadInPieces(t *testing.T) {
	b := load(t, fixtures.GoTree.Layers[0])
	ctx := context.Background()
	want, err := toc.Read(ctx, b, toc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	size, tocLen := b.Size(), b.Size()-want.Offset
	same := func(t *testing.T, got *toc.TOC) {
		t.Helper()
		if got.Digest != want.Digest || got.Offset != want.Offset || len(got.Entries) != len(want.Entries) {
			t.Fatalf("TOC %s at %d with %d entries, want %s at %d with %d", got.Digest, got.Offset, len(got.Entries), want.Digest, want.Offset, len(want.Entries))
		}
		for i, e := range got.Entries {
			if w := want.Entries[i]; e.Name != w.Name || e.Digest != w.Digest || fmt.Sprint(e.Chunks) != fmt.Sprint(w.Chunks) {
				t.Fatalf("entry %d: %s %s %v, want %s %s %v", i, e.Name, e.Digest, e.Chunks, w.Name, w.Digest, w.Chunks)
			}
		}
	}
	const tail = 4096
	for _, piece := range []int64{256 << 10, 16 << 10, 5000} {
		t.Run(fmt.Sprintf("pieces of %d", piece), func(t *testing.T) {
			defer toc.SetPieceBytes(piece)()
			head := size - tail - want.Offset // TOC bytes before the tail
			k := min((head+piece-1)/piece, 8)
			b.requests.Store(0)
			got, err := toc.Read(ctx, b, toc.Options{TailBytes: tail})
			if err != nil {
				t.Fatal(err)
			}
			same(t, got)
			if n := b.requests.Load(); n != 1+k || got.Requests != int(n) {
				t.Errorf("tail then head: %d requests (TOC says %d), want 1 + %d pieces", n, got.Requests, k)
			}

			k = min((tocLen+piece-1)/piece, 8)
			b.requests.Store(0)
			got, err = toc.Read(ctx, b, toc.Options{TailBytes: tail, TOCOffset: want.Offset})
			if err != nil {
				t.Fatal(err)
			}
			same(t, got)
			if n := b.requests.Load(); n != k || got.Requests != int(n) || got.BytesRead != tocLen {
				t.Errorf("known offset: %d requests (TOC says %d) for %d bytes, want %d pieces for %d", n, got.Requests, got.BytesRead, k, tocLen)
			}
			if got.Tail != nil {
				t.Errorf("known offset: %d bytes of tail, want none", len(got.Tail))
			}
		})
	}
	for _, h := range []int64{want.Offset + 1, want.Offset - 100, 1, size - estargz.FooterSize - 1} {
		t.Run(fmt.Sprintf("wrong offset %d", h), func(t *testing.T) {
			got, err := toc.Read(ctx, b, toc.Options{TailBytes: tail, TOCOffset: h})
			if err != nil {
				t.Fatal(err)
			}
			same(t, got)
		})
	}
	t.Run("offset over the limit", func(t *testing.T) {
		b.requests.Store(0)
		_, err := toc.Read(ctx, b, toc.Options{TailBytes: tail, TOCOffset: want.Offset, MaxTOCBytes: 1000})
		if err == nil || !strings.Contains(err.Error(), "--max-toc-bytes") {
			t.Errorf("Read = %v, want an error naming --max-toc-bytes", err)
		}
		if n := b.requests.Load(); n != 1 {
			t.Errorf("%d requests, want only the tail read", n)
		}
	})
	t.Run("a piece fails", func(t *testing.T) {
		defer toc.SetPieceBytes(16 << 10)()
		for _, opts := range []toc.Options{{TailBytes: tail}, {TailBytes: tail, TOCOffset: want.Offset}} {
			fb := &failingBlob{blob: b, after: want.Offset, before: size - tail}
			if _, err := toc.Read(ctx, fb, opts); err == nil || !strings.Contains(err.Error(), "connection reset by test") {
				t.Errorf("Read(%+v) = %v, want the piece's error", opts, err)
			}
		}
	})
}

// A wrong TOC offset far from the end is not followed: it would read most
// of the blob before the footer could say it is wrong.
func TestReadIgnoresFarOffset(t *testing.T) {
	b := load(t, fixtures.GoTree.Layers[0])
	if b.Size() < 9<<20 {
		t.Skipf("blob of %d bytes is too small", b.Size())
	}
	got, err := toc.Read(context.Background(), b, toc.Options{TOCOffset: 1})
	if err != nil {
		t.Fatal(err)
	}
	if got.BytesRead > 2<<20 {
		t.Errorf("read %d bytes for a TOC offset of 1, want no more than the tail and the TOC", got.BytesRead)
	}
}

// TestReadStart: what Read reads with a TOC offset from a listing begins
// at the TOC when it is larger than the tail read, else at the tail.
func TestReadStart(t *testing.T) {
	const size = 100 << 20
	var o toc.Options
	for _, tc := range []struct {
		tocOffset, want int64
	}{
		{size - 100<<10, size - toc.DefaultTailBytes}, // a small TOC comes with the tail
		{size - 2<<20, size - 2<<20},                  // a big one is read from its start
		{size - 64<<20, size - 64<<20},                // past the hinted limit: the tail, then the rest
	} {
		if got := o.ReadStart(size, tc.tocOffset); got != tc.want {
			t.Errorf("ReadStart(%d, %d) = %d, want %d", size, tc.tocOffset, got, tc.want)
		}
	}
}
