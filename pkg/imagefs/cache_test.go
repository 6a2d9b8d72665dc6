package imagefs_test

import (
	"bytes"
	"testing"

	"github.com/stargz-get/stargz-get/pkg/cache"
	"github.com/stargz-get/stargz-get/pkg/fetch"
	"github.com/stargz-get/stargz-get/pkg/imagefs"
)

// TestCache reads a file through WithCache, then again from a second FS
// on the same cache: the second read downloads no chunk, and gives the
// same bytes.
func TestCache(t *testing.T) {
	c, err := cache.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	const name = "usr/local/go/pkg/tool/compile"
	first := open(t, fx.GoTree, imagefs.WithCache(c))
	want, err := first.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(c.Packed(fetch.ChunkKind)); n < 2 {
		t.Fatalf("%d chunks kept, want those of %s", n, name)
	}
	second := open(t, fx.GoTree, imagefs.WithCache(c))
	before := blobBytes.Load()
	got, err := second.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("bytes from the cache differ")
	}
	if n := blobBytes.Load() - before; n != 0 {
		t.Fatalf("the second read downloaded %d blob bytes, want none", n)
	}
}
