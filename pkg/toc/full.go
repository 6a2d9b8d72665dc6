package toc

import (
	"archive/tar"
	"bufio"
	"fmt"
	"io"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Compression of a layer that is not eStargz, for Decompress.
const (
	CompressionGzip = "gzip"
	CompressionZstd = "zstd"
	CompressionNone = "tar"
)

// Decompress returns the tar stream of a whole layer blob (gzip through
// klauspost/compress, a third faster than the standard library's).
func Decompress(r io.Reader, compression string) (io.ReadCloser, error) {
	switch compression {
	case CompressionGzip:
		zr, err := gzip.NewReader(bufio.NewReaderSize(r, 256<<10))
		if err != nil {
			return nil, fmt.Errorf("reading gzip layer: %w", err)
		}
		return zr, nil
	case CompressionZstd:
		zr, err := zstd.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("reading zstd layer: %w", err)
		}
		return zr.IOReadCloser(), nil
	case CompressionNone:
		return io.NopCloser(r), nil
	}
	return nil, fmt.Errorf("unsupported layer compression %q", compression)
}

// TarDataBlocks is how many bytes of a tar follow header h before the
// next header: its contents padded to 512-byte blocks (none for the types
// that have no contents, whatever their size field says, as archive/tar
// reads them).
func TarDataBlocks(h *tar.Header) int64 {
	switch h.Typeflag {
	case tar.TypeLink, tar.TypeSymlink, tar.TypeChar, tar.TypeBlock, tar.TypeDir, tar.TypeFifo:
		return 0
	}
	return (h.Size + 511) &^ 511
}

// HeaderEntry turns a tar header into a TOC entry (without a digest), or
// nil for headers that carry no file (PAX globals and the like).
func HeaderEntry(h *tar.Header) *estargz.TOCEntry {
	te := &estargz.TOCEntry{
		Name: h.Name, Mode: h.Mode, UID: h.Uid, GID: h.Gid, Uname: h.Uname, Gname: h.Gname,
		LinkName: h.Linkname, DevMajor: int(h.Devmajor), DevMinor: int(h.Devminor),
	}
	if !h.ModTime.IsZero() {
		te.ModTime3339 = h.ModTime.UTC().Format(time.RFC3339)
	}
	switch h.Typeflag {
	case tar.TypeReg:
		te.Type, te.Size = "reg", h.Size
	case tar.TypeDir:
		te.Type = "dir"
	case tar.TypeSymlink:
		te.Type = "symlink"
	case tar.TypeLink:
		te.Type = "hardlink"
	case tar.TypeChar:
		te.Type = "char"
	case tar.TypeBlock:
		te.Type = "block"
	case tar.TypeFifo:
		te.Type = "fifo"
	default:
		return nil
	}
	return te
}

// Builder makes the TOC of a whole layer entry by entry, as its tar is
// read (Full is set).
type Builder struct {
	t   *TOC
	max int64
}

// NewBuilder starts a TOC of a layer of the given format (wire.FormatGzip,
// ...) with at most maxEntries entries (0: DefaultMaxEntries).
func NewBuilder(format string, maxEntries int64) *Builder {
	return &Builder{t: &TOC{Format: format, Full: true, byName: map[string]*Entry{}}, max: cmpOr(maxEntries, DefaultMaxEntries)}
}

// Add adds an entry; a later entry of the same name replaces an earlier
// one, as when the tar is unpacked. It returns the entry, or nil for a
// name that cleans to nothing (the root).
func (b *Builder) Add(te *estargz.TOCEntry) (*Entry, error) {
	t := b.t
	if int64(len(t.Entries)) >= b.max {
		return nil, fmt.Errorf("layer has more than %d entries (raise the limit with --max-toc-entries)", b.max)
	}
	e := &Entry{TOCEntry: te, Name: CleanName(te.Name), RawName: te.Name}
	if e.Name == "" {
		return nil, nil
	}
	t.put(e)
	return e, nil
}

// TOC returns the TOC built so far (the same one as entries are added).
func (b *Builder) TOC() *TOC { return b.t }
