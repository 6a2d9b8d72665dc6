package cache

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func writePack(t *testing.T, c *Cache, entries [][]byte) {
	t.Helper()
	before := len(c.Packed("chunk"))
	p, err := c.NewPack("chunk")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if err := p.Add(digestOf(e), e); err != nil {
			t.Fatal(err)
		}
	}
	if len(c.Packed("chunk")) != before {
		t.Fatal("entries visible before Close")
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestPack(t *testing.T) {
	c, warnings := open(t)
	entries := [][]byte{[]byte("first chunk"), []byte("second chunk"), bytes.Repeat([]byte("3"), 5000)}
	writePack(t, c, entries)
	locs := c.Packed("chunk")
	if len(locs) != 3 {
		t.Fatalf("Packed = %v, want 3 entries", locs)
	}
	for _, e := range entries {
		got, err := c.LoadPacked("chunk", locs[digestOf(e)], digestOf(e))
		if err != nil || !bytes.Equal(got, e) {
			t.Fatalf("LoadPacked = %q, %v; want %q", got, err, e)
		}
	}
	if err := new(Pack).Add("md5:x", nil); err == nil {
		t.Fatal("Add took a key that is not a sha256 digest")
	}

	// A damaged entry is dropped from the index; the others stay.
	loc := locs[digestOf(entries[1])]
	pack := filepath.Join(c.Dir(), "chunk", loc.Pack)
	b, _ := os.ReadFile(pack)
	b[loc.Off] ^= 1
	os.WriteFile(pack, b, 0o644)
	if got, err := c.LoadPacked("chunk", loc, digestOf(entries[1])); got != nil || !errors.Is(err, ErrDamaged) {
		t.Fatalf("LoadPacked of a damaged entry = %q, %v; want ErrDamaged", got, err)
	}
	locs = c.Packed("chunk")
	if _, ok := locs[digestOf(entries[1])]; ok || len(locs) != 2 {
		t.Fatalf("after the damage, Packed = %v; want the 2 others", locs)
	}
	if got, err := c.LoadPacked("chunk", locs[digestOf(entries[2])], digestOf(entries[2])); err != nil || !bytes.Equal(got, entries[2]) {
		t.Fatalf("another entry of the pack: %q, %v", got, err)
	}
	if len(*warnings) != 0 {
		t.Fatalf("warnings: %q", *warnings)
	}

	// A damaged index removes the pack, with a warning.
	idx := filepath.Join(c.Dir(), "chunk", loc.Pack[:len(loc.Pack)-len(packExt)]+indexExt)
	ib, _ := os.ReadFile(idx)
	os.WriteFile(idx, append(ib, "sha256:00 0 1\n"...), 0o644)
	if locs := c.Packed("chunk"); len(locs) != 0 {
		t.Fatalf("Packed with a damaged index = %v", locs)
	}
	if _, err := os.Stat(pack); !errors.Is(err, os.ErrNotExist) || len(*warnings) != 1 {
		t.Fatalf("pack of a damaged index kept (%v), warnings %q", err, *warnings)
	}
}

func TestPacksEvictedWhole(t *testing.T) {
	c, _ := open(t, WithKindMaxBytes("chunk", 30000))
	for i := range 10 {
		writePack(t, c, [][]byte{bytes.Repeat([]byte{byte(i)}, 4000), []byte(fmt.Sprint("entry ", i))})
	}
	ents, _ := os.ReadDir(filepath.Join(c.Dir(), "chunk"))
	packs, idxs := 0, 0
	for _, e := range ents {
		switch filepath.Ext(e.Name()) {
		case packExt:
			packs++
		case indexExt:
			idxs++
		}
	}
	if packs != idxs || packs >= 10 || packs == 0 {
		t.Fatalf("%d packs and %d indexes left of 10, cap 30000", packs, idxs)
	}
	if n := len(c.Packed("chunk")); n != 2*packs {
		t.Fatalf("Packed has %d entries, want %d", n, 2*packs)
	}
}

func TestSlots(t *testing.T) {
	c, _ := open(t)
	p, err := c.NewPack("chunk")
	if err != nil {
		t.Fatal(err)
	}
	var kept [][]byte
	done := make(chan struct{})
	for i := range 8 {
		data := bytes.Repeat([]byte{byte('a' + i)}, 1000+i)
		s, err := p.Reserve(int64(len(data)))
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			defer func() { done <- struct{}{} }()
			s.WriteAt(data[:500], 0)
			s.WriteAt(data[500:], 500)
			if i%4 == 3 {
				s.Abort() // as a chunk that failed its digest
				return
			}
			s.Commit(digestOf(data))
		}()
		if i%4 != 3 {
			kept = append(kept, data)
		}
	}
	for range 8 {
		<-done
	}
	if err := p.Wait(); err != nil {
		t.Fatal(err)
	}
	locs := c.Packed("chunk")
	if len(locs) != len(kept) {
		t.Fatalf("Packed has %d entries, want %d", len(locs), len(kept))
	}
	for _, d := range kept {
		got, err := c.LoadPacked("chunk", locs[digestOf(d)], digestOf(d))
		if err != nil || !bytes.Equal(got, d) {
			t.Fatalf("LoadPacked = %d bytes, %v", len(got), err)
		}
	}
}

// A write past a slot's room is dropped, and the slot is then not
// recorded by Commit: an entry short of bytes is never indexed.
func TestSlotOverflowNotCommitted(t *testing.T) {
	c, _ := open(t)
	p, err := c.NewPack("chunk")
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("z"), 100)
	s, err := p.Reserve(50)
	if err != nil {
		t.Fatal(err)
	}
	s.WriteAt(data, 0)
	s.Commit(digestOf(data))
	ok := bytes.Repeat([]byte("y"), 50)
	s2, err := p.Reserve(50)
	if err != nil {
		t.Fatal(err)
	}
	s2.WriteAt(ok, 0)
	s2.Commit(digestOf(ok))
	if err := p.Wait(); err != nil {
		t.Fatal(err)
	}
	locs := c.Packed("chunk")
	if _, found := locs[digestOf(data)]; found || len(locs) != 1 {
		t.Errorf("Packed = %v, want only the slot that fit", locs)
	}
}

// encodings returns data as a gzip member and as a zstd frame, written by
// the libraries' own writers.
func encodings(t *testing.T, data []byte) map[string][]byte {
	t.Helper()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(data)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	return map[string][]byte{EncodingGzip: gz.Bytes(), EncodingZstd: enc.EncodeAll(data, nil)}
}

// Entries kept encoded read back as the first bytes they decode to (as
// many as the index says), checked against the digest of those; a damaged
// one, one decoding to fewer bytes than its index says, or one whose
// decoded bytes fail the digest is never returned and is dropped from its
// pack's index.
func TestEncodedSlots(t *testing.T) {
	data := bytes.Repeat([]byte("stargz-get keeps chunks as downloaded. "), 2000)
	other := bytes.Repeat([]byte("other "), 100)
	for enc, stored := range encodings(t, data) {
		t.Run(enc, func(t *testing.T) {
			c, _ := open(t)
			p, err := c.NewPack("chunk")
			if err != nil {
				t.Fatal(err)
			}
			commit := func(stored []byte, dgst string, rawSize int64) {
				s, err := p.Reserve(int64(len(stored)))
				if err != nil {
					t.Fatal(err)
				}
				s.WriteAt(stored, 0)
				s.CommitEncoded(dgst, enc, rawSize)
			}
			flipped := bytes.Clone(stored)
			flipped[len(flipped)/2] ^= 0xff
			commit(stored, digestOf(data), int64(len(data)))
			commit(flipped, "sha256:"+strings.Repeat("1", 64), int64(len(data)))
			commit(stored, digestOf(data[:1000]), 1000)                           // a prefix
			commit(stored, "sha256:"+strings.Repeat("2", 64), int64(len(data))-1) // the prefix has another digest
			commit(stored, "sha256:"+strings.Repeat("3", 64), int64(len(data))+1) // decodes to fewer
			commit(stored, digestOf(other), int64(len(data)))                     // to other bytes
			if err := p.Wait(); err != nil {
				t.Fatal(err)
			}
			locs := c.Packed("chunk")
			loc := locs[digestOf(data)]
			if loc.Encoding != enc || loc.Size != int64(len(stored)) || loc.RawSize != int64(len(data)) {
				t.Fatalf("Packed gives %+v for the entry, want encoding %s, %d bytes kept for %d", loc, enc, len(stored), len(data))
			}
			got, err := c.LoadPacked("chunk", loc, digestOf(data))
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("LoadPacked = %d bytes, %v; want the %d bytes encoded", len(got), err, len(data))
			}
			for _, bad := range []string{"sha256:" + strings.Repeat("1", 64), "sha256:" + strings.Repeat("2", 64), "sha256:" + strings.Repeat("3", 64), digestOf(other)} {
				got, err := c.LoadPacked("chunk", locs[bad], bad)
				if got != nil || !errors.Is(err, ErrDamaged) {
					t.Errorf("LoadPacked of a bad entry = %d bytes, %v; want ErrDamaged", len(got), err)
				}
			}
			if got, err := c.LoadPacked("chunk", locs[digestOf(data[:1000])], digestOf(data[:1000])); err != nil || !bytes.Equal(got, data[:1000]) {
				t.Errorf("LoadPacked of the prefix entry = %d bytes, %v; want its first 1000", len(got), err)
			}
			if left := c.Packed("chunk"); len(left) != 2 {
				t.Errorf("after the bad entries were read, the index holds %d entries, want the 2 good ones", len(left))
			}
		})
	}
}

// Packs written before entries could be kept encoded (index magic v1)
// are still read.
func TestPackIndexV1(t *testing.T) {
	c, _ := open(t)
	dir := c.Dir()
	p, err := c.NewPack("chunk")
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("written by an earlier version")
	if err := p.Add(digestOf(data), data); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	idx, err := filepath.Glob(filepath.Join(dir, "chunk", "pack-*"+indexExt))
	if err != nil || len(idx) != 1 {
		t.Fatalf("pack indexes: %v, %v", idx, err)
	}
	b, err := os.ReadFile(idx[0])
	if err != nil {
		t.Fatal(err)
	}
	lines, err := decodePackIndex(b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := writeSealed(idx[0], packMagicV1, lines, nil); err != nil {
		t.Fatal(err)
	}
	loc, ok := c.Packed("chunk")[digestOf(data)]
	if !ok {
		t.Fatal("the entry of a v1 pack index is not found")
	}
	if got, err := c.LoadPacked("chunk", loc, digestOf(data)); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("LoadPacked = %q, %v", got, err)
	}
}
