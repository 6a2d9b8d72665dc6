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
	"sync"
	"testing"
	"time"
)

const key = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func open(t *testing.T, opts ...Option) (*Cache, *[]string) {
	t.Helper()
	var warnings []string
	var mu sync.Mutex
	opts = append(opts, WithWarnf(func(f string, a ...any) {
		mu.Lock()
		warnings = append(warnings, fmt.Sprintf(f, a...))
		mu.Unlock()
	}))
	c, err := Open(t.TempDir(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c, &warnings
}

func TestPutGet(t *testing.T) {
	c, warnings := open(t)
	if _, ok := c.Get("gzindex", key); ok || c.Has("gzindex", key) {
		t.Fatal("empty cache has an entry")
	}
	want := []byte("hello\nworld")
	if err := c.Put("gzindex", key, want); err != nil {
		t.Fatal(err)
	}
	got, ok := c.Get("gzindex", key)
	if !ok || !bytes.Equal(got, want) || !c.Has("gzindex", key) {
		t.Fatalf("Get = %q, %v; want %q", got, ok, want)
	}
	if len(*warnings) != 0 {
		t.Fatalf("warnings: %q", *warnings)
	}
	// Nothing but the entry is left (no temp files).
	names, _ := os.ReadDir(filepath.Join(c.Dir(), "gzindex"))
	if len(names) != 1 {
		t.Fatalf("files in cache: %v", names)
	}
}

func TestDamagedEntryRemoved(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func([]byte) []byte
	}{
		{"flipped byte", func(b []byte) []byte { b[len(b)-1] ^= 1; return b }},
		{"truncated", func(b []byte) []byte { return b[:len(b)-3] }},
		{"no header", func(b []byte) []byte { return []byte("plain data") }},
		{"empty", func(b []byte) []byte { return nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, warnings := open(t)
			if err := c.Put("gzindex", key, []byte("some index bytes")); err != nil {
				t.Fatal(err)
			}
			p, _ := c.path("gzindex", key)
			b, _ := os.ReadFile(p)
			if err := os.WriteFile(p, tc.damage(b), 0o644); err != nil {
				t.Fatal(err)
			}
			if got, ok := c.Get("gzindex", key); ok {
				t.Fatalf("damaged entry used: %q", got)
			}
			if _, err := os.Stat(p); !os.IsNotExist(err) {
				t.Fatalf("damaged entry not removed: %v", err)
			}
			if len(*warnings) != 1 || !strings.Contains((*warnings)[0], "damaged") {
				t.Fatalf("warnings = %q, want one about a damaged entry", *warnings)
			}
		})
	}
}

func TestEvictsLeastRecentlyUsed(t *testing.T) {
	c, _ := open(t, WithMaxBytes(3000))
	data := bytes.Repeat([]byte("x"), 900)
	keys := []string{"a", "b", "c"}
	old := time.Now().Add(-time.Hour)
	for i, k := range keys {
		if err := c.Put("k", k, data); err != nil {
			t.Fatal(err)
		}
		p, _ := c.path("k", k)
		when := old.Add(time.Duration(i) * time.Minute)
		os.Chtimes(p, when, when)
	}
	if _, ok := c.Get("k", "a"); !ok { // a is now the most recently used
		t.Fatal("a missing")
	}
	if err := c.Put("k", "d", data); err != nil { // over the cap: b goes
		t.Fatal(err)
	}
	for k, want := range map[string]bool{"a": true, "b": false, "c": true, "d": true} {
		if got := c.Has("k", k); got != want {
			t.Errorf("Has(%s) = %v, want %v", k, got, want)
		}
	}
}

func TestUnwritable(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root writes anywhere")
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o500)
	defer os.Chmod(dir, 0o700)
	c, err := Open(filepath.Join(dir, "cache"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Put("k", "a", []byte("x")); err == nil {
		t.Fatal("Put into an unwritable directory succeeded")
	}
	if _, ok := c.Get("k", "a"); ok {
		t.Fatal("Get found an entry")
	}
}

func TestFileInTheWay(t *testing.T) {
	// Works for root too: a file where the cache directory should be.
	p := filepath.Join(t.TempDir(), "cache")
	os.WriteFile(p, nil, 0o644)
	c, _ := Open(p)
	if err := c.Put("k", "a", []byte("x")); err == nil {
		t.Fatal("Put under a regular file succeeded")
	}
}

func TestBadNames(t *testing.T) {
	c, _ := open(t)
	for _, k := range []string{"../x", "a/b", "", ".hidden", "sha256:../../x"} {
		if err := c.Put("k", k, []byte("x")); err == nil {
			t.Errorf("Put(%q) succeeded", k)
		}
	}
}

func TestNil(t *testing.T) {
	var c *Cache
	if err := c.Put("k", "a", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Get("k", "a"); ok || c.Has("k", "a") || c.Dir() != "" {
		t.Fatal("nil cache holds something")
	}
	c.Remove("k", "a")
}

func TestConcurrent(t *testing.T) {
	c, warnings := open(t, WithMaxBytes(20000))
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 50 {
				k := fmt.Sprint("k", j%5)
				data := bytes.Repeat([]byte{byte('a' + j%5)}, 1000+j%5)
				if err := c.Put("k", k, data); err != nil {
					t.Error(err)
				}
				if got, ok := c.Get("k", k); ok && (len(got) != len(data) || got[0] != data[0]) {
					t.Errorf("worker %d: got %d bytes of %q", i, len(got), got[:1])
				}
			}
		}()
	}
	wg.Wait()
	if len(*warnings) != 0 {
		t.Fatalf("warnings: %q", *warnings)
	}
}

func TestContentEntries(t *testing.T) {
	c, warnings := open(t)
	data := []byte("a chunk of a file")
	sum := sha256.Sum256(data)
	dgst := "sha256:" + hex.EncodeToString(sum[:])
	if got, err := c.LoadContent("chunk", dgst); got != nil || err != nil {
		t.Fatalf("LoadContent of nothing = %q, %v", got, err)
	}
	if err := c.PutContent("chunk", "md5:abc", data); err == nil {
		t.Fatal("PutContent took a key that is not a sha256 digest")
	}
	p, _ := c.path("chunk", dgst)
	other := []byte("other bytes, same length")
	osum := sha256.Sum256(other)
	for _, tc := range []struct {
		name    string
		corrupt func() // damages the entry at p
	}{
		{"bytes overwritten, header kept", func() {
			b, _ := os.ReadFile(p)
			b[len(b)-1] ^= 1
			os.WriteFile(p, b, 0o644)
		}},
		{"valid header for other bytes", func() {
			fmt.Fprintf(mustCreate(t, p), "%s sha256:%s %d\n%s", magic, hex.EncodeToString(osum[:]), len(other), other)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := c.PutContent("chunk", dgst, data); err != nil {
				t.Fatal(err)
			}
			got, err := c.LoadContent("chunk", dgst)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("LoadContent = %q, %v; want %q", got, err, data)
			}
			tc.corrupt()
			got, err = c.LoadContent("chunk", dgst)
			if got != nil || !errors.Is(err, ErrDamaged) {
				t.Fatalf("LoadContent of a damaged entry = %q, %v; want ErrDamaged", got, err)
			}
			if c.Has("chunk", dgst) {
				t.Fatal("damaged entry kept")
			}
		})
	}
	if len(*warnings) != 0 {
		t.Fatalf("warnings: %q", *warnings)
	}
}

func mustCreate(t *testing.T, p string) *os.File {
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestKindsCappedApart(t *testing.T) {
	c, _ := open(t, WithMaxBytes(100000), WithKindMaxBytes("chunk", 5000))
	if err := c.Put("gzindex", "ix", bytes.Repeat([]byte("i"), 50000)); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if err := c.Put("chunk", fmt.Sprint("c", i), bytes.Repeat([]byte{byte(i)}, 1000)); err != nil {
			t.Fatal(err)
		}
	}
	if !c.Has("gzindex", "ix") {
		t.Fatal("chunks pushed the index out")
	}
	var n int64
	ents, _ := os.ReadDir(filepath.Join(c.Dir(), "chunk"))
	for _, e := range ents {
		fi, _ := e.Info()
		n += fi.Size()
	}
	if n > 5000+5000/sweepSlack {
		t.Fatalf("chunk entries hold %d bytes, cap 5000", n)
	}
	if !c.Has("chunk", "c99") {
		t.Fatal("the newest chunk was evicted")
	}
}
