package cache

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
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
