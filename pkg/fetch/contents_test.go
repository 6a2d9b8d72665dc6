package fetch_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"sync"
	"testing"

	"github.com/containerd/stargz-snapshotter/estargz"

	"github.com/stargz-get/stargz-get/pkg/fetch"
	"github.com/stargz-get/stargz-get/pkg/toc"
)

// heldChunks is a ChunkSource counting the bytes it has handed out that
// the writer has not yet taken: what Contents holds in memory.
type heldChunks struct {
	inner fetch.ChunkSource
	mu    sync.Mutex
	held  int64
	max   int64
	calls int
}

func (h *heldChunks) ReadChunks(ctx context.Context, l *fetch.Layer, cs []toc.Chunk, dst [][]byte) error {
	if err := h.inner.ReadChunks(ctx, l, cs, dst); err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls++
	for _, c := range cs {
		h.held += c.Size
	}
	h.max = max(h.max, h.held)
	return nil
}

func (h *heldChunks) Write(p []byte) (int, error) {
	h.mu.Lock()
	h.held -= int64(len(p))
	h.mu.Unlock()
	return len(p), nil
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func TestContentsInOrderBounded(t *testing.T) { bothDecoders(t, testContentsInOrderBounded) }

func testContentsInOrderBounded(t *testing.T) {
	l := readTOC(t, open(t, fixtures.GoTree.Layers[0]))
	e, ok := l.TOC.Lookup("usr/local/go/pkg/tool/compile")
	if !ok || len(e.Chunks) < 3 {
		t.Fatalf("fixture: compile should have several chunks, has %d", len(e.Chunks))
	}
	net, _ := l.TOC.Lookup("usr/local/go/src/net/net.go")
	empty, _ := l.TOC.Lookup("usr/local/go/empty")
	const window = 1 << 20
	opts := fetch.Options{Jobs: 4, Window: window}
	held := &heldChunks{inner: fetch.RemoteChunks(opts)}
	opts.Chunks = held
	var out bytes.Buffer
	var starts []int
	files := []fetch.File{{Layer: l, Entry: net}, {Layer: l, Entry: empty}, {Layer: l, Entry: e}}
	err := fetch.Contents(context.Background(), files, opts, func(i int) error {
		starts = append(starts, out.Len())
		return nil
	}, writers(&out, held))
	if err != nil {
		t.Fatal(err)
	}
	if len(starts) != 3 || starts[1] != int(net.Size) || starts[2] != int(net.Size) {
		t.Errorf("begin called at %v, want [0 %d %d]", starts, net.Size, net.Size)
	}
	if got := sum(out.Bytes()[starts[2]:]); got != e.Digest {
		t.Errorf("compile: digest %s, TOC says %s", got, e.Digest)
	}
	if got := sum(out.Bytes()[:starts[1]]); got != net.Digest {
		t.Errorf("net.go: digest %s, TOC says %s", got, net.Digest)
	}
	// One chunk larger than the window is still read, alone.
	var biggest int64
	for _, c := range e.Chunks {
		biggest = max(biggest, c.Size)
	}
	if held.max > max(window, biggest) {
		t.Errorf("held %d bytes at most, over the window of %d (largest chunk %d)", held.max, window, biggest)
	}
}

func writers(ws ...interface{ Write([]byte) (int, error) }) *multi { return &multi{ws} }

type multi struct {
	ws []interface{ Write([]byte) (int, error) }
}

func (m *multi) Write(p []byte) (int, error) {
	for _, w := range m.ws {
		if _, err := w.Write(p); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

func TestContentsCorruptChunk(t *testing.T) { bothDecoders(t, testContentsCorruptChunk) }

func testContentsCorruptChunk(t *testing.T) {
	// A byte of the last file's last chunk's member flipped, in every
	// answer: the files and chunks before it are written, then the stream
	// stops. The first file is small (its member is decoded whole where
	// libdeflate is at hand); the corrupt one large (streamed) or small.
	for _, tc := range []struct{ desc, first, corrupt string }{
		{"large member", "usr/local/go/src/net/net.go", "usr/local/go/pkg/tool/compile"},
		{"small member", "usr/local/go/src/net/net.go", "usr/local/go/src/encoding/json/encode.go"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			b := open(t, fixtures.GoTree.Layers[0])
			l := readTOC(t, b)
			l.TOC.Tail = nil // every chunk from the (corrupting) server
			first, ok1 := l.TOC.Lookup(tc.first)
			e, ok2 := l.TOC.Lookup(tc.corrupt)
			if !ok1 || !ok2 {
				t.Fatalf("fixture: %s or %s missing", tc.first, tc.corrupt)
			}
			last := e.Chunks[len(e.Chunks)-1]
			b.fault = func(_ int64, off, n int64, body []byte) ([]byte, error) {
				if at := last.Offset + 20; at >= off && at < off+n {
					body = bytes.Clone(body)
					body[at-off] ^= 0xff
				}
				return body, nil
			}
			var out bytes.Buffer
			files := []fetch.File{{Layer: l, Entry: first}, {Layer: l, Entry: e}}
			err := fetch.Contents(context.Background(), files, fetch.Options{Jobs: 4, Tries: 2}, func(int) error { return nil }, &out)
			if err == nil {
				t.Fatal("corrupt chunk: no error")
			}
			if !errors.Is(err, fetch.ErrDigest) && !bytes.Contains([]byte(err.Error()), []byte("decompressing")) {
				t.Errorf("error %v: want a digest or decompression error", err)
			}
			if int64(out.Len()) > first.Size+last.FileOffset {
				t.Errorf("%d bytes written, past the corrupt chunk at %d of the second file", out.Len(), last.FileOffset)
			}
			if int64(out.Len()) < first.Size {
				t.Errorf("%d bytes written, less than the %d of the first file", out.Len(), first.Size)
			}
		})
	}
}

func TestContentsCancelled(t *testing.T) {
	l := readTOC(t, open(t, fixtures.GoTree.Layers[0]))
	e, _ := l.TOC.Lookup("usr/local/go/pkg/tool/compile")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var out bytes.Buffer
	err := fetch.Contents(ctx, []fetch.File{{Layer: l, Entry: e}}, fetch.Options{}, func(int) error { return nil }, &out)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: got %v", err)
	}
	if out.Len() != 0 {
		t.Errorf("cancelled: %d bytes written", out.Len())
	}
}

// TestWriteTarHardlinks: a hardlink stays a link when its target is in
// the stream before it, and is written with the target's contents when
// it is not, so that the archive unpacks alone; xattrs become PAX records.
func TestWriteTarHardlinks(t *testing.T) {
	l := readTOC(t, open(t, fixtures.GoTree.Layers[0]))
	net, _ := l.TOC.Lookup("usr/local/go/src/net/net.go")
	link, _ := l.TOC.Lookup("usr/local/go/bin/hardlinked")
	read := func(ws ...*fetch.Want) []*tar.Header {
		var buf bytes.Buffer
		if err := fetch.WriteTar(context.Background(), &buf, ws, fetch.Options{}); err != nil {
			t.Fatal(err)
		}
		var hs []*tar.Header
		tr := tar.NewReader(&buf)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				return hs
			}
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(tr)
			if h.Typeflag == tar.TypeReg && sum(b) != net.Digest {
				t.Errorf("%s: contents %s, want net.go's %s", h.Name, sum(b), net.Digest)
			}
			hs = append(hs, h)
		}
	}
	hs := read(&fetch.Want{Layer: l, Entry: net}, &fetch.Want{Layer: l, Entry: link})
	if len(hs) != 2 || hs[1].Typeflag != tar.TypeLink || hs[1].Linkname != net.Name {
		t.Errorf("target first: got %+v, want a hardlink to %s", hs[1], net.Name)
	}
	hs = read(&fetch.Want{Layer: l, Entry: link})
	if len(hs) != 1 || hs[0].Typeflag != tar.TypeReg || hs[0].Size != net.Size {
		t.Errorf("target absent: got %+v, want a regular file of %d bytes", hs[0], net.Size)
	}
	x := &toc.Entry{TOCEntry: &estargz.TOCEntry{Name: "f", Type: "reg", Mode: 0o4755, Xattrs: map[string][]byte{"user.a": []byte("1"), "security.capability": {0, 1}}}, Name: "f"}
	h, err := fetch.TarHeader(x)
	if err != nil {
		t.Fatal(err)
	}
	if h.PAXRecords["SCHILY.xattr.user.a"] != "1" || h.PAXRecords["SCHILY.xattr.security.capability"] != "\x00\x01" || h.Mode != 0o4755 {
		t.Errorf("xattrs and mode: %+v", h)
	}
}
