package fetch_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/stargz-get/stargz-get/internal/testenv"
	"github.com/stargz-get/stargz-get/pkg/fetch"
	"github.com/stargz-get/stargz-get/pkg/wire"
)

// zstd:chunked layers of both layouts come out byte for byte, moving each
// data byte at most once; the sparse file's zeros chunks become holes.
func TestZstdChunkedWholeLayer(t *testing.T) {
	for _, tc := range []struct {
		name  string
		layer *testenv.Layer
		jobs  int
	}{
		{"containers -j 1", fixtures.ZstdChunked.Layers[0], 1},
		{"containers -j 8", fixtures.ZstdChunked.Layers[0], 8},
		{"estargz -j 4", fixtures.ZstdEStargz.Layers[0], 4},
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
			}
			if err := testenv.CheckTree(dir, tc.layer.Files, nil); err != nil {
				t.Error(err)
			}
			noTemp(t, dir)
			if got, max := b.bytes.Load(), l.TOC.Offset; got > max {
				t.Errorf("downloaded %d bytes, more than the %d bytes of data before the TOC", got, max)
			}
			if tc.layer == fixtures.ZstdChunked.Layers[0] && holesWork(t) {
				var st syscall.Stat_t
				if err := syscall.Stat(filepath.Join(dir, testenv.SparseName), &st); err != nil {
					t.Fatal(err)
				}
				if used := st.Blocks * 512; used > st.Size-(2<<20) {
					t.Errorf("%s uses %d bytes on disk for %d bytes: its zeros chunks were written, not left as holes", testenv.SparseName, used, st.Size)
				}
			}
		})
	}
}

// holesWork reports whether the temp directory's file system keeps holes.
func holesWork(t *testing.T) bool {
	f, err := os.Create(filepath.Join(t.TempDir(), "hole"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(8 << 20); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	return syscall.Fstat(int(f.Fd()), &st) == nil && st.Blocks == 0
}

// A zstd frame with wrong bytes never lands: bytes that break the frame
// fail decoding, a valid frame of other bytes fails the chunk digest.
func TestZstdCorruptFrameNeverLands(t *testing.T) {
	const name = "usr/local/go/src/bufio/bufio.go"
	for _, tc := range []struct {
		desc    string
		corrupt func(frame []byte, size int64)
		want    string
	}{
		{"flipped byte", func(frame []byte, size int64) { frame[len(frame)/2] ^= 0x55 }, "zstd frame at"},
		{"valid frame of other bytes", func(frame []byte, size int64) {
			zw, _ := zstd.NewWriter(nil)
			other := zw.EncodeAll(bytes.Repeat([]byte("x"), int(size)), nil)
			copy(frame, other) // the rest of the span is skipped
		}, "TOC says"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			b := open(t, fixtures.ZstdChunked.Layers[0])
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
			if o.Status != wire.StatusFailed || o.Err == nil || !strings.Contains(o.Err.Error(), tc.want) {
				t.Fatalf("corrupt file: status %s, err %v; want failed saying %q", o.Status, o.Err, tc.want)
			}
			if _, err := os.Lstat(filepath.Join(dir, name)); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("corrupt file landed under its final name (stat: %v)", err)
			}
			noTemp(t, dir)
		})
	}
}
