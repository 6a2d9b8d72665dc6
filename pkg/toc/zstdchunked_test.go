package toc_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/stargz-get/stargz-get/internal/testenv"
	"github.com/stargz-get/stargz-get/pkg/toc"
)

// The TOCs of zstd:chunked layers written by containers/storage and by
// estargz read into the same model as eStargz's: every file of the
// ground truth with its size and digest, and chunks whose zstd frames
// decompress to bytes with the chunk's digest, covering the file.
func TestReadZstdChunked(t *testing.T) {
	for _, tc := range []struct {
		name     string
		l        *testenv.Layer
		layout   string
		annotate bool
		tail     int64 // Options.TailBytes
	}{
		{"containers annotated", fixtures.ZstdChunked.Layers[0], toc.LayoutContainers, true, 0},
		{"containers footer", fixtures.ZstdChunked.Layers[0], toc.LayoutContainers, false, 0},
		{"estargz annotated", fixtures.ZstdEStargz.Layers[0], toc.LayoutEStargz, true, 0},
		{"estargz footer", fixtures.ZstdEStargz.Layers[0], toc.LayoutEStargz, false, 0},
		// A tail read that ends after the TOC (the tar-split frame and the
		// footer follow it), and one that cuts it.
		{"containers TOC before the tail", fixtures.ZstdChunked.Layers[0], toc.LayoutContainers, false, 2000},
		{"containers TOC across the tail", fixtures.ZstdChunked.Layers[0], toc.LayoutContainers, false, 16000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := load(t, tc.l)
			opts := toc.Options{TailBytes: tc.tail}
			if tc.annotate {
				opts.Zstd = toc.PositionFrom(tc.l.Annotations())
				if opts.Zstd == nil || opts.Zstd.Length == 0 {
					t.Fatalf("no position in %v", tc.l.Annotations())
				}
			}
			got, err := toc.Read(context.Background(), b, opts)
			if err != nil {
				t.Fatal(err)
			}
			if got.Format != toc.FormatZstdChunked || got.Layout != tc.layout {
				t.Errorf("format %q layout %q", got.Format, got.Layout)
			}
			if want := 1 + min(tc.tail, 1); got.Requests != int(want) {
				t.Errorf("%d requests, want %d", got.Requests, want)
			}
			if p := toc.PositionFrom(tc.l.Annotations()); got.CompressedDigest.String() != p.Checksum {
				t.Errorf("compressed TOC digest %s, annotation %s", got.CompressedDigest, p.Checksum)
			}
			if tc.l.TOCDigest != "" && got.Digest.String() != tc.l.TOCDigest {
				t.Errorf("TOC digest %s, estargz said %s", got.Digest, tc.l.TOCDigest)
			}
			multi, zeros := 0, 0
			for _, f := range tc.l.Files {
				e, ok := got.Lookup(f.Name)
				if !ok {
					t.Fatalf("%s not in TOC", f.Name)
				}
				if e.Type != f.Type || e.Mode&0o7777 != f.Mode || e.LinkName != f.LinkName {
					t.Fatalf("%s: %s %o -> %q, want %+v", f.Name, e.Type, e.Mode, e.LinkName, f)
				}
				if f.Type != "reg" {
					continue
				}
				if e.Size != f.Size || (f.Size > 0 && e.Digest != f.Digest) {
					t.Fatalf("%s: size %d digest %s, want %d %s", f.Name, e.Size, e.Digest, f.Size, f.Digest)
				}
				if len(e.Chunks) > 1 {
					multi++
				}
				h := sha256.New()
				for _, c := range e.Chunks {
					if c.Codec != toc.CodecZstd {
						t.Fatalf("%s: codec %v", f.Name, c.Codec)
					}
					if c.End <= c.Offset || c.End > got.Offset {
						t.Fatalf("%s: span %d-%d outside the data (TOC at %d)", f.Name, c.Offset, c.End, got.Offset)
					}
					if c.Zeros {
						zeros++
					}
					zr, err := zstd.NewReader(bytes.NewReader(b.data[c.Offset:c.End]))
					if err != nil {
						t.Fatal(err)
					}
					if _, err := io.CopyN(io.Discard, zr, c.InnerOffset); err != nil {
						t.Fatal(err)
					}
					ch := sha256.New()
					if _, err := io.CopyN(io.MultiWriter(h, ch), zr, c.Size); err != nil {
						t.Fatalf("%s chunk at %d: %v", f.Name, c.FileOffset, err)
					}
					zr.Close()
					if d := "sha256:" + hex.EncodeToString(ch.Sum(nil)); c.Digest != "" && d != c.Digest {
						t.Fatalf("%s chunk at %d: digest %s, TOC says %s", f.Name, c.FileOffset, d, c.Digest)
					}
				}
				if d := "sha256:" + hex.EncodeToString(h.Sum(nil)); d != f.Digest {
					t.Fatalf("%s: chunks give %s, want %s", f.Name, d, f.Digest)
				}
			}
			if multi < 3 {
				t.Errorf("%d files of several chunks, want 3 or more", multi)
			}
			if tc.layout == toc.LayoutContainers && zeros == 0 {
				t.Errorf("no zeros chunk in %s", testenv.SparseName)
			}
		})
	}
}

// Probe tells a zstd:chunked layer by its footer alone.
func TestProbeZstdChunked(t *testing.T) {
	for _, l := range []*testenv.Layer{fixtures.ZstdChunked.Layers[0], fixtures.ZstdEStargz.Layers[0]} {
		f, err := toc.Probe(context.Background(), load(t, l))
		if err != nil || f != toc.FormatZstdChunked {
			t.Errorf("%s: Probe = %q, %v", l.Digest, f, err)
		}
	}
	if _, err := toc.Probe(context.Background(), load(t, fixtures.PlainZstd.Layers[0])); !errors.Is(err, toc.ErrNotStargz) {
		t.Errorf("plain zstd: Probe error %v, want ErrNotStargz", err)
	}
}

// Bad zstd:chunked input is a clear error.
func TestReadZstdChunkedBad(t *testing.T) {
	l := fixtures.ZstdChunked.Layers[0]
	pos := func() *toc.Position { return toc.PositionFrom(l.Annotations()) }
	for _, tc := range []struct {
		name string
		data func([]byte) []byte
		opts func() toc.Options
		want string
	}{
		{"checksum mismatch", nil, func() toc.Options {
			p := pos()
			p.Checksum = "sha256:" + strings.Repeat("0", 64)
			return toc.Options{Zstd: p}
		}, "does not match the manifest-checksum annotation"},
		{"checksum mismatch by footer", nil, func() toc.Options {
			p := pos()
			p.Checksum, p.Length = "sha256:"+strings.Repeat("0", 64), 0
			return toc.Options{Zstd: p}
		}, "does not match the manifest-checksum annotation"},
		{"TOC bytes over the limit", nil, func() toc.Options { return toc.Options{Zstd: pos(), MaxTOCBytes: 100} }, "over the limit of 100"},
		{"TOC JSON over the limit", nil, func() toc.Options { return toc.Options{MaxTOCJSONBytes: 1000} }, "over the limit of 1000 bytes decompressed"},
		{"too many entries", nil, func() toc.Options { return toc.Options{MaxEntries: 10} }, "over the limit"},
		{"position outside the blob", nil, func() toc.Options {
			p := pos()
			p.Offset = l.Size + 10
			return toc.Options{Zstd: p}
		}, "outside the blob"},
		{"position off the TOC", nil, func() toc.Options {
			p := pos()
			p.Offset -= 3
			return toc.Options{Zstd: p}
		}, "no skippable frame"},
		{"truncated blob", func(b []byte) []byte { return b[:len(b)-100] }, func() toc.Options { return toc.Options{} }, "no eStargz footer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := load(t, l)
			if tc.data != nil {
				b.data = tc.data(b.data)
			}
			_, err := toc.Read(context.Background(), b, tc.opts())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one saying %q", err, tc.want)
			}
		})
	}
}

// containersBlob rebuilds the containers/storage fixture layer with its TOC
// JSON changed by edit: the frames before the TOC as the writer made them,
// then the new TOC and a footer pointing at it (as WriteZstdChunkedManifest
// writes them, without tar-split).
func containersBlob(t *testing.T, edit func(entries []map[string]any)) *blob {
	t.Helper()
	l := fixtures.ZstdChunked.Layers[0]
	b := load(t, l)
	p := toc.PositionFrom(l.Annotations())
	zr, err := zstd.NewReader(bytes.NewReader(b.data[p.Offset : p.Offset+p.Length]))
	if err != nil {
		t.Fatal(err)
	}
	var j struct {
		Version int              `json:"version"`
		Entries []map[string]any `json:"entries"`
	}
	if err := json.NewDecoder(zr).Decode(&j); err != nil {
		t.Fatal(err)
	}
	zr.Close()
	edit(j.Entries)
	js, err := json.Marshal(j)
	if err != nil {
		t.Fatal(err)
	}
	zw, _ := zstd.NewWriter(nil)
	compressed := zw.EncodeAll(js, nil)
	skippable := func(data []byte) []byte {
		h := []byte{0x50, 0x2a, 0x4d, 0x18, 0, 0, 0, 0}
		binary.LittleEndian.PutUint32(h[4:], uint32(len(data)))
		return append(h, data...)
	}
	data := append([]byte(nil), b.data[:p.Offset-8]...)
	off := uint64(len(data) + 8)
	data = append(data, skippable(compressed)...)
	footer := make([]byte, 64)
	binary.LittleEndian.PutUint64(footer[0:], off)
	binary.LittleEndian.PutUint64(footer[8:], uint64(len(compressed)))
	binary.LittleEndian.PutUint64(footer[16:], uint64(len(js)))
	binary.LittleEndian.PutUint64(footer[24:], 1)
	copy(footer[56:], "GNUlInUx")
	return &blob{data: append(data, skippable(footer)...)}
}

// A containers/storage TOC whose frames lie outside the data, overlap, or
// do not cover their file is refused, naming the entry.
func TestReadZstdChunkedHostileTOC(t *testing.T) {
	// regs returns the regular files with contents, in TOC order.
	regs := func(es []map[string]any) []map[string]any {
		var out []map[string]any
		for _, e := range es {
			if e["type"] == "reg" && e["size"] != nil {
				out = append(out, e)
			}
		}
		return out
	}
	for _, tc := range []struct {
		name string
		edit func([]map[string]any)
		want string
	}{
		{"unchanged", func([]map[string]any) {}, ""},
		{"frame outside the data", func(es []map[string]any) {
			r := regs(es)[0]
			r["offset"], r["endOffset"] = 1e12, 1e12+100
		}, "outside the layer's data"},
		{"overlapping frames", func(es []map[string]any) {
			r := regs(es)
			r[1]["offset"] = r[0]["offset"].(float64) + 1
		}, "have overlapping chunk frames"},
		{"chunks not covering the file", func(es []map[string]any) {
			for _, e := range es {
				if e["type"] == "chunk" {
					e["chunkSize"] = e["chunkSize"].(float64) + 1
					return
				}
			}
		}, "chunks"},
		{"unknown chunk type", func(es []map[string]any) {
			for _, e := range es {
				if e["type"] == "chunk" {
					e["chunkType"] = "sparkles"
					return
				}
			}
		}, `unknown chunk type "sparkles"`},
		{"chunk of another file", func(es []map[string]any) {
			for _, e := range es {
				if e["type"] == "chunk" {
					e["name"] = "elsewhere"
					return
				}
			}
		}, "not following its regular file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := toc.Read(context.Background(), containersBlob(t, tc.edit), toc.Options{})
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unchanged TOC: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one saying %q", err, tc.want)
			}
		})
	}
}
