package toc

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/klauspost/compress/zstd"
)

// Compression of a layer that is not eStargz, for FromTar.
const (
	CompressionGzip = "gzip"
	CompressionZstd = "zstd"
	CompressionNone = "tar"
)

// Decompress returns the tar stream of a whole layer blob.
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

// FromTar lists a whole (non-eStargz) layer by reading its tar stream,
// computing each regular file's digest on the way, and returns a TOC whose
// entries have no chunks: their contents can only be had by streaming the
// layer again (Full is set). maxEntries bounds the entries (0: default).
func FromTar(r io.Reader, format string, maxEntries int64) (*TOC, error) {
	maxEntries = cmpOr(maxEntries, DefaultMaxEntries)
	t := &TOC{Format: format, Full: true, byName: map[string]*Entry{}}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return t, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading layer tar: %w", err)
		}
		if int64(len(t.Entries)) >= maxEntries {
			return nil, fmt.Errorf("layer has more than %d entries (raise the limit with --max-toc-entries)", maxEntries)
		}
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
			d := sha256.New()
			if _, err := io.Copy(d, tr); err != nil {
				return nil, fmt.Errorf("reading layer tar: %s: %w", h.Name, err)
			}
			te.Digest = "sha256:" + hex.EncodeToString(d.Sum(nil))
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
			continue // PAX globals and the like carry no file
		}
		e := &Entry{TOCEntry: te, Name: CleanName(h.Name), RawName: h.Name}
		if e.Name == "" {
			continue
		}
		if old, ok := t.byName[e.Name]; ok {
			// A later entry of the same name replaces the earlier one.
			for i, x := range t.Entries {
				if x == old {
					t.Entries = append(t.Entries[:i], t.Entries[i+1:]...)
					break
				}
			}
		}
		t.Entries = append(t.Entries, e)
		t.byName[e.Name] = e
	}
}
