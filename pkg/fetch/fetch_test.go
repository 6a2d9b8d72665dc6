package fetch_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/stargz-get/stargz-get/internal/libdeflate"
	"github.com/stargz-get/stargz-get/internal/testenv"
	"github.com/stargz-get/stargz-get/pkg/fetch"
	"github.com/stargz-get/stargz-get/pkg/toc"
	"github.com/stargz-get/stargz-get/pkg/wire"
)

var fixtures *testenv.Fixtures

func TestMain(m *testing.M) {
	var err error
	fixtures, err = testenv.BuildFixtures(filepath.Join(os.TempDir(), "stargz-get-fixtures"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "building fixtures:", err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// blobFile serves byte ranges of a real fixture blob from memory, the way
// a registry would, counting requests and bytes, with optional faults.
type blobFile struct {
	data     []byte
	requests atomic.Int64
	bytes    atomic.Int64
	// fault, when set, may replace a response body (e.g. cut it short).
	fault func(call int64, off, n int64, body []byte) ([]byte, error)
}

func (b *blobFile) Size() int64 { return int64(len(b.data)) }

func (b *blobFile) ReadRange(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	call := b.requests.Add(1)
	body := b.data[off : off+n]
	if b.fault != nil {
		var err error
		if body, err = b.fault(call, off, n, body); err != nil {
			return nil, err
		}
	}
	b.bytes.Add(int64(len(body)))
	return io.NopCloser(bytes.NewReader(body)), nil
}

func open(t *testing.T, l *testenv.Layer) *blobFile {
	t.Helper()
	data, err := os.ReadFile(l.BlobPath)
	if err != nil {
		t.Fatal(err)
	}
	return &blobFile{data: data}
}

func readTOC(t *testing.T, b *blobFile) *fetch.Layer {
	t.Helper()
	tc, err := toc.Read(context.Background(), b, toc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b.requests.Store(0)
	b.bytes.Store(0)
	return &fetch.Layer{Blob: b, TOC: tc, Pinned: true}
}

// wantAll selects the layer's entries at or under prefix ("" for all).
func wantAll(l *fetch.Layer, prefix string) []*fetch.Want {
	var ws []*fetch.Want
	for _, e := range l.TOC.Entries {
		if toc.Landmark(e.Name) {
			continue
		}
		if prefix == "" || e.Name == prefix || strings.HasPrefix(e.Name, prefix+"/") {
			ws = append(ws, &fetch.Want{Layer: l, Entry: e})
		}
	}
	return ws
}

func run(t *testing.T, ctx context.Context, dir string, ws []*fetch.Want, opts fetch.Options) map[string]*fetch.Outcome {
	t.Helper()
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	out := map[string]*fetch.Outcome{}
	var mu sync.Mutex
	fetch.Run(ctx, root, ws, opts, func(o *fetch.Outcome) {
		mu.Lock()
		defer mu.Unlock()
		if _, dup := out[o.Path]; dup {
			t.Errorf("two outcomes for %s", o.Path)
		}
		out[o.Path] = o
	})
	if len(out) != len(ws) {
		t.Errorf("got %d outcomes for %d wants", len(out), len(ws))
	}
	return out
}

func noTemp(t *testing.T, dir string) {
	t.Helper()
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), ".sg-") {
			t.Errorf("temp file left behind: %s", p)
		}
		return nil
	})
}

// bothDecoders runs f with small gzip members decoded whole by libdeflate
// and again with every member streamed through klauspost/compress. Where
// libdeflate cannot be loaded the first is skipped, except in CI, which
// installs it so that both paths are always tested there.
func bothDecoders(t *testing.T, f func(t *testing.T)) {
	t.Run("libdeflate", func(t *testing.T) {
		if err := libdeflate.Load(); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("CI must test libdeflate: %v", err)
			}
			t.Skip(err)
		}
		defer fetch.SetWholeMembers(true)()
		before := fetch.WholeMembers()
		f(t)
		if fetch.WholeMembers() == before {
			t.Error("no gzip member was decoded whole")
		}
	})
	t.Run("klauspost", func(t *testing.T) {
		defer fetch.SetWholeMembers(false)()
		before := fetch.WholeMembers()
		f(t)
		if n := fetch.WholeMembers() - before; n != 0 {
			t.Errorf("%d gzip members decoded whole with libdeflate off", n)
		}
	})
}

func TestWholeLayerMatchesTar(t *testing.T) { bothDecoders(t, testWholeLayerMatchesTar) }

func testWholeLayerMatchesTar(t *testing.T) {
	for _, tc := range []struct {
		name  string
		layer *testenv.Layer
		jobs  int
	}{
		{"gotree -j 1", fixtures.GoTree.Layers[0], 1},
		{"gotree -j 8", fixtures.GoTree.Layers[0], 8},
		{"minchunk -j 4", fixtures.MinChunk.Layers[0], 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := open(t, tc.layer)
			l := readTOC(t, b)
			dir := t.TempDir()
			out := run(t, context.Background(), dir, wantAll(l, ""), fetch.Options{Jobs: tc.jobs})
			for p, o := range out {
				if o.Status != wire.StatusFetched {
					t.Errorf("%s: %s: %v", p, o.Status, o.Err)
				}
				if o.Want.Entry.Type == wire.TypeReg && o.Verified != "toc" {
					t.Errorf("%s: verified %q, want toc", p, o.Verified)
				}
			}
			if err := testenv.CheckTree(dir, tc.layer.Files, nil); err != nil {
				t.Error(err)
			}
			// Files and directories get the TOC's modification time (the
			// fixtures give every entry testenv.ModTime).
			for _, f := range tc.layer.Files {
				if f.Type != "reg" && f.Type != "dir" {
					continue
				}
				fi, err := os.Lstat(filepath.Join(dir, f.Name))
				if err != nil {
					t.Fatal(err)
				}
				if !fi.ModTime().Equal(testenv.ModTime) {
					t.Errorf("%s: modification time %s, want %s", f.Name, fi.ModTime().UTC(), testenv.ModTime)
				}
			}
			noTemp(t, dir)
			// A whole-layer fetch moves each data byte at most once.
			if got, max := b.bytes.Load(), l.TOC.Offset; got > max {
				t.Errorf("downloaded %d bytes, more than the %d bytes of data before the TOC", got, max)
			}
		})
	}
}

// TestWholeLayerInReverseOrder: entries asked for against blob order
// (plan looks members up only then), where small files share members,
// make the same tree, each member downloaded once.
func TestWholeLayerInReverseOrder(t *testing.T) {
	for _, tc := range []struct {
		name  string
		layer *testenv.Layer
	}{
		{"gotree", fixtures.GoTree.Layers[0]},
		{"minchunk", fixtures.MinChunk.Layers[0]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := open(t, tc.layer)
			l := readTOC(t, b)
			l.TOC.Tail = nil // every member from the blob, counted
			ws := wantAll(l, "")
			slices.Reverse(ws)
			dir := t.TempDir()
			for p, o := range run(t, context.Background(), dir, ws, fetch.Options{Jobs: 4}) {
				if o.Status != wire.StatusFetched {
					t.Errorf("%s: %s: %v", p, o.Status, o.Err)
				}
			}
			if err := testenv.CheckTree(dir, tc.layer.Files, nil); err != nil {
				t.Error(err)
			}
			if got, max := b.bytes.Load(), l.TOC.Offset; got > max {
				t.Errorf("downloaded %d bytes, more than the %d bytes of data before the TOC", got, max)
			}
		})
	}
}

// TestWholeLayerSpreadEvenly: a whole layer is read as no more ranges
// than jobs, of about equal size, so that all start at once and end
// together (none left to start when the others are done).
func TestWholeLayerSpreadEvenly(t *testing.T) {
	for _, jobs := range []int{3, 4, 7} {
		t.Run(fmt.Sprint(jobs), func(t *testing.T) {
			b := open(t, fixtures.GoTree.Layers[0])
			l := readTOC(t, b)
			var mu sync.Mutex
			var sizes []int64
			b.fault = func(call, off, n int64, body []byte) ([]byte, error) {
				mu.Lock()
				sizes = append(sizes, n)
				mu.Unlock()
				return body, nil
			}
			out := run(t, context.Background(), t.TempDir(), wantAll(l, ""), fetch.Options{Jobs: jobs})
			for p, o := range out {
				if o.Status != wire.StatusFetched {
					t.Fatalf("%s: %s: %v", p, o.Status, o.Err)
				}
			}
			slices.Sort(sizes)
			if len(sizes) > jobs || len(sizes) == 0 {
				t.Fatalf("%d ranges %v for %d jobs", len(sizes), sizes, jobs)
			}
			if lo, hi := sizes[0], sizes[len(sizes)-1]; len(sizes) == jobs && hi > 2*lo {
				t.Errorf("ranges %v: the largest over twice the smallest", sizes)
			}
		})
	}
}

func TestMergesNeighbouringChunks(t *testing.T) {
	b := open(t, fixtures.GoTree.Layers[0])
	l := readTOC(t, b)
	ws := wantAll(l, "usr/local/go/src/encoding/json")
	var files int
	for _, w := range ws {
		if w.Entry.Type == wire.TypeReg && w.Entry.Size > 0 {
			files++
		}
	}
	dir := t.TempDir()
	run(t, context.Background(), dir, ws, fetch.Options{Jobs: 4})
	if err := testenv.CheckTree(dir, testenv.Want(fixtures.GoTree.Layers[0].Files, "usr/local/go/src/encoding/json"), nil); err != nil {
		t.Error(err)
	}
	if got := b.requests.Load(); got*4 > int64(files) {
		t.Errorf("%d requests for %d neighbouring files; want them merged (at most a quarter as many)", got, files)
	}
	// Without merging, every member is its own request.
	b.requests.Store(0)
	run(t, context.Background(), t.TempDir(), ws, fetch.Options{Jobs: 4, MaxGap: -1, MaxRequestBytes: 1})
	if got := b.requests.Load(); got < int64(files) {
		t.Errorf("%d requests with merging off, want at least %d (one per file)", got, files)
	}
}

func TestCorruptChunkNeverLands(t *testing.T) { bothDecoders(t, testCorruptChunkNeverLands) }

func testCorruptChunkNeverLands(t *testing.T) {
	const name = "usr/local/go/src/net/net.go"
	for _, tc := range []struct {
		desc    string
		corrupt func(member []byte, size int64)
	}{
		{"flipped byte breaks the deflate stream", func(member []byte, size int64) {
			member[20] ^= 0x55
		}},
		{"valid gzip member with other bytes", func(member []byte, size int64) {
			// Zeros compress to far less than the member: the rest of the
			// member's span is left as it was and skipped.
			var zb bytes.Buffer
			zw := gzip.NewWriter(&zb)
			zw.Write(make([]byte, size))
			zw.Close()
			copy(member, zb.Bytes())
		}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			b := open(t, fixtures.GoTree.Layers[0])
			l := readTOC(t, b)
			e, ok := l.TOC.Lookup(name)
			if !ok {
				t.Fatalf("%s not in TOC", name)
			}
			c := e.Chunks[0]
			b.fault = func(call, off, n int64, body []byte) ([]byte, error) {
				if off <= c.Offset && c.End <= off+n {
					body = bytes.Clone(body)
					tc.corrupt(body[c.Offset-off:c.End-off], c.Size)
				}
				return body, nil
			}
			dir := t.TempDir()
			out := run(t, context.Background(), dir, wantAll(l, name), fetch.Options{Jobs: 2, Tries: 2})
			o := out[name]
			if o.Status != wire.StatusFailed || o.Err == nil {
				t.Fatalf("corrupt file: status %s, err %v; want failed", o.Status, o.Err)
			}
			if _, err := os.Lstat(filepath.Join(dir, name)); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("corrupt file landed under its final name (stat: %v)", err)
			}
			noTemp(t, dir)
			if got := b.requests.Load(); got != 2 {
				t.Errorf("%d requests, want 2 (one try and one retry)", got)
			}
		})
	}
}

func TestShortBodyIsRetried(t *testing.T) { bothDecoders(t, testShortBodyIsRetried) }

func testShortBodyIsRetried(t *testing.T) {
	// Large members (pkg) and small ones (src/encoding/json), which
	// libdeflate decodes whole from the read buffer.
	for _, prefix := range []string{"usr/local/go/pkg", "usr/local/go/src/encoding/json"} {
		t.Run(prefix, func(t *testing.T) { shortBodyIsRetried(t, prefix) })
	}
}

func shortBodyIsRetried(t *testing.T, prefix string) {
	layer := fixtures.GoTree.Layers[0]
	b := open(t, layer)
	l := readTOC(t, b)
	// The first response of every request stops half way, as a reset
	// connection would; the retry resumes from the first member not done.
	var cut sync.Map
	b.fault = func(call, off, n int64, body []byte) ([]byte, error) {
		if _, done := cut.LoadOrStore(off+n, true); !done && n > 1 {
			return body[:n/2], nil
		}
		return body, nil
	}
	dir := t.TempDir()
	out := run(t, context.Background(), dir, wantAll(l, prefix), fetch.Options{Jobs: 3})
	for p, o := range out {
		if o.Status != wire.StatusFetched {
			t.Errorf("%s: %s: %v", p, o.Status, o.Err)
		}
	}
	if err := testenv.CheckTree(dir, testenv.Want(layer.Files, prefix), nil); err != nil {
		t.Error(err)
	}
	noTemp(t, dir)
}

func TestCancelledLeavesNothingHalfWritten(t *testing.T) {
	b := open(t, fixtures.GoTree.Layers[0])
	l := readTOC(t, b)
	ctx, cancel := context.WithCancel(context.Background())
	// Cancel once the first response has been handed out.
	b.fault = func(call, off, n int64, body []byte) ([]byte, error) {
		if call == 3 {
			cancel()
		}
		return body, nil
	}
	dir := t.TempDir()
	out := run(t, ctx, dir, wantAll(l, "usr/local/go/pkg"), fetch.Options{Jobs: 1, MaxRequestBytes: 1 << 20})
	var failed int
	for p, o := range out {
		switch o.Status {
		case wire.StatusFailed:
			failed++
			if _, err := os.Lstat(filepath.Join(dir, p)); o.Want.Entry.Type == wire.TypeReg && !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("%s failed but exists (stat: %v)", p, err)
			}
		case wire.StatusFetched:
			if o.Want.Entry.Type == wire.TypeReg {
				if err := testenv.CheckTree(dir, fixtures.GoTree.Layers[0].Files, []string{p}); err != nil {
					t.Error(err)
				}
			}
		}
	}
	if failed == 0 {
		t.Error("nothing failed after cancel")
	}
	noTemp(t, dir)
}

func TestSamePathTwiceLastWins(t *testing.T) {
	b := open(t, fixtures.GoTree.Layers[0])
	l := readTOC(t, b)
	e, _ := l.TOC.Lookup("usr/local/go/VERSION")
	first, second := &fetch.Want{Layer: l, Entry: e, Tag: 1}, &fetch.Want{Layer: l, Entry: e, Tag: 2}
	root, err := os.OpenRoot(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	got := map[any]string{}
	fetch.Run(context.Background(), root, []*fetch.Want{first, second}, fetch.Options{}, func(o *fetch.Outcome) {
		got[o.Want.Tag] = o.Status
	})
	if got[1] != wire.StatusSkipped || got[2] != wire.StatusFetched {
		t.Errorf("statuses %v, want 1 skipped and 2 fetched", got)
	}
}

func TestIdenticalContentsDownloadedOnce(t *testing.T) {
	b := open(t, fixtures.GoTree.Layers[0])
	l := readTOC(t, b)
	// Two files of the Go tree with the same contents.
	var ws []*fetch.Want
	for _, n := range []string{"usr/local/go/src/net/cgo_netbsd.go", "usr/local/go/src/net/cgo_openbsd.go"} {
		e, ok := l.TOC.Lookup(n)
		if !ok {
			t.Fatalf("%s not in TOC", n)
		}
		ws = append(ws, &fetch.Want{Layer: l, Entry: e})
	}
	if ws[0].Entry.Digest != ws[1].Entry.Digest {
		t.Fatalf("fixture changed: %s and %s differ", ws[0].Entry.Name, ws[1].Entry.Name)
	}
	dir := t.TempDir()
	out := run(t, context.Background(), dir, ws, fetch.Options{MaxGap: -1})
	for p, o := range out {
		if o.Status != wire.StatusFetched || o.Verified != "toc" {
			t.Errorf("%s: %s %q: %v", p, o.Status, o.Verified, o.Err)
		}
	}
	if err := testenv.CheckTree(dir, fixtures.GoTree.Layers[0].Files, []string{ws[0].Entry.Name, ws[1].Entry.Name}); err != nil {
		t.Error(err)
	}
	if got := b.requests.Load(); got != 1 {
		t.Errorf("%d requests for two files with the same contents, want 1", got)
	}
}

func TestCopyOfAFailedFileFails(t *testing.T) {
	b := open(t, fixtures.GoTree.Layers[0])
	l := readTOC(t, b)
	names := []string{"usr/local/go/src/net/cgo_netbsd.go", "usr/local/go/src/net/cgo_openbsd.go"}
	var ws []*fetch.Want
	for _, n := range names {
		e, ok := l.TOC.Lookup(n)
		if !ok {
			t.Fatalf("%s not in TOC", n)
		}
		ws = append(ws, &fetch.Want{Layer: l, Entry: e})
	}
	// The right contents are already under the downloaded file's name,
	// from an earlier run: the copy must not be made from them when this
	// run's download fails.
	dir := t.TempDir()
	if o := run(t, context.Background(), dir, ws[:1], fetch.Options{})[names[0]]; o.Status != wire.StatusFetched {
		t.Fatalf("first run: %s: %v", o.Status, o.Err)
	}
	c := ws[0].Entry.Chunks[0]
	b.fault = func(call, off, n int64, body []byte) ([]byte, error) {
		if off <= c.Offset && c.End <= off+n {
			body = bytes.Clone(body)
			body[c.Offset-off+20] ^= 0x55
		}
		return body, nil
	}
	out := run(t, context.Background(), dir, ws, fetch.Options{Tries: 1, Refetch: true})
	for _, n := range names {
		if o := out[n]; o.Status != wire.StatusFailed {
			t.Errorf("%s: %s (%v), want failed", n, o.Status, o.Err)
		}
	}
	if err := out[names[1]].Err; err == nil || !strings.Contains(err.Error(), "which failed") {
		t.Errorf("copy error %v, want one naming the failed download", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, names[1])); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the copy landed under its final name (stat: %v)", err)
	}
	noTemp(t, dir)
}

func TestChunksInTheTOCTailAreNotDownloadedAgain(t *testing.T) {
	b := open(t, fixtures.GoTree.Layers[0])
	l := readTOC(t, b)
	// The last files before the TOC were read along with it.
	var ws []*fetch.Want
	for _, e := range l.TOC.Entries {
		if e.Type == wire.TypeReg && len(e.Chunks) > 0 && e.Chunks[0].Offset >= l.TOC.TailStart {
			ws = append(ws, &fetch.Want{Layer: l, Entry: e})
		}
	}
	if len(ws) == 0 {
		t.Fatal("fixture changed: no file lies in the TOC tail")
	}
	dir := t.TempDir()
	out := run(t, context.Background(), dir, ws, fetch.Options{})
	var names []string
	for p, o := range out {
		if o.Status != wire.StatusFetched {
			t.Errorf("%s: %s: %v", p, o.Status, o.Err)
		}
		names = append(names, p)
	}
	if err := testenv.CheckTree(dir, fixtures.GoTree.Layers[0].Files, names); err != nil {
		t.Error(err)
	}
	if got := b.requests.Load(); got != 0 {
		t.Errorf("%d requests for %d files in the tail already read, want 0", got, len(ws))
	}
}

// gzipMember compresses data as one gzip member.
func gzipMember(t *testing.T, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	if _, err := zw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// handmadeBlob lays out members, then a TOC member holding entries, then
// the eStargz footer; members[i] starts at the returned offsets[i].
func handmadeBlob(t *testing.T, members [][]byte, entries func(offsets []int64) []*estargz.TOCEntry) []byte {
	t.Helper()
	var blob []byte
	var offsets []int64
	for _, m := range members {
		offsets = append(offsets, int64(len(blob)))
		blob = append(blob, m...)
	}
	js, err := json.Marshal(estargz.JTOC{Version: 1, Entries: entries(offsets)})
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	tw := tar.NewWriter(zw)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: estargz.TOCTarName, Size: int64(len(js)), Mode: 0o444}); err != nil {
		t.Fatal(err)
	}
	tw.Write(js)
	tw.Close()
	zw.Close()
	tocOff := len(blob)
	blob = append(blob, b.Bytes()...)
	return append(blob, estargz.CreateGzipFooter([]byte(fmt.Sprintf("%016xSTARGZ", tocOff)))...)
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// Two chunks of one file may point at the same compressed bytes (a
// deduplicating builder could write that): each lands at its own offset.
func TestChunksSharingAMember(t *testing.T) { bothDecoders(t, testChunksSharingAMember) }

func testChunksSharingAMember(t *testing.T) {
	part := []byte("the same four KiB, twice over; ")
	whole := append(bytes.Clone(part), part...)
	data := handmadeBlob(t, [][]byte{gzipMember(t, []byte("padding")), gzipMember(t, part)}, func(off []int64) []*estargz.TOCEntry {
		n := int64(len(part))
		return []*estargz.TOCEntry{
			{Name: "f", Type: "reg", Size: 2 * n, Mode: 0o644, Offset: off[1], ChunkSize: n, ChunkDigest: sha(part), Digest: sha(whole)},
			{Name: "f", Type: "chunk", Offset: off[1], ChunkOffset: n, ChunkSize: n, ChunkDigest: sha(part)},
		}
	})
	b := &blobFile{data: data}
	l := readTOC(t, b)
	dir := t.TempDir()
	out := run(t, context.Background(), dir, wantAll(l, ""), fetch.Options{})
	if o := out["f"]; o == nil || o.Status != wire.StatusFetched || o.Verified != "toc" {
		t.Fatalf("outcome %+v, want fetched and verified", o)
	}
	got, err := os.ReadFile(filepath.Join(dir, "f"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, whole) {
		t.Errorf("f holds %q, want %q", got, whole)
	}
}

// TestMemberAcrossTheTOCTail: of a member that starts before the tail
// read with the TOC and runs into it, only the bytes before the tail are
// downloaded (here, with the file's chunks before it).
func TestMemberAcrossTheTOCTail(t *testing.T) {
	b := open(t, fixtures.GoTree.Layers[0])
	l := readTOC(t, b)
	var ws []*fetch.Want
	var from int64 = -1
	for _, e := range l.TOC.Entries {
		if e.Type != wire.TypeReg {
			continue
		}
		for _, c := range e.Chunks {
			if c.Offset < l.TOC.TailStart && c.End > l.TOC.TailStart {
				ws = append(ws, &fetch.Want{Layer: l, Entry: e})
				from, _ = e.CompressedSpan() // its chunks lie one after another
				break
			}
		}
	}
	if len(ws) != 1 {
		t.Fatalf("fixture changed: %d members across the TOC tail's start, want 1", len(ws))
	}
	dir := t.TempDir()
	for p, o := range run(t, context.Background(), dir, ws, fetch.Options{}) {
		if o.Status != wire.StatusFetched {
			t.Errorf("%s: %s: %v", p, o.Status, o.Err)
		}
	}
	if err := testenv.CheckTree(dir, fixtures.GoTree.Layers[0].Files, []string{ws[0].Entry.Name}); err != nil {
		t.Error(err)
	}
	if got, want := b.bytes.Load(), l.TOC.TailStart-from; got > want {
		t.Errorf("downloaded %d bytes, want only the %d before the tail", got, want)
	}
}

// bigFile returns the fixture's file of most compressed bytes, of several
// chunks.
func bigFile(t *testing.T, l *fetch.Layer) *toc.Entry {
	t.Helper()
	var big *toc.Entry
	var most int64
	for _, e := range l.TOC.Entries {
		if off, end := e.CompressedSpan(); e.Type == wire.TypeReg && end-off > most {
			big, most = e, end-off
		}
	}
	if big == nil || len(big.Chunks) < 3 {
		t.Fatal("fixture changed: no file of several chunks")
	}
	return big
}

// TestLargeMembers: the members of a large file's chunks come out right
// whichever way they are decoded, and with libdeflate, whole.
func TestLargeMembers(t *testing.T) { bothDecoders(t, testLargeMembers) }

func testLargeMembers(t *testing.T) {
	b := open(t, fixtures.GoTree.Layers[0])
	l := readTOC(t, b)
	e := bigFile(t, l)
	before := fetch.LargeMembers()
	dir := t.TempDir()
	// One downloader: the shared output buffer is always free (with
	// more, a member that finds it taken streams instead).
	for p, o := range run(t, context.Background(), dir, []*fetch.Want{{Layer: l, Entry: e}}, fetch.Options{Jobs: 1}) {
		if o.Status != wire.StatusFetched {
			t.Errorf("%s: %s: %v", p, o.Status, o.Err)
		}
	}
	if err := testenv.CheckTree(dir, fixtures.GoTree.Layers[0].Files, []string{e.Name}); err != nil {
		t.Error(err)
	}
	n := fetch.LargeMembers() - before
	if t.Name() == "TestLargeMembers/libdeflate" && n < int64(len(e.Chunks))-1 {
		t.Errorf("%d of the %d chunks' members decoded whole", n, len(e.Chunks))
	}
	// A member of it corrupt: the file fails after the retries, and
	// nothing lands under its name.
	c := e.Chunks[1]
	b.fault = func(call, off, n int64, body []byte) ([]byte, error) {
		if off <= c.Offset && c.End <= off+n {
			body = bytes.Clone(body)
			body[c.Offset-off+100] ^= 0x55
		}
		return body, nil
	}
	dir = t.TempDir()
	o := run(t, context.Background(), dir, []*fetch.Want{{Layer: l, Entry: e}}, fetch.Options{Jobs: 4, Tries: 2})[e.Name]
	if o.Status != wire.StatusFailed || o.Err == nil {
		t.Fatalf("corrupt member: status %s, err %v; want failed", o.Status, o.Err)
	}
	if _, err := os.Lstat(filepath.Join(dir, e.Name)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a file with a corrupt member landed under its name (stat: %v)", err)
	}
	noTemp(t, dir)
}
