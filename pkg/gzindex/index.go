package gzindex

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sort"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/gzip"
	"github.com/segmentio/encoding/json"

	"github.com/stargz-get/stargz-get/internal/fill"
	"github.com/stargz-get/stargz-get/pkg/blob"
	"github.com/stargz-get/stargz-get/pkg/toc"
)

// DefaultSpacing is the compressed distance between checkpoints: a
// single-file read starts at most this far before the file's header, and
// a 250 MB layer's index holds about 240 windows of 32 KiB (a few MB
// compressed).
const DefaultSpacing = 1 << 20

// version is the serialised form's version; others are refused.
const version = 2

// windowSize is deflate's largest back-reference distance.
const windowSize = 32 << 10

// Checkpoint is a place where inflating can start.
type Checkpoint struct {
	// In is the blob offset of the byte holding the first bit to inflate;
	// Bit is how many low bits of that byte to skip (0-7).
	In  int64 `json:"in"`
	Bit uint8 `json:"bit,omitempty"`
	// Out is the uncompressed offset of the first byte inflated from here.
	Out int64 `json:"out"`
	// Member is set at the start of a gzip member (In is its header).
	Member bool `json:"member,omitempty"`
	// Window is the 32 KiB (or fewer, early in a member) of uncompressed
	// bytes before Out, which back-references may reach. Build sets it; a
	// loaded index keeps it compressed (see window) and sets the rest.
	Window []byte `json:"-"`
	// WindowAt and WindowZ place the deflated window in the serialised
	// index's windows section; WindowLen and WindowSum are its length and
	// hex sha256 digest.
	WindowAt  int64  `json:"windowAt,omitempty"`
	WindowZ   int64  `json:"windowZ,omitempty"`
	WindowLen int    `json:"windowLen,omitempty"`
	WindowSum string `json:"windowSum,omitempty"`
}

// Boundary is the end of a deflate block: every uncompressed byte before
// Out can be had by reading the blob up to (not including) In.
type Boundary struct {
	In  int64 `json:"in"`
	Out int64 `json:"out"`
}

// Entry is one tar entry: what the TOC model needs of its header (kept
// compact: a layer may have a million), its contents' digest, and where
// it is.
type Entry struct {
	Name     string `json:"name"`
	Type     string `json:"type"`
	Size     int64  `json:"size,omitempty"`
	Mode     int64  `json:"mode,omitempty"`
	UID      int    `json:"uid,omitempty"`
	GID      int    `json:"gid,omitempty"`
	Uname    string `json:"userName,omitempty"`
	Gname    string `json:"groupName,omitempty"`
	ModTime  string `json:"modtime,omitempty"`
	LinkName string `json:"linkName,omitempty"`
	DevMajor int    `json:"devMajor,omitempty"`
	DevMinor int    `json:"devMinor,omitempty"`
	Digest   string `json:"digest,omitempty"`
	// Header and Data are where the entry's first header block and its
	// contents start in the uncompressed tar.
	Header int64 `json:"header"`
	Data   int64 `json:"data"`
}

// tocEntry is the entry in the TOC model.
func (e *Entry) tocEntry() *estargz.TOCEntry {
	return &estargz.TOCEntry{
		Name: e.Name, Type: e.Type, Size: e.Size, Mode: e.Mode, UID: e.UID, GID: e.GID, Uname: e.Uname, Gname: e.Gname,
		ModTime3339: e.ModTime, LinkName: e.LinkName, DevMajor: e.DevMajor, DevMinor: e.DevMinor, Digest: e.Digest,
	}
}

// FromTOC is the entry of a TOC entry of a Full listing (one that knows
// its offsets in the tar): the inverse of what a loaded index turns into.
func FromTOC(e *toc.Entry) Entry {
	return Entry{
		Name: e.RawName, Type: e.Type, Size: e.Size, Mode: e.Mode, UID: e.UID, GID: e.GID, Uname: e.Uname, Gname: e.Gname,
		ModTime: e.ModTime3339, LinkName: e.LinkName, DevMajor: e.DevMajor, DevMinor: e.DevMinor, Digest: e.Digest,
		Header: e.TarOffset, Data: e.DataOffset,
	}
}

// Index is the seek index of one plain gzip layer.
type Index struct {
	Version int `json:"version"`
	// Layer and Size are the blob's digest and size.
	Layer string `json:"layer"`
	Size  int64  `json:"size"`
	// Uncompressed is the size of the tar.
	Uncompressed int64        `json:"uncompressed"`
	Checkpoints  []Checkpoint `json:"checkpoints"`
	Boundaries   []Boundary   `json:"boundaries"`
	Entries      []Entry      `json:"entries"`
	// windows is a loaded index's windows section (see Marshal).
	windows []byte
}

// Option configures Build.
type Option func(*options) error

type options struct {
	spacing    int64
	maxEntries int64
}

// WithSpacing sets the compressed distance between checkpoints
// (DefaultSpacing).
func WithSpacing(n int64) Option {
	return func(o *options) error {
		if n <= 0 {
			return fmt.Errorf("checkpoint spacing must be positive, got %d", n)
		}
		o.spacing = n
		return nil
	}
}

// WithMaxEntries bounds the tar entries (toc.DefaultMaxEntries).
func WithMaxEntries(n int64) Option {
	return func(o *options) error {
		if n <= 0 {
			return fmt.Errorf("entry limit must be positive, got %d", n)
		}
		o.maxEntries = n
		return nil
	}
}

// Build reads the whole gzip blob r (from its first byte) and returns its
// index; layer and size name the blob. Build reads r to its end, so a
// reader that checks the blob's digest at the end (blob.Stream) has
// checked it when Build returns without error.
func Build(r io.Reader, layer string, size int64, opts ...Option) (*Index, error) {
	rec, err := NewRecorder(r, layer, size, opts...)
	if err != nil {
		return nil, err
	}
	defer rec.Close()
	entries, _, err := List(rec, rec.o.maxEntries)
	if err != nil {
		return nil, err
	}
	// The tar ends before the blob (zero blocks, padding, the trailer):
	// read on, so that the whole blob is inflated and checked.
	if _, err := io.Copy(io.Discard, rec); err != nil {
		return nil, fmt.Errorf("reading the layer past its tar: %w", err)
	}
	return rec.Index(entries)
}

// Recorder reads the uncompressed tar of a gzip blob from the blob's first
// byte and records, on the way, what an index needs besides the tar's
// entries: checkpoints with their windows, and block boundaries. Build
// lists the entries itself; a reader that walks the tar for its own ends
// (extracting it) hands them to Index once it has read to the end.
type Recorder struct {
	o    options
	ix   *Index
	z    *inflater
	ra   io.ReadCloser
	pk   *packer
	out  int64 // uncompressed bytes read
	err  error // the error Read returned, io.EOF at the end
	done bool  // Close was called
}

// NewRecorder starts reading r, the blob layer of size bytes, inflating
// on a goroutine of its own (the one part of reading a plain layer that
// cannot be spread over cores), up to 1 MiB ahead of Read.
func NewRecorder(r io.Reader, layer string, size int64, opts ...Option) (*Recorder, error) {
	o := options{spacing: DefaultSpacing, maxEntries: toc.DefaultMaxEntries}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	ix := &Index{Version: version, Layer: layer, Size: size}
	z := newInflater(r, 0)
	pk := startPacker()
	lastCP := int64(0)
	var drift int64 // see onBlock
	z.onMember = func(in, out int64) {
		drift = 0
		ix.Checkpoints = append(ix.Checkpoints, Checkpoint{In: in, Out: out, Member: true})
		lastCP = in
	}
	// drift corrects the inflater's compressed offset: after a stored
	// block it counts the bytes it had buffered twice (klauspost/compress
	// v1.20.3, dataBlock). At the end of a stored block no bits are
	// buffered, so the true position is then what the inflater consumed;
	// a position past that is the sign that drift grew.
	z.onBlock = func(cp flate.InflateCheckpoint, flateStart, memberOut int64) {
		consumed := z.pos() - flateStart
		bit := cp.CompressedOffset*8 + int64(cp.BitOffset) - 8*drift
		if bit > consumed*8 {
			drift += (bit - consumed*8 + 7) / 8
			bit = cp.CompressedOffset*8 + int64(cp.BitOffset) - 8*drift
		}
		if buffered := consumed*8 - bit; buffered < 0 || buffered > 40 {
			return // cannot place it: no boundary, no checkpoint here
		}
		bit += flateStart * 8
		out := memberOut + cp.UncompressedOffset
		ix.Boundaries = append(ix.Boundaries, Boundary{In: (bit + 7) / 8, Out: out})
		if bit/8-lastCP >= o.spacing {
			pk.add(len(ix.Checkpoints), cp.Window)
			ix.Checkpoints = append(ix.Checkpoints, Checkpoint{In: bit / 8, Bit: uint8(bit % 8), Out: out})
			lastCP = bit / 8
		}
	}
	z.onEnd = func(in, out int64) {
		ix.Boundaries = append(ix.Boundaries, Boundary{In: in, Out: out})
	}
	// The callbacks above run on the read-ahead goroutine; what they
	// record is read only after ra.Close, which waits for it.
	ra := blob.ReadAhead(z, inflateBuffers, inflateBufferSize)
	return &Recorder{o: o, ix: ix, z: z, ra: ra, pk: pk}, nil
}

// Read delivers the uncompressed tar; at the blob's end, io.EOF.
func (rec *Recorder) Read(p []byte) (int, error) {
	if rec.err != nil {
		return 0, rec.err
	}
	n, err := rec.ra.Read(p)
	rec.out += int64(n)
	if err != nil {
		rec.err = err
	}
	return n, err
}

// Close stops inflating; the reader under the Recorder may be closed
// after it.
func (rec *Recorder) Close() error {
	if !rec.done {
		rec.done = true
		rec.ra.Close()
		rec.pk.stop()
	}
	return nil
}

// Index returns the index of a blob read to its end (Read returned
// io.EOF), with entries, the tar's entries in order with the digests of
// regular files' contents, as List gives them. It closes the Recorder.
func (rec *Recorder) Index(entries []Entry) (*Index, error) {
	if rec.err != io.EOF {
		rec.Close()
		if rec.err == nil {
			return nil, errors.New("the layer was not read to its end")
		}
		return nil, fmt.Errorf("the layer was not read to its end: %w", rec.err)
	}
	rec.Close()
	ix := rec.ix
	if rec.z.pos() != ix.Size {
		return nil, fmt.Errorf("gzip stream ends at byte %d of the %d-byte layer", rec.z.pos(), ix.Size)
	}
	ix.Entries, ix.Uncompressed = entries, rec.out
	ix.windows = rec.pk.wins.Bytes()
	for _, w := range rec.pk.packed {
		c := &ix.Checkpoints[w.idx]
		c.WindowAt, c.WindowZ, c.WindowLen, c.WindowSum = w.at, w.z, w.n, w.sum
	}
	return ix, nil
}

// packer deflates checkpoint windows into an index's windows section on a
// goroutine of its own, as they are found, so that a built index holds
// them as a loaded one does, and Marshal has nothing left to compress.
type packer struct {
	jobs    chan packJob
	done    chan struct{}
	stopped bool
	wins    bytes.Buffer // written by the goroutine until done
	packed  []packedWindow
}

type packJob struct {
	idx    int
	window []byte
}

type packedWindow struct {
	idx   int
	at, z int64
	n     int
	sum   string
}

func startPacker() *packer {
	jobs := make(chan packJob, 4)
	pk := &packer{jobs: jobs, done: make(chan struct{})}
	go func() {
		defer close(pk.done)
		fw, _ := flate.NewWriter(&pk.wins, flate.BestSpeed)
		for j := range jobs {
			w := deflateWindow(fw, &pk.wins, j.window)
			w.idx = j.idx
			pk.packed = append(pk.packed, w)
		}
	}()
	return pk
}

// deflateWindow appends window, deflated, to wins and says where it is
// and its digest (idx is left for the caller).
func deflateWindow(fw *flate.Writer, wins *bytes.Buffer, window []byte) packedWindow {
	at := int64(wins.Len())
	fw.Reset(wins)
	fw.Write(window) // a bytes.Buffer does not fail
	fw.Close()
	sum := sha256.Sum256(window)
	return packedWindow{at: at, z: int64(wins.Len()) - at, n: len(window), sum: hex.EncodeToString(sum[:])}
}

// add packs a copy of window as that of checkpoint idx; an empty window
// (at a member's start) is not packed.
func (pk *packer) add(idx int, window []byte) {
	if len(window) > 0 {
		pk.jobs <- packJob{idx, bytes.Clone(window)}
	}
}

// stop waits for the packer; wins is then the windows section.
func (pk *packer) stop() {
	if !pk.stopped {
		pk.stopped = true
		close(pk.jobs)
		<-pk.done
	}
}

// inflateBuffers and inflateBufferSize bound how far inflating runs ahead
// of the tar walk: 1 MiB of tar, a fraction of a stream segment, so that a
// stream stopped after the last file wanted has read little more.
const (
	inflateBuffers    = 4
	inflateBufferSize = 256 << 10
)

// offsetReader counts what tar reads.
type offsetReader = counter

// List walks an uncompressed tar stream and returns its entries, with
// offsets and the digests of regular files' contents, and the bytes the
// walk read (up to the end-of-archive marker). The contents are hashed on
// another goroutine, so that hashing does not slow down inflating.
func List(r io.Reader, maxEntries int64) ([]Entry, int64, error) {
	if maxEntries <= 0 {
		maxEntries = toc.DefaultMaxEntries
	}
	hs := startHasher()
	defer hs.stop()
	cnt := &offsetReader{r: r}
	tr := tar.NewReader(cnt)
	var entries []Entry
	var next int64 // where the next header starts
	for {
		header := next
		h, err := tr.Next()
		if err == io.EOF {
			for _, d := range hs.stop() {
				entries[d.idx].Digest = d.digest
			}
			return entries, cnt.n, nil
		}
		if err != nil {
			return nil, 0, fmt.Errorf("reading layer tar at byte %d: %w", header, err)
		}
		next = cnt.n + toc.TarDataBlocks(h)
		te := toc.HeaderEntry(h)
		if te == nil {
			continue
		}
		if int64(len(entries)) >= maxEntries {
			return nil, 0, fmt.Errorf("layer has more than %d entries (raise the limit with --max-toc-entries)", maxEntries)
		}
		entries = append(entries, Entry{
			Name: te.Name, Type: te.Type, Size: te.Size, Mode: te.Mode, UID: te.UID, GID: te.GID, Uname: te.Uname, Gname: te.Gname,
			ModTime: te.ModTime3339, LinkName: te.LinkName, DevMajor: te.DevMajor, DevMinor: te.DevMinor, Header: header, Data: cnt.n,
		})
		if te.Type == "reg" {
			if err := hs.file(tr, len(entries)-1); err != nil {
				return nil, 0, fmt.Errorf("reading layer tar: %s: %w", h.Name, err)
			}
		}
	}
}

// hasher hashes files' contents on a goroutine of its own.
type hasher struct {
	free    chan []byte
	jobs    chan hashJob
	done    chan struct{}
	digests []fileDigest
	stopped bool
}

type hashJob struct {
	buf []byte
	n   int
	idx int
	end bool
}

type fileDigest struct {
	idx    int
	digest string
}

// hashBuffers and hashBufferSize bound what is in flight to the hasher.
const (
	hashBuffers    = 8
	hashBufferSize = 256 << 10
)

func startHasher() *hasher {
	hs := &hasher{free: make(chan []byte, hashBuffers), jobs: make(chan hashJob, hashBuffers), done: make(chan struct{})}
	for range hashBuffers {
		hs.free <- make([]byte, hashBufferSize)
	}
	go func() {
		defer close(hs.done)
		h := sha256.New()
		for j := range hs.jobs {
			if j.buf != nil {
				h.Write(j.buf[:j.n])
				hs.free <- j.buf
			}
			if j.end {
				hs.digests = append(hs.digests, fileDigest{j.idx, "sha256:" + hex.EncodeToString(h.Sum(nil))})
				h.Reset()
			}
		}
	}()
	return hs
}

// file hands the contents of entry idx, read from r, to the hasher.
func (hs *hasher) file(r io.Reader, idx int) error {
	for {
		buf := <-hs.free
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			hs.jobs <- hashJob{buf: buf, n: n, idx: idx}
		} else {
			hs.free <- buf
		}
		switch err {
		case nil:
			continue
		case io.EOF, io.ErrUnexpectedEOF:
			hs.jobs <- hashJob{idx: idx, end: true}
			return nil
		}
		return err
	}
}

// stop waits for the hasher and returns the digests, in file order.
func (hs *hasher) stop() []fileDigest {
	if !hs.stopped {
		hs.stopped = true
		close(hs.jobs)
		<-hs.done
	}
	return hs.digests
}

// TOC turns the index into the TOC model: a Full listing whose entries
// know their offsets. maxEntries bounds it (0: toc.DefaultMaxEntries).
func (ix *Index) TOC(format string, maxEntries int64) (*toc.TOC, error) {
	return EntriesTOC(ix.Entries, format, maxEntries)
}

// EntriesTOC turns a tar's entries into a Full TOC.
func EntriesTOC(entries []Entry, format string, maxEntries int64) (*toc.TOC, error) {
	b := toc.NewBuilder(format, maxEntries)
	for i := range entries {
		e, err := b.Add(entries[i].tocEntry())
		if err != nil {
			return nil, err
		}
		if e != nil {
			e.TarOffset, e.DataOffset = entries[i].Header, entries[i].Data
		}
	}
	return b.TOC(), nil
}

// The serialised index (version 2) is, in this order: the 8 bytes of
// magic; the length of the windows section (8 bytes, big-endian); the
// windows section, each checkpoint's window deflated on its own; then
// gzip-compressed JSON lines: the index without its entries (the
// checkpoints name their window's place, length and sha256 digest), then
// one line per entry. Loading it keeps the windows compressed and
// inflates one only when a read starts at its checkpoint, and turns the
// entries into the TOC model one at a time, so that neither the windows
// nor a second copy of the entry table are ever resident.
const magic = "SGZIDX02"

// ErrCorrupt is matched (errors.Is) by the error of a read through a
// loaded index whose checkpoint window does not match its digest.
var ErrCorrupt = errors.New("the seek index is corrupt")

// Marshal serialises the index for the cache (see magic).
func (ix *Index) Marshal() ([]byte, error) {
	var wins bytes.Buffer
	head := *ix
	head.Entries = nil
	head.windows = nil
	head.Checkpoints = make([]Checkpoint, len(ix.Checkpoints))
	fw, _ := flate.NewWriter(&wins, flate.BestSpeed)
	for i, c := range ix.Checkpoints {
		switch w := c.Window; {
		case w != nil:
			// Raw, as set by hand: deflated here.
			d := deflateWindow(fw, &wins, w)
			c.WindowAt, c.WindowZ, c.WindowLen, c.WindowSum = d.at, d.z, d.n, d.sum
		case c.WindowZ > 0:
			// Already deflated (built or loaded): copied as it is; its
			// digest is checked when a read inflates it.
			if c.WindowAt < 0 || c.WindowAt > int64(len(ix.windows)) || c.WindowZ > int64(len(ix.windows))-c.WindowAt {
				return nil, fmt.Errorf("%w: the window of the checkpoint at byte %d is outside the index", ErrCorrupt, c.In)
			}
			z := ix.windows[c.WindowAt : c.WindowAt+c.WindowZ]
			c.WindowAt = int64(wins.Len())
			wins.Write(z)
		}
		c.Window = nil
		head.Checkpoints[i] = c
	}
	var buf bytes.Buffer
	buf.WriteString(magic)
	var l [8]byte
	binary.BigEndian.PutUint64(l[:], uint64(wins.Len()))
	buf.Write(l[:])
	buf.Write(wins.Bytes())
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	enc := json.NewEncoder(zw)
	if err := enc.Encode(&head); err != nil {
		return nil, err
	}
	for i := range ix.Entries {
		if err := enc.Encode(&ix.Entries[i]); err != nil {
			return nil, err
		}
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// maxIndexLine bounds one line of a serialised index (the first holds the
// checkpoints and block boundaries).
const maxIndexLine = 64 << 20

// Unmarshal reads an index back, entries and all, and checks that it is
// consistent and describes the blob layer of size bytes.
func Unmarshal(b []byte, layer string, size int64) (*Index, error) {
	var entries []Entry
	ix, err := Load(b, layer, size, func(e *Entry) error {
		entries = append(entries, *e)
		return nil
	})
	if err != nil {
		return nil, err
	}
	ix.Entries = entries
	return ix, nil
}

// LoadTOC reads an index back and turns its entries into the TOC model
// as they are read (see EntriesTOC); the index returned has no Entries.
func LoadTOC(b []byte, layer string, size int64, format string, maxEntries int64) (*Index, *toc.TOC, error) {
	tb := toc.NewBuilder(format, maxEntries)
	ix, err := Load(b, layer, size, func(e *Entry) error {
		te, err := tb.Add(e.tocEntry())
		if err == nil && te != nil {
			te.TarOffset, te.DataOffset = e.Header, e.Data
		}
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	return ix, tb.TOC(), nil
}

// Load reads an index back without its entries, which it hands to each,
// one at a time (the Entry is reused: copy what must outlive the call),
// after checking each against the index and the one before. The
// checkpoints' windows stay compressed in the index until a read needs
// one; each is checked against its digest then.
func Load(b []byte, layer string, size int64, each func(*Entry) error) (*Index, error) {
	if len(b) < len(magic)+8 || string(b[:len(magic)]) != magic {
		return nil, fmt.Errorf("seek index: not a version %d index (written by another version?)", version)
	}
	b = b[len(magic):]
	n := binary.BigEndian.Uint64(b)
	b = b[8:]
	if n > uint64(len(b)) {
		return nil, fmt.Errorf("seek index: its windows section (%d bytes) runs past its end", n)
	}
	wins, rest := b[:n], b[n:]
	zr, err := gzip.NewReader(bytes.NewReader(rest))
	if err != nil {
		return nil, fmt.Errorf("reading seek index: %w", err)
	}
	br := bufio.NewReaderSize(zr, 64<<10)
	line, err := readLine(br)
	if err != nil {
		return nil, fmt.Errorf("reading seek index line 1: %w", fill.Cut(err))
	}
	var ix Index
	if err := json.Unmarshal(line, &ix); err != nil {
		return nil, fmt.Errorf("reading seek index line 1: %w", err)
	}
	if err := ix.check(layer, size, int64(len(wins))); err != nil {
		return nil, fmt.Errorf("seek index: %w", err)
	}
	ix.windows = bytes.Clone(wins) // not the rest of b
	var e, prev Entry
	for i := 0; ; i++ {
		line, err := readLine(br)
		if err == io.EOF {
			return &ix, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading seek index line %d: %w", i+2, err)
		}
		e = Entry{}
		if err := json.Unmarshal(line, &e); err != nil {
			return nil, fmt.Errorf("reading seek index line %d: %w", i+2, err)
		}
		if e.Header < 0 || e.Header%512 != 0 || e.Data < e.Header+512 || e.Size < 0 || e.Data+e.Size > ix.Uncompressed ||
			(i > 0 && e.Header < prev.Data+prev.Size) {
			return nil, fmt.Errorf("seek index: entry %d (%q) is out of place", i, e.Name)
		}
		prev = Entry{Header: e.Header, Data: e.Data, Size: e.Size}
		if err := each(&e); err != nil {
			return nil, fmt.Errorf("seek index: %w", err)
		}
	}
}

// readLine returns the next line, without its newline.
func readLine(br *bufio.Reader) ([]byte, error) {
	var long []byte
	for {
		part, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			if len(long)+len(part) > maxIndexLine {
				return nil, errors.New("line too long")
			}
			long = append(long, part...)
			continue
		}
		if err != nil {
			if err == io.EOF && len(long)+len(part) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if long != nil {
			return append(long, part[:len(part)-1]...), nil
		}
		return part[:len(part)-1], nil
	}
}

// check reports an index read back (without its entries) that cannot be
// right for the blob, whose windows section has wins bytes.
func (ix *Index) check(layer string, size, wins int64) error {
	switch {
	case ix.Version != version:
		return fmt.Errorf("version %d, want %d", ix.Version, version)
	case ix.Layer != layer || ix.Size != size:
		return fmt.Errorf("describes %s (%d bytes), not %s (%d bytes)", ix.Layer, ix.Size, layer, size)
	case len(ix.Checkpoints) == 0 || !ix.Checkpoints[0].Member || ix.Checkpoints[0].In != 0 || ix.Checkpoints[0].Out != 0:
		return errors.New("does not start at the blob's start")
	}
	at := int64(0) // where the next window starts in the windows section
	for i, c := range ix.Checkpoints {
		hasWindow := c.WindowZ > 0
		if c.In < 0 || c.In >= size || c.Bit > 7 || c.Out < 0 || c.Out > ix.Uncompressed ||
			c.WindowLen < 0 || c.WindowLen > windowSize || int64(c.WindowLen) > c.Out ||
			hasWindow != (c.WindowLen > 0) || (hasWindow && (c.WindowAt != at || c.WindowZ > wins-at || len(c.WindowSum) != 2*sha256.Size)) ||
			(!hasWindow && (c.WindowAt != 0 || c.WindowZ < 0 || c.WindowSum != "")) ||
			(c.Member && (c.Bit != 0 || hasWindow)) ||
			(i > 0 && (c.In <= ix.Checkpoints[i-1].In || c.Out < ix.Checkpoints[i-1].Out)) {
			return fmt.Errorf("checkpoint %d is out of place", i)
		}
		at += c.WindowZ
	}
	if at != wins {
		return fmt.Errorf("the checkpoints' windows take %d bytes, the windows section has %d", at, wins)
	}
	for i, bd := range ix.Boundaries {
		if bd.In <= 0 || bd.In > size || bd.Out < 0 || bd.Out > ix.Uncompressed ||
			(i > 0 && (bd.In < ix.Boundaries[i-1].In || bd.Out < ix.Boundaries[i-1].Out)) {
			return fmt.Errorf("block boundary %d is out of place", i)
		}
	}
	return nil
}

// window returns checkpoint c's window: the one Build kept, or the one
// the serialised index holds, inflated and checked against its digest.
func (ix *Index) window(c *Checkpoint) ([]byte, error) {
	if c.Window != nil || c.WindowZ == 0 {
		return c.Window, nil
	}
	if c.WindowAt < 0 || c.WindowAt > int64(len(ix.windows)) || c.WindowZ > int64(len(ix.windows))-c.WindowAt {
		return nil, fmt.Errorf("%w: the window of the checkpoint at byte %d is outside the index", ErrCorrupt, c.In)
	}
	fr := flate.NewReader(bytes.NewReader(ix.windows[c.WindowAt : c.WindowAt+c.WindowZ]))
	defer fr.Close()
	w := make([]byte, c.WindowLen)
	n, err := io.ReadFull(fr, w)
	if err == nil {
		// It must end there.
		var one [1]byte
		if k, _ := fr.Read(one[:]); k != 0 {
			err = errors.New("longer than recorded")
		}
	}
	sum := sha256.Sum256(w[:n])
	if err != nil || hex.EncodeToString(sum[:]) != c.WindowSum {
		return nil, fmt.Errorf("%w: the window of the checkpoint at byte %d does not match its digest", ErrCorrupt, c.In)
	}
	return w, nil
}

// span is where to read the uncompressed bytes [from, to): the checkpoint
// to start at and the blob offset to read up to.
func (ix *Index) span(from, to int64) (*Checkpoint, int64) {
	i := sort.Search(len(ix.Checkpoints), func(i int) bool { return ix.Checkpoints[i].Out > from }) - 1
	cp := &ix.Checkpoints[max(i, 0)]
	j := sort.Search(len(ix.Boundaries), func(j int) bool { return ix.Boundaries[j].Out >= to })
	end := ix.Size
	if j < len(ix.Boundaries) {
		// A few bytes past the block's last bit: the inflater looks up
		// Huffman codes with its longest code's bits in hand.
		end = min(ix.Boundaries[j].In+slack, ix.Size)
	}
	return cp, end
}

// slack is read past a block boundary (see span).
const slack = 16
