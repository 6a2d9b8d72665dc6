package imagefs_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/stargz-get/stargz-get/internal/testenv"
	"github.com/stargz-get/stargz-get/pkg/imagefs"
	"github.com/stargz-get/stargz-get/pkg/registry"
)

var (
	fx   *testenv.Fixtures
	host string
	// blobBytes counts the bytes of blob responses, for the tests that
	// check what a read downloads.
	blobBytes atomic.Int64
)

func TestMain(m *testing.M) {
	os.Exit(func() int {
		var err error
		fx, err = testenv.BuildFixtures(filepath.Join(os.TempDir(), "stargz-get-fixtures"))
		if err != nil {
			fmt.Fprintln(os.Stderr, "building fixtures:", err)
			return 1
		}
		reg, err := testenv.StartRegistry(testenv.RegistryOptions{})
		if err != nil {
			fmt.Fprintln(os.Stderr, "starting registry:", err)
			return 1
		}
		defer reg.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if _, err := fx.Push(ctx, reg.Host, "", ""); err != nil {
			fmt.Fprintln(os.Stderr, "pushing fixtures:", err)
			return 1
		}
		host = reg.Host
		return m.Run()
	}())
}

// countingTransport counts the bytes of blob response bodies.
type countingTransport struct{ rt http.RoundTripper }

func (c countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.rt.RoundTrip(r)
	if err == nil && testenv.MatchBlobs(r) {
		resp.Body = &countingBody{resp.Body}
	}
	return resp, err
}

type countingBody struct{ io.ReadCloser }

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	blobBytes.Add(int64(n))
	return n, err
}

func open(t *testing.T, img *testenv.Image, opts ...imagefs.Option) *imagefs.FS {
	t.Helper()
	opts = append([]imagefs.Option{imagefs.WithRegistryOptions(registry.WithTransport(countingTransport{http.DefaultTransport.(*http.Transport).Clone()}))}, opts...)
	fsys, err := imagefs.Open(context.Background(), img.Ref(host), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fsys.Close() })
	return fsys
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// TestFS runs fstest.TestFS over the flattened view of the layered image
// (whiteouts, an opaque directory, replaced files, symlinks, a hardlink),
// of the three-layer image, and of the image whose small files share gzip
// members.
func TestFS(t *testing.T) {
	for _, tc := range []struct {
		img  *testenv.Image
		want []string
	}{
		{fx.Layered, []string{"etc/remove-me", "opaque/c", "file-to-dir/y", "strings-link", "same/one", "usr/local/go/src/sort/sort.go"}},
		{fx.Multi, []string{"usr/local/go/src/bufio/bufio.go", "usr/local/go/src/sort/sort.go"}},
		// Small files sharing gzip members (chunks with innerOffset).
		{fx.MinChunk, []string{"usr/local/go/src/encoding/json/decode.go"}},
	} {
		t.Run(tc.img.Name, func(t *testing.T) {
			if err := fstest.TestFS(open(t, tc.img), tc.want...); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestFlattened compares every file of the layered image, read through the
// FS, with the reference unpacker's tree.
func TestFlattened(t *testing.T) {
	root := t.TempDir()
	if err := testenv.UnpackImage(fx.Layered, root); err != nil {
		t.Fatal(err)
	}
	fsys := open(t, fx.Layered)
	out := t.TempDir()
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == "." {
			return err
		}
		dst := filepath.Join(out, filepath.FromSlash(p))
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.Mkdir(dst, info.Mode().Perm())
		case d.Type()&fs.ModeSymlink != 0:
			target, err := fsys.ReadLink(p)
			if err != nil {
				return err
			}
			return os.Symlink(target, dst)
		}
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, info.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := testenv.CompareTrees(root, out); err != nil {
		t.Fatal(err)
	}
	if _, err := fsys.Stat("etc/config"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Stat of a whited-out file: %v, want fs.ErrNotExist", err)
	}
}

// TestReadAtFetchesOnlyWhatItTouches reads 100 bytes in the middle of a
// file of several chunks: only the chunk holding them is downloaded.
func TestReadAtFetchesOnlyWhatItTouches(t *testing.T) {
	fsys := open(t, fx.GoTree, imagefs.WithReadAhead(0))
	const name = "usr/local/go/pkg/tool/compile"
	f, err := fsys.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	info, _ := f.Stat()
	whole, err := fsys.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	var want string
	for _, l := range fx.GoTree.Layers {
		for _, g := range l.Files {
			if g.Name == name {
				want = g.Digest
			}
		}
	}
	if got := digest(whole); got != want || int64(len(whole)) != info.Size() {
		t.Fatalf("ReadFile: %d bytes with %s, want %d with %s", len(whole), got, info.Size(), want)
	}
	ra := f.(io.ReaderAt)
	before := blobBytes.Load()
	off := info.Size()/2 + 12345
	p := make([]byte, 100)
	if n, err := ra.ReadAt(p, off); n != 100 || err != nil {
		t.Fatalf("ReadAt: %d, %v", n, err)
	}
	if !bytes.Equal(p, whole[off:off+100]) {
		t.Errorf("ReadAt: wrong bytes")
	}
	got := blobBytes.Load() - before
	if got == 0 || got > 5<<20 || got > info.Size()/3 {
		t.Errorf("ReadAt of 100 bytes downloaded %d bytes of a %d-byte file, want at most one 4 MiB chunk", got, info.Size())
	}
	// Seek and Read across a chunk boundary, and at the end.
	s := f.(io.ReadSeeker)
	if _, err := s.Seek(4<<20-10, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	q := make([]byte, 20)
	if _, err := io.ReadFull(s, q); err != nil || !bytes.Equal(q, whole[4<<20-10:4<<20+10]) {
		t.Errorf("Read across a chunk boundary: %v", err)
	}
	if _, err := s.Seek(-5, io.SeekEnd); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(s)
	if err != nil || !bytes.Equal(rest, whole[len(whole)-5:]) {
		t.Errorf("Read at the end: %q, %v", rest, err)
	}
}

// TestFileServer serves the image over HTTP with http.FileServerFS,
// including a Range request.
func TestFileServer(t *testing.T) {
	fsys := open(t, fx.Multi)
	srv := httptest.NewServer(http.FileServerFS(fsys))
	defer srv.Close()
	want, err := fsys.ReadFile("usr/local/go/src/sort/sort.go")
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", srv.URL+"/usr/local/go/src/sort/sort.go", nil)
	req.Header.Set("Range", "bytes=100-199")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(got, want[100:200]) {
		t.Errorf("GET with Range: %s, %q", resp.Status, got)
	}
}

// TestErrors: a layer that is not eStargz names itself; a cancelled
// context stops Open.
func TestErrors(t *testing.T) {
	_, err := imagefs.Open(context.Background(), fx.Mixed.Ref(host))
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("layer 1 (sha256:")) {
		t.Errorf("mixed image: %v, want an error naming layer 1", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := imagefs.Open(ctx, fx.Multi.Ref(host)); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
	if _, err := imagefs.Open(context.Background(), fx.Multi.Ref(host), imagefs.WithPlatform("linux")); err == nil {
		t.Errorf("bad platform: no error")
	}
}

// TestLayer opens one layer's view.
func TestLayer(t *testing.T) {
	fsys := open(t, fx.Layered, imagefs.WithLayer("1"))
	if _, err := fsys.Stat("etc/.wh.remove-me"); err != nil {
		t.Errorf("a layer's view shows its whiteouts: %v", err)
	}
	b, err := fsys.ReadFile("etc/config")
	if err != nil || string(b) != "config from layer 1\n" {
		t.Errorf("etc/config of layer 1: %q, %v", b, err)
	}
}
