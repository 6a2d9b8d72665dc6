package testscripts

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/rogpeppe/go-internal/testscript"

	"github.com/stargz-get/stargz-get/internal/testenv"
	"github.com/stargz-get/stargz-get/pkg/toc"
)

// theTags is the tag pair (testenv.TagPair), pushed to the anonymous
// registry as fixtures/tags:v1 and :v2 (reached through the COUNT*
// proxies), for the chunk cache scripts; its fixtures are "tagsv1" and
// "tagsv2".
var theTags *testenv.TagPair

// setupTags builds and pushes the tag pair.
func setupTags(ctx context.Context, host string) error {
	p, err := testenv.BuildTagPair(filepath.Join(os.TempDir(), "stargz-get-fixtures"))
	if err != nil {
		return err
	}
	for _, img := range []*testenv.Image{p.V1, p.V2} {
		if err := testenv.PushImage(ctx, host, img); err != nil {
			return err
		}
	}
	theTags = p
	return nil
}

// tagsImage returns the tag pair's image of a fixture name, or nil.
func tagsImage(name string) *testenv.Image {
	switch name {
	case "tagsv1":
		return theTags.V1
	case "tagsv2":
		return theTags.V2
	}
	return nil
}

// openTOC opens the TOC of a one-layer fixture image with the reference
// reader.
func openTOC(ts *testscript.TestScript, img *testenv.Image) (*estargz.Reader, *testenv.Layer, func()) {
	l := img.Layers[0]
	f, err := l.Open()
	ts.Check(err)
	r, err := estargz.Open(io.NewSectionReader(f, 0, l.Size))
	ts.Check(err)
	return r, l, func() { f.Close() }
}

// chunkSpan is a chunk's member in a layer blob.
type chunkSpan struct{ off, end int64 }

// chunksOf returns the chunks of the regular files of an eStargz layer by
// chunk digest, with the span of the gzip member holding each (a member
// ends where the next one in the blob starts, or at the TOC).
func chunksOf(ts *testscript.TestScript, img *testenv.Image) (map[string]chunkSpan, int64) {
	r, l, done := openTOC(ts, img)
	defer done()
	tocOff, _, err := estargz.OpenFooter(io.NewSectionReader(mustOpen(ts, l), 0, l.Size))
	ts.Check(err)
	var offs []int64
	byDigest := map[string]int64{}
	for _, f := range l.Files {
		if f.Type != "reg" || f.Size == 0 {
			continue
		}
		for off := int64(0); off < f.Size; {
			c, ok := r.ChunkEntryForOffset(f.Name, off)
			if !ok {
				ts.Fatalf("no chunk of %s at %d", f.Name, off)
			}
			byDigest[c.ChunkDigest] = c.Offset
			offs = append(offs, c.Offset)
			off = c.ChunkOffset + c.ChunkSize
		}
	}
	offs = append(offs, tocOff)
	spans := map[string]chunkSpan{}
	for d, off := range byDigest {
		end := tocOff
		for _, o := range offs {
			if o > off && o < end {
				end = o
			}
		}
		spans[d] = chunkSpan{off, end}
	}
	return spans, tocOff
}

func mustOpen(ts *testscript.TestScript, l *testenv.Layer) *os.File {
	f, err := l.Open()
	ts.Check(err)
	ts.Defer(func() { f.Close() })
	return f
}

// movedchunks PROXY FIXTURE_OLD FIXTURE_NEW
// movedchunks PROXY all FIXTURE
//
// Prints the blob bytes the COUNT* proxy PROXY has sent since the last
// moved or movedchunks, and the compressed bytes of the chunks of
// FIXTURE_NEW's layer whose digests are not in FIXTURE_OLD's, and starts
// counting again; fails unless the bytes moved are at most 1.1 times
// those chunks, plus the tail of the blob read with the TOC (the TOC and
// footer, or toc.DefaultTailBytes when that is more; chunks in it are not
// counted twice). With all, fails unless the bytes moved are at least all
// the chunks of FIXTURE's layer outside that tail.
func movedchunks(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 3 || neg {
		ts.Fatalf("usage: movedchunks PROXY FIXTURE_OLD FIXTURE_NEW")
	}
	p := theWorld.more.Counters[args[0]]
	oldImg, newImg := tagsImage(args[1]), tagsImage(args[2])
	all := args[1] == "all"
	if all {
		oldImg = newImg
	}
	if p == nil || oldImg == nil || newImg == nil {
		ts.Fatalf("usage: movedchunks PROXY FIXTURE_OLD FIXTURE_NEW (tagsv1, tagsv2)")
	}
	n := p.BlobBytes(true)
	old, _ := chunksOf(ts, oldImg)
	cur, tocOff := chunksOf(ts, newImg)
	size := newImg.Layers[0].Size
	tailStart := min(tocOff, max(0, size-toc.DefaultTailBytes))
	var changed int64
	for d, s := range cur {
		if _, ok := old[d]; (all || !ok) && s.off < tailStart {
			changed += min(s.end, tailStart) - s.off
		}
	}
	tail := size - tailStart
	if all {
		fmt.Fprintf(ts.Stdout(), "moved %d bytes; chunks %d bytes\n", n, changed)
		if n < changed {
			ts.Fatalf("moved %d blob bytes: want all %d bytes of chunks", n, changed)
		}
		return
	}
	fmt.Fprintf(ts.Stdout(), "moved %d bytes; new chunks %d bytes; tail %d bytes\n", n, changed, tail)
	if changed == 0 {
		ts.Fatalf("%s and %s share all their chunks", args[1], args[2])
	}
	if float64(n) > 1.1*float64(changed)+float64(tail) {
		ts.Fatalf("moved %d blob bytes: want at most 1.1 times the %d bytes of new chunks, plus the %d of the tail", n, changed, tail)
	}
}

// corruptchunk CACHEDIR FIXTURE PATH bytes|header
//
// Damages the cache entry of the first chunk of PATH in FIXTURE's layer,
// kept in an entry of its own (chunk/sha256-HEX, as -o - keeps them) or
// in a pack (as sg-fetch -o DIR keeps them): "bytes" flips the chunk's last
// byte and keeps the header (entry) or index (pack), which no longer match
// or still do; "header" also writes a header valid for the flipped bytes
// (entry), or moves the chunk's index line one byte on under a valid index
// checksum (pack), so that only the chunk digest the entry is kept under
// tells.
func corruptchunk(ts *testscript.TestScript, neg bool, args []string) {
	img := tagsImage(args[1])
	if len(args) != 4 || neg || img == nil || (args[3] != "bytes" && args[3] != "header") {
		ts.Fatalf("usage: corruptchunk CACHEDIR FIXTURE PATH bytes|header")
	}
	r, _, done := openTOC(ts, img)
	defer done()
	c, ok := r.ChunkEntryForOffset(args[2], 0)
	if !ok {
		ts.Fatalf("no chunk of %s", args[2])
	}
	dir := filepath.Join(ts.MkAbs(args[0]), "chunk")
	p := filepath.Join(dir, strings.Replace(c.ChunkDigest, ":", "-", 1))
	if b, err := os.ReadFile(p); err == nil {
		line, data, ok := bytes.Cut(b, []byte{'\n'})
		if !ok || len(data) == 0 {
			ts.Fatalf("%s is not a cache entry", p)
		}
		data[len(data)-1] ^= 0xff
		if args[3] == "header" {
			f := strings.Fields(string(line))
			line = []byte(fmt.Sprintf("%s %s %s %d", f[0], f[1], sha256Of(data), len(data)))
		}
		ts.Check(os.WriteFile(p, append(append(line, '\n'), data...), 0o644))
		return
	}
	idxs, _ := filepath.Glob(filepath.Join(dir, "pack-*.idx"))
	for _, ix := range idxs {
		b, err := os.ReadFile(ix)
		ts.Check(err)
		header, lines, _ := bytes.Cut(b, []byte{'\n'})
		var out []string
		found := false
		for _, l := range strings.Split(strings.TrimSuffix(string(lines), "\n"), "\n") {
			f := strings.Fields(l)
			if len(f) == 3 && f[0] == c.ChunkDigest {
				found = true
				var off, size int64
				fmt.Sscan(f[1], &off)
				fmt.Sscan(f[2], &size)
				pack := strings.TrimSuffix(ix, ".idx") + ".pack"
				data, err := os.ReadFile(pack)
				ts.Check(err)
				data[off+size-1] ^= 0xff
				ts.Check(os.WriteFile(pack, data, 0o644))
				if args[3] == "header" {
					l = fmt.Sprintf("%s %d %d", f[0], off+1, size)
				}
			}
			out = append(out, l)
		}
		if !found {
			continue
		}
		if args[3] == "header" {
			body := strings.Join(out, "\n") + "\n"
			h := strings.Fields(string(header))
			header = []byte(fmt.Sprintf("%s %s %s %s %d", h[0], h[1], h[2], sha256Of([]byte(body)), len(body)))
			ts.Check(os.WriteFile(ix, append(append(header, '\n'), body...), 0o644))
		}
		return
	}
	ts.Fatalf("no cache entry of chunk %s of %s", c.ChunkDigest, args[2])
}

// sha256Of returns "sha256:HEX" of b.
func sha256Of(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}
