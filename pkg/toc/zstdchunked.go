package toc

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/klauspost/compress/zstd"
	digest "github.com/opencontainers/go-digest"
)

// FormatZstdChunked is the Format of a TOC read from a zstd:chunked layer,
// in either of its two layouts (see Layout).
const FormatZstdChunked = "zstd:chunked"

// Codec is how the compressed span holding a chunk is decoded.
type Codec uint8

const (
	// CodecGzip is a gzip member (eStargz, stargz).
	CodecGzip Codec = iota
	// CodecZstd is one or more zstd frames (zstd:chunked).
	CodecZstd
)

// String names the codec in messages.
func (c Codec) String() string {
	if c == CodecZstd {
		return "zstd frame"
	}
	return "gzip member"
}

// Layouts of a zstd:chunked layer, told apart by their footer's magic and
// size, or by which annotations the manifest carries.
const (
	// LayoutContainers is containers/storage's (podman, buildah, skopeo):
	// the TOC is zstd-compressed JSON {version, entries, tarSplitDigest},
	// followed by the tar-split frame and a 64-byte footer.
	LayoutContainers = "containers"
	// LayoutEStargz is estargz's zstdchunked package (nerdctl, ctr-remote):
	// the TOC is eStargz TOC JSON, zstd-compressed, with a 40-byte footer.
	LayoutEStargz = "estargz"
)

// Layer annotations of zstd:chunked layers.
const (
	// ContainersChecksumAnnotation is the digest of the compressed TOC
	// bytes, as containers/storage writes it.
	ContainersChecksumAnnotation = "io.github.containers.zstd-chunked.manifest-checksum"
	// ContainersPositionAnnotation is "offset:length:uncompressedLength:type"
	// of the compressed TOC, as containers/storage writes it.
	ContainersPositionAnnotation = "io.github.containers.zstd-chunked.manifest-position"
	// EStargzChecksumAnnotation and EStargzPositionAnnotation are the same,
	// as estargz's zstdchunked package writes them.
	EStargzChecksumAnnotation = "io.containers.zstd-chunked.manifest-checksum"
	EStargzPositionAnnotation = "io.containers.zstd-chunked.manifest-position"
)

// emptyDigest is the digest of no bytes.
const emptyDigest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// skippableHeader is the size of a zstd skippable frame's magic and length.
const skippableHeader = 8

var (
	skippableMagic  = []byte{0x50, 0x2a, 0x4d, 0x18}
	containersMagic = []byte("GNUlInUx") // containers/storage's footer
	estargzZstMagic = []byte("GnUlInUx") // estargz's zstdchunked footer
)

// Footer sizes (data of the last skippable frame) of the two layouts.
const (
	containersFooterSize = 64
	estargzZstFooterSize = 40
)

// maxFooterFrame is the largest footer frame of any format: what Probe
// reads.
const maxFooterFrame = skippableHeader + containersFooterSize

// Position is where a layer's compressed zstd:chunked TOC is, as its
// manifest annotations tell.
type Position struct {
	Layout         string // LayoutContainers or LayoutEStargz
	Offset, Length int64  // of the compressed TOC bytes in the blob
	// Checksum, when set, is the digest the compressed TOC bytes must
	// have (the manifest-checksum annotation).
	Checksum string
}

// PositionFrom reads the zstd:chunked annotations of a layer descriptor. It
// returns nil when there are none; an unusable position annotation only
// loses the shortcut (the footer still tells), but the checksum is kept.
func PositionFrom(annotations map[string]string) *Position {
	for _, k := range []struct{ layout, pos, sum string }{
		{LayoutContainers, ContainersPositionAnnotation, ContainersChecksumAnnotation},
		{LayoutEStargz, EStargzPositionAnnotation, EStargzChecksumAnnotation},
	} {
		sum, pos := annotations[k.sum], annotations[k.pos]
		if sum == "" && pos == "" {
			continue
		}
		p := &Position{Layout: k.layout, Checksum: sum}
		f := strings.Split(pos, ":")
		if len(f) == 4 && f[3] == "1" {
			off, err1 := strconv.ParseInt(f[0], 10, 64)
			n, err2 := strconv.ParseInt(f[1], 10, 64)
			if err1 == nil && err2 == nil && off >= skippableHeader && n > 0 {
				p.Offset, p.Length = off, n
			}
		}
		return p
	}
	return nil
}

// parseZstdFooter reads the footer of a zstd:chunked blob of size bytes
// from tail, its last bytes, or returns ErrNotStargz.
func parseZstdFooter(tail []byte, size int64) (footer, error) {
	for _, k := range []struct {
		layout string
		n      int
		magic  []byte
	}{{LayoutContainers, containersFooterSize, containersMagic}, {LayoutEStargz, estargzZstFooterSize, estargzZstMagic}} {
		fl := skippableHeader + k.n
		if len(tail) < fl || !bytes.HasSuffix(tail, k.magic) {
			continue
		}
		fr := tail[len(tail)-fl:]
		if !bytes.Equal(fr[:4], skippableMagic) || binary.LittleEndian.Uint32(fr[4:8]) != uint32(k.n) {
			return footer{}, fmt.Errorf("zstd:chunked footer is not in a skippable frame of %d bytes", k.n)
		}
		d := fr[skippableHeader:]
		off, n := binary.LittleEndian.Uint64(d[0:8]), binary.LittleEndian.Uint64(d[8:16])
		typ := binary.LittleEndian.Uint64(d[24:32])
		limit := uint64(size) - uint64(fl)
		if typ != 1 {
			return footer{}, fmt.Errorf("zstd:chunked footer gives TOC type %d, not 1", typ)
		}
		if off < skippableHeader || n == 0 || off > limit || n > limit-off {
			return footer{}, fmt.Errorf("zstd:chunked footer gives TOC at %d of %d bytes, outside the blob of %d bytes", off, n, size)
		}
		return footer{format: FormatZstdChunked, layout: k.layout, tocOffset: int64(off), tocEnd: int64(off + n), dataEnd: int64(off) - skippableHeader}, nil
	}
	return footer{}, ErrNotStargz
}

// positionFooter is the footer an annotated position stands for.
func positionFooter(p *Position, size int64) (footer, error) {
	if p.Offset < skippableHeader || p.Length <= 0 || p.Offset > size || p.Length > size-p.Offset {
		return footer{}, fmt.Errorf("manifest-position annotation gives TOC at %d of %d bytes, outside the blob of %d bytes", p.Offset, p.Length, size)
	}
	return footer{format: FormatZstdChunked, layout: p.Layout, tocOffset: p.Offset, tocEnd: p.Offset + p.Length, dataEnd: p.Offset - skippableHeader}, nil
}

// readZstdTOC decodes the compressed zstd:chunked TOC in r into t, after
// checking it against checksum when that is set.
func (t *TOC) readZstdTOC(r io.Reader, f footer, checksum string, maxJSON, maxEntries int64) error {
	compressed, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("reading TOC: %w", err)
	}
	if int64(len(compressed)) != f.tocEnd-f.tocOffset {
		return fmt.Errorf("reading TOC: got %d of %d bytes", len(compressed), f.tocEnd-f.tocOffset)
	}
	t.CompressedDigest = digest.FromBytes(compressed)
	if checksum != "" && t.CompressedDigest.String() != checksum {
		return fmt.Errorf("%w: compressed TOC digest %s does not match the manifest-checksum annotation %s: the layer is corrupt or was tampered with", ErrChecksum, t.CompressedDigest, checksum)
	}
	zr, err := zstd.NewReader(bytes.NewReader(compressed), zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(uint64(maxJSON)+1))
	if err != nil {
		return fmt.Errorf("reading TOC: %w", err)
	}
	defer zr.Close()
	lim := &io.LimitedReader{R: zr, N: maxJSON + 1}
	d := digest.Canonical.Digester()
	jr := io.TeeReader(lim, d.Hash())
	overLimit := func() error {
		return fmt.Errorf("TOC JSON is over the limit of %d bytes decompressed (raise it with --max-toc-json-bytes)", maxJSON)
	}
	wrap := func(err error) error {
		if lim.N <= 0 || errors.Is(err, zstd.ErrDecoderSizeExceeded) || errors.Is(err, zstd.ErrWindowSizeExceeded) {
			return overLimit()
		}
		return fmt.Errorf("parsing TOC JSON: %w", err)
	}
	t.Format, t.Layout, t.Offset = f.format, f.layout, f.dataEnd
	switch f.layout {
	case LayoutEStargz:
		j, err := decodeTOC(jr)
		if err != nil {
			return wrap(err)
		}
		if _, err := io.Copy(io.Discard, jr); err != nil {
			return wrap(err)
		}
		if lim.N <= 0 {
			return overLimit()
		}
		if n := int64(len(j.Entries)); n > maxEntries {
			return fmt.Errorf("TOC has %d entries, over the limit of %d (raise it with --max-toc-entries)", n, maxEntries)
		}
		t.Digest = d.Digest()
		if err := t.build(j); err != nil {
			return err
		}
		for _, e := range t.Entries {
			for i := range e.Chunks {
				e.Chunks[i].Codec = CodecZstd
			}
		}
		return nil
	default:
		ents, err := decodeContainersTOC(jr, maxEntries)
		if err != nil {
			return wrap(err)
		}
		if _, err := io.Copy(io.Discard, jr); err != nil {
			return wrap(err)
		}
		if lim.N <= 0 {
			return overLimit()
		}
		t.Digest = d.Digest()
		return t.buildContainers(ents)
	}
}

// ErrChecksum means a TOC does not match the checksum its manifest gives.
var ErrChecksum = errors.New("TOC checksum mismatch")

// containersEntry is one entry of a containers/storage TOC, as
// go.podman.io/storage/pkg/chunked/internal/minimal.FileMetadata writes it.
type containersEntry struct {
	Type        string            `json:"type"`
	Name        string            `json:"name"`
	Linkname    string            `json:"linkName"`
	Mode        int64             `json:"mode"`
	Size        int64             `json:"size"`
	UID         int               `json:"uid"`
	GID         int               `json:"gid"`
	ModTime     *time.Time        `json:"modtime"`
	Devmajor    int64             `json:"devMajor"`
	Devminor    int64             `json:"devMinor"`
	Xattrs      map[string]string `json:"xattrs"`
	Digest      string            `json:"digest"`
	Offset      int64             `json:"offset"`
	EndOffset   int64             `json:"endOffset"`
	ChunkSize   int64             `json:"chunkSize"`
	ChunkOffset int64             `json:"chunkOffset"`
	ChunkDigest string            `json:"chunkDigest"`
	ChunkType   string            `json:"chunkType"`
}

// decodeContainersTOC decodes {version, entries, ...} entry by entry, so
// that a TOC with too many entries stops at the limit.
func decodeContainersTOC(r io.Reader, maxEntries int64) ([]containersEntry, error) {
	dec := json.NewDecoder(r)
	if err := expectDelim(dec, '{'); err != nil {
		return nil, err
	}
	var (
		ents    []containersEntry
		version int
	)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		switch key, _ := tok.(string); key {
		case "version":
			if err := dec.Decode(&version); err != nil {
				return nil, err
			}
		case "entries":
			if err := expectDelim(dec, '['); err != nil {
				return nil, err
			}
			for dec.More() {
				if int64(len(ents)) >= maxEntries {
					return nil, fmt.Errorf("TOC has more than %d entries, over the limit (raise it with --max-toc-entries)", maxEntries)
				}
				var e containersEntry
				if err := dec.Decode(&e); err != nil {
					return nil, fmt.Errorf("entry %d: %w", len(ents), err)
				}
				ents = append(ents, e)
			}
			if err := expectDelim(dec, ']'); err != nil {
				return nil, err
			}
		default:
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return nil, err
			}
		}
	}
	if err := expectDelim(dec, '}'); err != nil {
		return nil, err
	}
	if version != 1 {
		return nil, fmt.Errorf("TOC version %d, only version 1 is known", version)
	}
	return ents, nil
}

func expectDelim(dec *json.Decoder, want json.Delim) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != want {
		return fmt.Errorf("want %q, got %v", want, tok)
	}
	return nil
}

// buildContainers turns containers/storage entries into t's entries. A
// regular file is one zstd frame [offset, endOffset) or, when its entry
// has chunk fields, a chunk per frame: each ends where the next chunk of
// the file starts, the last at the file's endOffset.
func (t *TOC) buildContainers(ents []containersEntry) error {
	t.byName = make(map[string]*Entry, len(ents))
	var (
		last  *Entry
		lastC *containersEntry // the regular file's own entry
	)
	type span struct {
		Chunk
		name string
	}
	var spans []span
	// closeFile sets the end of the last chunk of the file before.
	closeFile := func() error {
		if last == nil || len(last.Chunks) == 0 {
			return nil
		}
		c := &last.Chunks[len(last.Chunks)-1]
		c.End = lastC.EndOffset
		if c.End <= c.Offset {
			return fmt.Errorf("TOC entry %q: chunk at %d ends at %d", last.Name, c.Offset, c.End)
		}
		return nil
	}
	for i := range ents {
		ce := &ents[i]
		if ce.Type == "chunk" {
			if last == nil || last.Type != "reg" || len(last.Chunks) == 0 || CleanName(ce.Name) != last.Name {
				return fmt.Errorf("TOC has a chunk entry %q not following its regular file", ce.Name)
			}
			prev := &last.Chunks[len(last.Chunks)-1]
			prev.End = ce.Offset
			if err := last.addContainersChunk(ce); err != nil {
				return err
			}
			continue
		}
		if err := closeFile(); err != nil {
			return err
		}
		te := &estargz.TOCEntry{
			Name: ce.Name, Type: ce.Type, Size: ce.Size, LinkName: ce.Linkname, Mode: ce.Mode,
			UID: ce.UID, GID: ce.GID, DevMajor: int(ce.Devmajor), DevMinor: int(ce.Devminor),
			Digest: ce.Digest, Offset: ce.Offset,
		}
		if ce.ModTime != nil && !ce.ModTime.IsZero() {
			te.ModTime3339 = ce.ModTime.UTC().Format(time.RFC3339)
		}
		if len(ce.Xattrs) > 0 {
			te.Xattrs = make(map[string][]byte, len(ce.Xattrs))
			for k, v := range ce.Xattrs {
				b, err := base64.StdEncoding.DecodeString(v)
				if err != nil {
					return fmt.Errorf("TOC entry %q: xattr %q is not base64: %w", ce.Name, k, err)
				}
				te.Xattrs[k] = b
			}
		}
		switch ce.Type {
		case "reg", "dir", "symlink", "hardlink", "char", "block", "fifo":
		default:
			return fmt.Errorf("TOC entry %q has unknown type %q", ce.Name, ce.Type)
		}
		if te.Type == "reg" && te.Size == 0 && te.Digest == "" {
			// containers/storage leaves it out; eStargz records it.
			te.Digest = emptyDigest
		}
		ent := &Entry{TOCEntry: te, Name: CleanName(ce.Name), RawName: ce.Name}
		last, lastC = ent, ce
		if ent.Type == "reg" && ent.Size > 0 {
			if ce.ChunkSize == 0 {
				// One frame holds the whole file.
				ce := *ce
				ce.ChunkSize, ce.ChunkOffset, ce.ChunkType = ent.Size, 0, ""
				ce.ChunkDigest = ce.Digest
				if err := ent.addContainersChunk(&ce); err != nil {
					return err
				}
			} else if err := ent.addContainersChunk(ce); err != nil {
				return err
			}
		}
		if ent.Name == "" {
			continue // the root directory itself
		}
		if old, ok := t.byName[ent.Name]; ok {
			// A later entry of the same name replaces the earlier one, as
			// in the tar stream.
			for i, x := range t.Entries {
				if x == old {
					t.Entries = append(t.Entries[:i], t.Entries[i+1:]...)
					break
				}
			}
		}
		t.Entries = append(t.Entries, ent)
		t.byName[ent.Name] = ent
	}
	if err := closeFile(); err != nil {
		return err
	}
	for _, e := range t.Entries {
		if e.Type != "reg" {
			continue
		}
		var covered int64
		for _, c := range e.Chunks {
			if c.FileOffset != covered {
				return fmt.Errorf("TOC entry %q: chunks do not cover the file contiguously (gap at %d)", e.Name, covered)
			}
			if c.End <= c.Offset || c.End > t.Offset {
				return fmt.Errorf("TOC entry %q: chunk frame %d-%d outside the layer's data (0-%d)", e.Name, c.Offset, c.End, t.Offset)
			}
			covered += c.Size
			spans = append(spans, span{c, e.Name})
		}
		if covered != e.Size {
			return fmt.Errorf("TOC entry %q: chunks cover %d of %d bytes", e.Name, covered, e.Size)
		}
	}
	// Frames of different chunks must not overlap: each frame holds one
	// chunk.
	sort.Slice(spans, func(i, j int) bool { return spans[i].Offset < spans[j].Offset })
	for i := 1; i < len(spans); i++ {
		a, b := spans[i-1], spans[i]
		if b.Offset < a.End && (b.Offset != a.Offset || b.End != a.End) {
			return fmt.Errorf("TOC entries %q and %q have overlapping chunk frames %d-%d and %d-%d", a.name, b.name, a.Offset, a.End, b.Offset, b.End)
		}
	}
	return nil
}

func (e *Entry) addContainersChunk(c *containersEntry) error {
	if c.ChunkSize <= 0 || c.ChunkOffset < 0 || c.Offset <= 0 {
		return fmt.Errorf("TOC entry %q: invalid chunk at %d of %d bytes (frame at %d)", e.Name, c.ChunkOffset, c.ChunkSize, c.Offset)
	}
	switch c.ChunkType {
	case "", "zeros":
	default:
		return fmt.Errorf("TOC entry %q: unknown chunk type %q", e.Name, c.ChunkType)
	}
	e.Chunks = append(e.Chunks, Chunk{
		Offset:     c.Offset,
		FileOffset: c.ChunkOffset,
		Size:       c.ChunkSize,
		Digest:     c.ChunkDigest,
		Codec:      CodecZstd,
		Zeros:      c.ChunkType == "zeros",
	})
	return nil
}
