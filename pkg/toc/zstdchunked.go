package toc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

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
// checking it against checksum when that is set. As parseTOC does for
// eStargz, the JSON is decompressed and digested a block ahead, on another
// core, while it is decoded.
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
	zr, err := zstd.NewReader(bytes.NewReader(compressed), zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxMemory(uint64(maxJSON)+1), zstd.WithDecoderMaxWindow(64<<20))
	if err != nil {
		return fmt.Errorf("reading TOC: %w", err)
	}
	defer zr.Close()
	lim := &io.LimitedReader{R: zr, N: maxJSON + 1}
	d := digest.Canonical.Digester()
	blocks := inflateAhead(io.TeeReader(lim, d.Hash()))
	defer blocks.stop()
	overLimit := func() error {
		return fmt.Errorf("TOC JSON is over the limit of %d bytes decompressed (raise it with --max-toc-json-bytes)", maxJSON)
	}
	var (
		j *estargz.JTOC
		x *containersExtra
	)
	if f.layout == LayoutEStargz {
		j, err = decodeTOC(blocks)
	} else {
		j, x, err = decodeContainersTOC(blocks)
	}
	if err == nil {
		_, err = io.Copy(io.Discard, blocks)
	}
	switch {
	case lim.N <= 0 || errors.Is(err, zstd.ErrDecoderSizeExceeded):
		return overLimit()
	case err != nil:
		return fmt.Errorf("parsing TOC JSON: %w", err)
	}
	if n := int64(len(j.Entries)); n > maxEntries {
		return fmt.Errorf("TOC has %d entries, over the limit of %d (raise it with --max-toc-entries)", n, maxEntries)
	}
	t.Format, t.Layout, t.Offset, t.Digest = f.format, f.layout, f.dataEnd, d.Digest()
	if x != nil {
		if j.Version != 1 {
			return fmt.Errorf("TOC version %d, only version 1 is known", j.Version)
		}
		return t.buildContainers(j, x)
	}
	if err := t.build(j); err != nil {
		return err
	}
	for _, e := range t.Entries {
		for i := range e.Chunks {
			e.Chunks[i].Codec = CodecZstd
		}
	}
	return nil
}

// ErrChecksum means a TOC does not match the checksum its manifest gives.
var ErrChecksum = errors.New("TOC checksum mismatch")

// buildContainers turns containers/storage entries into t's entries. A
// regular file is one zstd frame [offset, endOffset) or, when its entry
// has chunk fields, a chunk per frame: each ends where the next chunk of
// the file starts, the last at the file's endOffset.
func (t *TOC) buildContainers(j *estargz.JTOC, x *containersExtra) error {
	t.byName = make(map[string]*Entry, len(j.Entries))
	var (
		last    *Entry
		lastEnd int64 // the regular file's endOffset
	)
	// closeFile sets the end of the last chunk of the file before.
	closeFile := func() error {
		if last == nil || len(last.Chunks) == 0 {
			return nil
		}
		c := &last.Chunks[len(last.Chunks)-1]
		c.End = lastEnd
		if c.End <= c.Offset {
			return fmt.Errorf("TOC entry %q: chunk at %d ends at %d", last.Name, c.Offset, c.End)
		}
		return nil
	}
	for i, te := range j.Entries {
		if te == nil {
			return fmt.Errorf("TOC entry %d is null", i)
		}
		if te.Type == "chunk" {
			if last == nil || last.Type != "reg" || len(last.Chunks) == 0 || CleanName(te.Name) != last.Name {
				return fmt.Errorf("TOC has a chunk entry %q not following its regular file", te.Name)
			}
			last.Chunks[len(last.Chunks)-1].End = te.Offset
			if err := last.addContainersChunk(te.Offset, te.ChunkOffset, te.ChunkSize, te.ChunkDigest, x.chunkType[i]); err != nil {
				return err
			}
			continue
		}
		if err := closeFile(); err != nil {
			return err
		}
		switch te.Type {
		case "reg", "dir", "symlink", "hardlink", "char", "block", "fifo":
		default:
			return fmt.Errorf("TOC entry %q has unknown type %q", te.Name, te.Type)
		}
		if te.Type == "reg" && te.Size == 0 && te.Digest == "" {
			// containers/storage leaves it out; eStargz records it.
			te.Digest = emptyDigest
		}
		ent := &Entry{TOCEntry: te, Name: CleanName(te.Name), RawName: te.Name}
		last, lastEnd = ent, x.endOffset[i]
		if ent.Type == "reg" && ent.Size > 0 {
			var err error
			if te.ChunkSize == 0 {
				// One frame holds the whole file.
				err = ent.addContainersChunk(te.Offset, 0, te.Size, te.Digest, "")
			} else {
				err = ent.addContainersChunk(te.Offset, te.ChunkOffset, te.ChunkSize, te.ChunkDigest, x.chunkType[i])
			}
			if err != nil {
				return err
			}
		}
		if ent.Name == "" {
			continue // the root directory itself
		}
		t.put(ent)
	}
	if err := closeFile(); err != nil {
		return err
	}
	type span struct {
		Chunk
		name string
	}
	var spans []span
	for _, e := range t.Entries {
		if e.Type != "reg" {
			continue
		}
		if err := e.checkCovered(); err != nil {
			return err
		}
		for _, c := range e.Chunks {
			if c.End <= c.Offset || c.End > t.Offset {
				return fmt.Errorf("TOC entry %q: chunk frame %d-%d outside the layer's data (0-%d)", e.Name, c.Offset, c.End, t.Offset)
			}
			spans = append(spans, span{c, e.Name})
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

func (e *Entry) addContainersChunk(frame, fileOffset, size int64, dgst, chunkType string) error {
	if size <= 0 || fileOffset < 0 || frame <= 0 {
		return fmt.Errorf("TOC entry %q: invalid chunk at %d of %d bytes (frame at %d)", e.Name, fileOffset, size, frame)
	}
	switch chunkType {
	case "", "zeros":
	default:
		return fmt.Errorf("TOC entry %q: unknown chunk type %q", e.Name, chunkType)
	}
	e.Chunks = append(e.Chunks, Chunk{
		Offset:     frame,
		FileOffset: fileOffset,
		Size:       size,
		Digest:     dgst,
		Codec:      CodecZstd,
		Zeros:      chunkType == "zeros",
	})
	return nil
}

// containersExtra holds, by entry index, the fields of containers/storage
// TOC entries that eStargz's TOCEntry has no place for.
type containersExtra struct {
	endOffset []int64
	chunkType []string
	cur       int // the entry being decoded
}

// at makes room for entry i and makes it the current one.
func (x *containersExtra) at(i int) {
	for len(x.endOffset) <= i {
		x.endOffset = append(x.endOffset, 0)
		x.chunkType = append(x.chunkType, "")
	}
	x.cur = i
}

// decodeContainersTOC decodes a containers/storage TOC with the fast
// eStargz TOC decoder: its entries are CRFS entries as eStargz's are
// (same keys: name, type, size, modtime, linkName, mode, uid, gid,
// devMajor, devMinor, base64 xattrs, digest, offset, chunkSize,
// chunkOffset, chunkDigest) plus endOffset and chunkType.
func decodeContainersTOC(r io.Reader) (*estargz.JTOC, *containersExtra, error) {
	x := &containersExtra{}
	d := &tocDecoder{r: r, buf: make([]byte, 0, 32<<10), extra: x}
	var j estargz.JTOC
	if err := d.top(&j); err != nil {
		return nil, nil, err
	}
	x.at(len(j.Entries))
	return &j, x, nil
}
