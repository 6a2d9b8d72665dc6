package gzindex

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// goTar writes the files under GOROOT/src/<dir> as a tar, the way
// archive/tar writers (docker, crane) do.
func goTar(t *testing.T, dir string) []byte {
	t.Helper()
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(strings.TrimSpace(string(out)), "src", dir)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	// Incompressible contents first: deflate stores them in stored
	// blocks, after which the inflater's offsets need correcting.
	rnd := make([]byte, 300<<10)
	rand.Read(rnd)
	for _, n := range []string{"random1", "random2"} {
		tw.WriteHeader(&tar.Header{Name: n, Typeflag: tar.TypeReg, Size: int64(len(rnd) - len(n)), Mode: 0o644})
		tw.Write(rnd[len(n):])
		tw.WriteHeader(&tar.Header{Name: n + ".txt", Typeflag: tar.TypeReg, Size: 3, Mode: 0o644})
		tw.Write([]byte("abc"))
	}
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		h, err := tar.FileInfoHeader(fi, "")
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		h.Name = filepath.ToSlash(filepath.Join(dir, rel))
		if d.IsDir() {
			h.Name += "/"
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			_, err = tw.Write(b)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// A long name (PAX header) and a file after it.
	long := strings.Repeat("d/", 80) + "file"
	tw.WriteHeader(&tar.Header{Name: long, Typeflag: tar.TypeReg, Size: 5, Mode: 0o644})
	tw.Write([]byte("hello"))
	tw.Close()
	return buf.Bytes()
}

func gz(t *testing.T, parts ...[]byte) []byte {
	var buf bytes.Buffer
	for _, p := range parts { // one member each
		zw := gzip.NewWriter(&buf)
		zw.Write(p)
		zw.Close()
	}
	return buf.Bytes()
}

// ranges serves byte ranges of a blob and counts them.
type ranges struct {
	b     []byte
	bytes int64
}

func (r *ranges) open(_ context.Context, off, end int64) (io.ReadCloser, error) {
	r.bytes += end - off
	return io.NopCloser(bytes.NewReader(r.b[off:end])), nil
}

func TestBuildAndSeek(t *testing.T) {
	tarball := goTar(t, "net/http")
	for _, tc := range []struct {
		name string
		blob []byte
	}{
		{"one member", gz(t, tarball)},
		// Split mid-tar into two members, as concatenated gzip streams.
		{"two members", gz(t, tarball[:len(tarball)/3], tarball[len(tarball)/3:])},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ix, err := Build(bytes.NewReader(tc.blob), "sha256:x", int64(len(tc.blob)), WithSpacing(16<<10))
			if err != nil {
				t.Fatal(err)
			}
			if ix.Uncompressed != int64(len(tarball)) {
				t.Fatalf("uncompressed %d, want %d", ix.Uncompressed, len(tarball))
			}
			var bits int
			for _, c := range ix.Checkpoints {
				if c.Bit != 0 {
					bits++
				}
			}
			if len(ix.Checkpoints) < 10 || bits == 0 {
				t.Fatalf("%d checkpoints, %d not byte-aligned; want many, some unaligned", len(ix.Checkpoints), bits)
			}
			// Round trip through the cache form.
			b, err := ix.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if ix, err = Unmarshal(b, "sha256:x", int64(len(tc.blob))); err != nil {
				t.Fatal(err)
			}
			r := &ranges{b: tc.blob}
			var checked int
			for i, e := range ix.Entries {
				if e.Type != "reg" || (i%7 != 0 && i != len(ix.Entries)-1) {
					continue
				}
				before := r.bytes
				rc, err := ix.Open(context.Background(), r.open, e.Header, e.Data+e.Size)
				if err != nil {
					t.Fatal(err)
				}
				tr := tar.NewReader(rc)
				h, err := tr.Next()
				if err != nil || h.Name != e.Name || h.Size != e.Size {
					t.Fatalf("entry %s: header %+v, %v", e.Name, h, err)
				}
				d := sha256.New()
				if _, err := io.Copy(d, tr); err != nil {
					t.Fatalf("entry %s: %v", e.Name, err)
				}
				if got := "sha256:" + hex.EncodeToString(d.Sum(nil)); got != e.Digest {
					t.Fatalf("entry %s: digest %s, want %s", e.Name, got, e.Digest)
				}
				rc.Close()
				off, end := ix.Span(e.Header, e.Data+e.Size)
				if r.bytes-before != end-off || end-off > int64(len(tc.blob)) {
					t.Fatalf("read %d bytes, span is %d", r.bytes-before, end-off)
				}
				checked++
			}
			if checked < 10 {
				t.Fatalf("checked only %d entries", checked)
			}
		})
	}
}

func TestBuildRefuses(t *testing.T) {
	tarball := goTar(t, "net/url")
	blob := gz(t, tarball)
	for _, tc := range []struct {
		name string
		blob []byte
		want string
	}{
		{"not gzip", tarball, "not a gzip stream"},
		{"truncated", blob[:len(blob)/2], "unexpected EOF"},
		{"trailing garbage", append(bytes.Clone(blob), "junkjunkjunk"...), "not a gzip stream"},
		{"not tar", gz(t, bytes.Repeat([]byte("x"), 5000)), "tar"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Build(bytes.NewReader(tc.blob), "sha256:x", int64(len(tc.blob)))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one saying %q", err, tc.want)
			}
		})
	}
}

func TestUnmarshalRefuses(t *testing.T) {
	blob := gz(t, goTar(t, "net/url"))
	ix, err := Build(bytes.NewReader(blob), "sha256:x", int64(len(blob)), WithSpacing(8<<10))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name         string
		layer        string
		size         int64
		damage       func(*Index)
		wantContains string
	}{
		{"other layer", "sha256:y", int64(len(blob)), func(*Index) {}, "describes"},
		{"other size", "sha256:x", 5, func(*Index) {}, "describes"},
		{"version", "sha256:x", int64(len(blob)), func(ix *Index) { ix.Version = 9 }, "version"},
		{"checkpoint past the end", "sha256:x", int64(len(blob)), func(ix *Index) { ix.Checkpoints[1].In = 1 << 40 }, "checkpoint"},
		{"big window", "sha256:x", int64(len(blob)), func(ix *Index) { ix.Checkpoints[1].Window = make([]byte, 40<<10) }, "checkpoint"},
		{"entry overlaps", "sha256:x", int64(len(blob)), func(ix *Index) { ix.Entries[3].Header = ix.Entries[2].Header }, "entry"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := *ix
			c.Checkpoints = append([]Checkpoint(nil), ix.Checkpoints...)
			c.Entries = append([]Entry(nil), ix.Entries...)
			tc.damage(&c)
			b, _ := c.Marshal()
			if _, err := Unmarshal(b, tc.layer, tc.size); err == nil || !strings.Contains(err.Error(), tc.wantContains) {
				t.Fatalf("err = %v, want one about %q", err, tc.wantContains)
			}
		})
	}
	if _, err := Unmarshal([]byte("not an index"), "sha256:x", int64(len(blob))); err == nil {
		t.Fatal("garbage accepted")
	}
}
