package toc

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
	digest "github.com/opencontainers/go-digest"

	"github.com/stargz-get/stargz-get/internal/fill"
)

// Defaults for Options.
const (
	// DefaultTailBytes is how much of a blob's end is read first. It holds
	// footer and TOC of layers up to a few thousand files, and costs about
	// one round trip at 25 MB/s and 20 ms RTT.
	DefaultTailBytes = 512 << 10
	// DefaultMaxTOCBytes caps the compressed TOC, as containers/storage
	// does (50 MiB).
	DefaultMaxTOCBytes = 50 << 20
	// DefaultMaxTOCJSONBytes caps the decompressed TOC JSON; a TOC of a
	// million entries is about 300 MiB.
	DefaultMaxTOCJSONBytes = 512 << 20
	// DefaultMaxEntries caps the number of TOC entries (files and chunks).
	DefaultMaxEntries = 1 << 20
)

// maxHintedRead caps what Options.TOCOffset makes Read read at once, before
// the footer can say whether the offset is right. TOCs of layers with up
// to about 100,000 files are smaller.
const maxHintedRead = 8 << 20

// ErrNotStargz means a blob has no eStargz or stargz footer.
var ErrNotStargz = errors.New("no eStargz footer")

// RangeReader reads byte ranges of a blob of known size.
type RangeReader interface {
	ReadRange(ctx context.Context, off, n int64) (io.ReadCloser, error)
	Size() int64
}

// Options bound what Read reads.
type Options struct {
	TailBytes       int64 // bytes read from the end first; 0 means DefaultTailBytes
	MaxTOCBytes     int64 // 0 means DefaultMaxTOCBytes
	MaxTOCJSONBytes int64 // 0 means DefaultMaxTOCJSONBytes
	MaxEntries      int64 // 0 means DefaultMaxEntries
	// TOCOffset, when known (from an earlier listing), is where the TOC
	// starts: the whole TOC and footer (up to 8 MiB) are then read at once,
	// in parallel pieces. The footer must agree, else the TOC is read as
	// without it.
	TOCOffset int64
	// Zstd, when the layer's manifest annotations locate a zstd:chunked
	// TOC, lets Read read just the TOC in one request, and gives the
	// checksum the compressed TOC must match.
	Zstd *Position
}

// TOC is a layer's parsed table of contents.
type TOC struct {
	// Format is wire.FormatEStargz, wire.FormatStargz or
	// wire.FormatZstdChunked, or for a Full listing the layer's format
	// (gzip, zstd, tar).
	Format string
	// Layout tells the two zstd:chunked layouts apart (LayoutContainers,
	// LayoutEStargz); empty for other formats.
	Layout string
	// Offset is where the TOC's gzip member (or zstd skippable frame)
	// starts; every chunk ends at or before it.
	Offset int64
	// Digest is the digest of the TOC JSON, to compare with the manifest's
	// TOC digest annotation.
	Digest digest.Digest
	// CompressedDigest is the digest of the compressed TOC bytes of a
	// zstd:chunked layer, which its manifest-checksum annotation gives.
	CompressedDigest digest.Digest
	// Entries are the TOC's entries except chunks (which are folded into
	// their file), in TOC order.
	Entries []*Entry
	// Requests and BytesRead count what reading the TOC cost.
	Requests  int
	BytesRead int64
	// Full is set for a listing made by reading a whole non-eStargz layer
	// (see Builder): its entries have no chunks, but their offsets in the
	// layer's tar.
	Full bool
	// Tail holds the blob's bytes from TailStart to the TOC, read along
	// with the TOC, so that chunks in it need not be downloaded again.
	Tail      []byte
	TailStart int64

	byName map[string]*Entry
	links  map[string]struct{} // names of the symlinks in byName
}

// index records e under its name, in place of an earlier entry of the
// same name.
func (t *TOC) index(e *Entry) {
	if old, ok := t.byName[e.Name]; ok && old.Type == "symlink" {
		delete(t.links, e.Name)
	}
	t.byName[e.Name] = e
	if e.Type == "symlink" {
		if t.links == nil {
			t.links = map[string]struct{}{}
		}
		t.links[e.Name] = struct{}{}
	}
}

// Entry is one file, directory or link, with its chunks.
type Entry struct {
	*estargz.TOCEntry
	// Name is the cleaned name: no leading "./" or "/", no trailing "/".
	Name string
	// RawName is the name as written in the TOC.
	RawName string
	// Chunks are a regular file's chunks in file order.
	Chunks []Chunk
	// TarOffset and DataOffset are, in a Full listing, where the entry's
	// tar header (its first header block, extended headers included) and
	// its contents start in the layer's uncompressed tar stream.
	TarOffset, DataOffset int64
}

// Chunk is one stretch of a regular file's contents.
type Chunk struct {
	// Offset is where the gzip member holding the chunk starts, End where
	// it ends (the next member's start, or the TOC).
	Offset, End int64
	// InnerOffset is where the chunk starts in the member's decompressed
	// stream (non-zero when several files share one member).
	InnerOffset int64
	// FileOffset and Size place the chunk in the file.
	FileOffset, Size int64
	// Digest is the chunk's digest from the TOC (empty in legacy stargz).
	Digest string
	// Codec is how the span [Offset, End) is decoded.
	Codec Codec
	// Zeros marks a chunk of zero bytes (a hole of a sparse file): its
	// span need not be downloaded.
	Zeros bool
}

// Lookup returns the entry named name (cleaned as the TOC's names are).
func (t *TOC) Lookup(name string) (*Entry, bool) {
	if e, ok := t.byName[name]; ok { // clean already, as sg-ls prints them
		return e, ok
	}
	e, ok := t.byName[CleanName(name)]
	return e, ok
}

// CleanName cleans a TOC or user-given name the way estargz does: rooted
// and cleaned, then made relative, so "./a/../b/" is "b" and "/" is "".
// A name that is clean already is returned as it is, without a copy: a
// whole layer's names mostly are, and each copy stayed in memory beside
// the original (6.5 MB of a 66,813-entry layer).
func CleanName(name string) string {
	if isClean(name) {
		return name
	}
	return strings.TrimPrefix(path.Clean("/"+name), "/")
}

// isClean reports whether name is what CleanName would make of it: not
// empty, no leading or trailing "/", no empty, "." or ".." part.
func isClean(name string) bool {
	start := 0
	for i := 0; i <= len(name); i++ {
		if i < len(name) && name[i] != '/' {
			continue
		}
		switch part := name[start:i]; part {
		case "", ".", "..":
			return false
		}
		start = i + 1
	}
	return true
}

// Landmark reports whether name is one of the marker files eStargz builders
// add to record prefetch boundaries.
func Landmark(name string) bool {
	return name == estargz.PrefetchLandmark || name == estargz.NoPrefetchLandmark
}

// ModTime returns the entry's modification time (zero when unrecorded).
func (e *Entry) ModTime() time.Time {
	t, _ := time.Parse(time.RFC3339, e.ModTime3339)
	return t
}

// ChunkStarts returns where the members holding e's chunks after the
// first start in the layer blob, ascending (nil for a file of one chunk).
func (e *Entry) ChunkStarts() []int64 {
	var starts []int64
	first, _ := e.CompressedSpan()
	for _, c := range e.Chunks {
		if !c.Zeros && c.Offset > first {
			starts = append(starts, c.Offset)
		}
	}
	slices.Sort(starts)
	return slices.Compact(starts)
}

// CompressedSpan returns where the members holding e's chunks start and
// end in the layer blob; 0, 0 when e has none (holes of a sparse file
// take no bytes).
func (e *Entry) CompressedSpan() (offset, end int64) {
	first := true
	for _, c := range e.Chunks {
		if c.Zeros {
			continue
		}
		if first || c.Offset < offset {
			offset = c.Offset
		}
		if first || c.End > end {
			end = c.End
		}
		first = false
	}
	return offset, end
}

// footer is what a footer says.
type footer struct {
	format            string
	layout            string // of a zstd:chunked footer
	tocOffset, tocEnd int64  // of the TOC's compressed bytes
	dataEnd           int64  // where the data before the TOC ends
}

// Probe reads only the footer of r and reports the blob's format:
// wire.FormatEStargz, wire.FormatStargz, wire.FormatZstdChunked, or
// ErrNotStargz.
func Probe(ctx context.Context, r RangeReader) (string, error) {
	n := min(int64(max(estargz.FooterSize, maxFooterFrame)), r.Size())
	tail, err := readRange(ctx, r, r.Size()-n, n)
	if err != nil {
		return "", err
	}
	f, err := parseFooter(tail, r.Size())
	if err != nil {
		return "", err
	}
	return f.format, nil
}

func parseFooter(tail []byte, size int64) (footer, error) {
	if f, err := parseZstdFooter(tail, size); !errors.Is(err, ErrNotStargz) {
		return f, err
	}
	type kind struct {
		format string
		d      estargz.Decompressor
	}
	for _, k := range []kind{{"estargz", &estargz.GzipDecompressor{}}, {"stargz", &estargz.LegacyGzipDecompressor{}}} {
		fs := k.d.FooterSize()
		if int64(len(tail)) < fs {
			continue
		}
		_, tocOff, tocSize, err := k.d.ParseFooter(tail[len(tail)-int(fs):])
		if err != nil {
			continue
		}
		end := size - fs
		if tocSize > 0 {
			end = tocOff + tocSize
		}
		if tocOff < 0 || tocOff >= end || end > size-fs {
			return footer{}, fmt.Errorf("footer gives TOC offset %d outside the blob of %d bytes", tocOff, size)
		}
		return footer{format: k.format, tocOffset: tocOff, tocEnd: end, dataEnd: tocOff}, nil
	}
	return footer{}, ErrNotStargz
}

// hinted says whether Read reads a TOC from the offset h a listing gave:
// when the TOC is too big for the tail read anyway, and within the limit
// and maxHintedRead (a wrong offset costs at most that much reading).
func hinted(size, h, tailBytes, maxTOC int64) bool {
	return h > 0 && size-h > tailBytes && size-h <= min(maxTOC+int64(estargz.FooterSize), maxHintedRead)
}

// ReadStart returns where the bytes Read reads of an eStargz blob of size
// bytes begin, given the TOC offset an earlier listing found (Read's
// opts.TOCOffset): the TOC's own start, or the tail read's. What lies
// from there on comes with the TOC, so that a reader of the blob's data
// at the same time (see fetch.Ahead) stops before it.
func (o Options) ReadStart(size, tocOffset int64) int64 {
	tailBytes := min(cmpOr(o.TailBytes, DefaultTailBytes), size)
	if hinted(size, tocOffset, tailBytes, cmpOr(o.MaxTOCBytes, DefaultMaxTOCBytes)) {
		return tocOffset
	}
	return min(tocOffset, size-tailBytes)
}

// Read reads and parses the TOC of the blob r.
func Read(ctx context.Context, r RangeReader, opts Options) (*TOC, error) {
	tailBytes := cmpOr(opts.TailBytes, DefaultTailBytes)
	maxTOC := cmpOr(opts.MaxTOCBytes, DefaultMaxTOCBytes)
	maxJSON := cmpOr(opts.MaxTOCJSONBytes, DefaultMaxTOCJSONBytes)
	maxEntries := cmpOr(opts.MaxEntries, DefaultMaxEntries)
	size := r.Size()
	tailBytes = min(tailBytes, size)
	t := &TOC{}
	var (
		f         footer
		tocStream io.Reader
		tail      []byte
		tailStart int64
	)
	if p := opts.Zstd; p != nil && p.Length > 0 {
		// The annotations locate the TOC: one request for it and the
		// skippable frame header before it.
		var err error
		if f, err = positionFooter(p, size); err != nil {
			return nil, err
		}
		if n := f.tocEnd - f.tocOffset; n > maxTOC {
			return nil, fmt.Errorf("TOC is %d bytes compressed, over the limit of %d (raise it with --max-toc-bytes)", n, maxTOC)
		}
		b, err := readRange(ctx, r, f.dataEnd, f.tocEnd-f.dataEnd)
		if err != nil {
			return nil, err
		}
		t.Requests, t.BytesRead = 1, f.tocEnd-f.dataEnd
		if !bytes.Equal(b[:4], skippableMagic) || int64(binary.LittleEndian.Uint32(b[4:8])) != f.tocEnd-f.tocOffset {
			return nil, fmt.Errorf("manifest-position annotation gives TOC at %d, where there is no skippable frame of %d bytes", f.tocOffset, f.tocEnd-f.tocOffset)
		}
		if err := t.readZstdTOC(bytes.NewReader(b[skippableHeader:]), f, p.Checksum, maxJSON, maxEntries); err != nil {
			return nil, err
		}
		return t, nil
	}
	if h := opts.TOCOffset; hinted(size, h, tailBytes, maxTOC) {
		p := readPieces(ctx, r, h, size-h)
		defer p.Close()
		last, err := p.last(estargz.FooterSize)
		if err != nil {
			return nil, err
		}
		// Counted either way: a wrong offset costs these requests too.
		t.Requests, t.BytesRead = p.requests(), size-h
		if f, err = parseFooter(last, size); err == nil && f.dataEnd == h {
			if _, err := io.CopyN(io.Discard, p, f.tocOffset-h); err != nil {
				return nil, err
			}
			tocStream = io.LimitReader(p, f.tocEnd-f.tocOffset)
		} else {
			p.Close()
		}
	}
	if tocStream == nil {
		tailStart = size - tailBytes
		var err error
		if tail, err = readRange(ctx, r, tailStart, tailBytes); err != nil {
			return nil, err
		}
		t.Requests, t.BytesRead = t.Requests+1, t.BytesRead+tailBytes
		if f, err = parseFooter(tail, size); err != nil {
			return nil, err
		}
	}
	if n := f.tocEnd - f.tocOffset; n > maxTOC {
		return nil, fmt.Errorf("TOC is %d bytes compressed, over the limit of %d (raise it with --max-toc-bytes)", n, maxTOC)
	}
	switch {
	case tocStream != nil:
	case f.tocOffset >= tailStart:
		tocStream = bytes.NewReader(tail[f.tocOffset-tailStart : f.tocEnd-tailStart])
	default:
		// The TOC starts before the tail: its head comes in parallel
		// pieces, parsed as they arrive, so decoding overlaps the download.
		// (A zstd:chunked TOC may end before the tail too: the tar-split
		// frame comes between it and the footer.)
		n := min(f.tocEnd, tailStart) - f.tocOffset
		p := readPieces(ctx, r, f.tocOffset, n)
		defer p.Close()
		t.Requests += p.requests()
		t.BytesRead += n
		tocStream = p
		if f.tocEnd > tailStart {
			tocStream = io.MultiReader(p, bytes.NewReader(tail[:f.tocEnd-tailStart]))
		}
	}
	if f.format == FormatZstdChunked {
		if tail != nil && tailStart < f.dataEnd {
			t.Tail, t.TailStart = tail[:f.dataEnd-tailStart], tailStart
		}
		var sum string
		if opts.Zstd != nil && opts.Zstd.Layout == f.layout {
			sum = opts.Zstd.Checksum
		}
		if err := t.readZstdTOC(tocStream, f, sum, maxJSON, maxEntries); err != nil {
			return nil, err
		}
		return t, nil
	}
	jtoc, dgst, err := parseTOC(tocStream, maxJSON)
	if err != nil {
		return nil, err
	}
	if n := int64(len(jtoc.Entries)); n > maxEntries {
		return nil, fmt.Errorf("TOC has %d entries, over the limit of %d (raise it with --max-toc-entries)", n, maxEntries)
	}
	t.Format, t.Offset, t.Digest = f.format, f.tocOffset, dgst
	if tail != nil && tailStart < f.tocOffset {
		t.Tail, t.TailStart = tail[:f.tocOffset-tailStart], tailStart
	}
	if err := t.build(jtoc); err != nil {
		return nil, err
	}
	return t, nil
}

// parseTOC decodes the TOC's gzip member as it streams, digesting every
// byte of the JSON (as estargz's writer digests it). The JSON is decoded
// as encoding/json decodes it, by decodeTOC, while another goroutine
// decompresses and digests the next blocks: on two cores that takes a
// 25,000-entry TOC from 50 ms to about 30.
func parseTOC(r io.Reader, maxJSON int64) (*estargz.JTOC, digest.Digest, error) {
	jr, err := decompressTOC(r)
	if err != nil {
		return nil, "", fmt.Errorf("reading TOC: %w", err)
	}
	defer jr.Close()
	lim := &io.LimitedReader{R: jr, N: maxJSON + 1}
	d := digest.Canonical.Digester()
	blocks := inflateAhead(io.TeeReader(lim, d.Hash()))
	defer blocks.stop()
	overLimit := func() error {
		return fmt.Errorf("TOC JSON is over the limit of %d bytes decompressed (raise it with --max-toc-json-bytes)", maxJSON)
	}
	j, err := decodeTOC(blocks)
	if err != nil {
		blocks.stop()
		if lim.N <= 0 {
			return nil, "", overLimit()
		}
		return nil, "", fmt.Errorf("parsing TOC JSON: %w", err)
	}
	if _, err := io.Copy(io.Discard, blocks); err != nil {
		return nil, "", fmt.Errorf("decompressing TOC: %w", err)
	}
	if lim.N <= 0 {
		return nil, "", overLimit()
	}
	return j, d.Digest(), nil
}

// aheadBlock is how much inflateAhead reads at a time.
const aheadBlock = 256 << 10

// aheadReader hands out blocks read from r by a goroutine of its own, up
// to 4 blocks ahead of its reader.
type aheadReader struct {
	ch      chan []byte
	free    chan []byte // blocks read out, for the goroutine to fill again
	done    chan struct{}
	stopped sync.Once
	err     error  // r's error, read after ch is closed
	block   []byte // the block being read out
	cur     []byte // what is left of it
}

// inflateAhead starts reading r ahead. The caller must call stop, after
// which r is no longer read.
func inflateAhead(r io.Reader) *aheadReader {
	a := &aheadReader{ch: make(chan []byte, 4), free: make(chan []byte, 6), done: make(chan struct{})}
	go func() {
		defer close(a.ch)
		for {
			var buf []byte
			select {
			case buf = <-a.free:
			default:
				buf = make([]byte, aheadBlock)
			}
			// Not io.ReadFull: its io.ErrUnexpectedEOF for a short last
			// block would hide the same error from a truncated TOC.
			n, err := fill.From(r, buf)
			if n > 0 {
				select {
				case a.ch <- buf[:n]:
				case <-a.done:
					return
				}
			}
			if err != nil {
				a.err = err
				return
			}
		}
	}()
	return a
}

func (a *aheadReader) Read(p []byte) (int, error) {
	for len(a.cur) == 0 {
		if a.block != nil {
			select {
			case a.free <- a.block[:cap(a.block)]:
			default:
			}
			a.block = nil
		}
		b, ok := <-a.ch
		if !ok {
			if a.err == nil || a.err == io.EOF {
				return 0, io.EOF
			}
			return 0, a.err
		}
		a.block, a.cur = b, b
	}
	n := copy(p, a.cur)
	a.cur = a.cur[n:]
	return n, nil
}

// stop ends the reading ahead and waits for it.
func (a *aheadReader) stop() {
	a.stopped.Do(func() {
		close(a.done)
		for range a.ch {
		}
	})
}

// build folds chunks into files and computes chunk extents.
func (t *TOC) build(j *estargz.JTOC) error {
	t.byName = make(map[string]*Entry, len(j.Entries))
	// Distinct member starts, to find where each member ends.
	var starts []int64
	for i, e := range j.Entries {
		if e == nil {
			return fmt.Errorf("TOC entry %d is null", i)
		}
		if (e.Type == "reg" && e.Size > 0) || e.Type == "chunk" {
			if e.Offset <= 0 || e.Offset >= t.Offset {
				return fmt.Errorf("TOC entry %q: chunk offset %d outside the layer's data (0-%d)", e.Name, e.Offset, t.Offset)
			}
			starts = append(starts, e.Offset)
		}
	}
	slices.Sort(starts) // in TOC order, mostly sorted already
	endOf := func(off int64) int64 {
		i, _ := slices.BinarySearch(starts, off+1) // the first start past off
		if i == len(starts) {
			return t.Offset
		}
		return starts[i]
	}
	var last *Entry
	for _, e := range j.Entries {
		switch e.Type {
		case "chunk":
			if last == nil || last.Type != "reg" {
				return fmt.Errorf("TOC has a chunk entry %q not following a regular file", e.Name)
			}
			size := e.ChunkSize
			if size == 0 {
				size = last.Size - e.ChunkOffset
			}
			if err := last.addChunk(e, size, endOf(e.Offset)); err != nil {
				return err
			}
			continue
		}
		ent := &Entry{TOCEntry: e, Name: CleanName(e.Name), RawName: e.Name}
		if ent.Type == "reg" && ent.Size > 0 {
			size := e.ChunkSize
			if size == 0 {
				size = e.Size
			}
			if err := ent.addChunk(e, size, endOf(e.Offset)); err != nil {
				return err
			}
		}
		last = ent
		if ent.Name == "" {
			continue // the root directory itself
		}
		t.Entries = append(t.Entries, ent)
		t.index(ent)
	}
	for _, e := range t.Entries {
		if e.Type != "reg" {
			continue
		}
		if err := e.checkCovered(); err != nil {
			return err
		}
	}
	return nil
}

// checkCovered reports a regular file whose chunks do not cover it from
// its first byte to its size, one after another.
func (e *Entry) checkCovered() error {
	var covered int64
	for _, c := range e.Chunks {
		if c.FileOffset != covered {
			return fmt.Errorf("TOC entry %q: chunks do not cover the file contiguously (gap at %d)", e.Name, covered)
		}
		covered += c.Size
	}
	if covered != e.Size {
		return fmt.Errorf("TOC entry %q: chunks cover %d of %d bytes", e.Name, covered, e.Size)
	}
	return nil
}

// put adds e, in place of an earlier entry of the same name: a later tar
// entry replaces an earlier one.
func (t *TOC) put(e *Entry) {
	if old, ok := t.byName[e.Name]; ok {
		for i, x := range t.Entries {
			if x == old {
				t.Entries = append(t.Entries[:i], t.Entries[i+1:]...)
				break
			}
		}
	}
	t.Entries = append(t.Entries, e)
	t.index(e)
}

func (e *Entry) addChunk(c *estargz.TOCEntry, size, end int64) error {
	if size <= 0 || c.ChunkOffset < 0 || c.InnerOffset < 0 {
		return fmt.Errorf("TOC entry %q: invalid chunk at %d of %d bytes", e.Name, c.ChunkOffset, size)
	}
	e.Chunks = append(e.Chunks, Chunk{
		Offset:      c.Offset,
		End:         end,
		InnerOffset: c.InnerOffset,
		FileOffset:  c.ChunkOffset,
		Size:        size,
		Digest:      c.ChunkDigest,
	})
	return nil
}

// Source follows a hardlink to the entry holding its contents.
func (t *TOC) Source(e *Entry) (*Entry, error) {
	seen := map[string]bool{}
	for e.Type == "hardlink" {
		if seen[e.Name] {
			return nil, fmt.Errorf("hardlink %q: link cycle", e.Name)
		}
		seen[e.Name] = true
		target, ok := t.Lookup(e.LinkName)
		if !ok {
			return nil, fmt.Errorf("hardlink %q: target %q is not in the layer", e.Name, e.LinkName)
		}
		e = target
	}
	return e, nil
}

func readRange(ctx context.Context, r RangeReader, off, n int64) ([]byte, error) {
	rc, err := r.ReadRange(ctx, off, n)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b := make([]byte, n)
	if _, err := io.ReadFull(rc, b); err != nil {
		return nil, fmt.Errorf("reading bytes %d-%d: %w", off, off+n-1, err)
	}
	return b, nil
}

func cmpOr(v, def int64) int64 {
	if v > 0 {
		return v
	}
	return def
}
