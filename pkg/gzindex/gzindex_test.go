package gzindex

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
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

// loaded builds an index of a tar of GOROOT/src/net/url and returns the
// blob, the index and its serialised form.
func loaded(t *testing.T) ([]byte, *Index, []byte) {
	t.Helper()
	blob := gz(t, goTar(t, "net/url"))
	ix, err := Build(bytes.NewReader(blob), "sha256:x", int64(len(blob)), WithSpacing(8<<10))
	if err != nil {
		t.Fatal(err)
	}
	b, err := ix.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return blob, ix, b
}

// windowed returns the first checkpoint of ix that has a window.
func windowed(t *testing.T, ix *Index) *Checkpoint {
	t.Helper()
	for i := range ix.Checkpoints {
		if ix.Checkpoints[i].WindowZ > 0 {
			return &ix.Checkpoints[i]
		}
	}
	t.Fatal("no checkpoint with a window")
	return nil
}

func TestLoadTOCMatchesEntries(t *testing.T) {
	_, built, b := loaded(t)
	ix, tc, err := LoadTOC(b, "sha256:x", built.Size, "gzip", 0)
	if err != nil {
		t.Fatal(err)
	}
	if ix.Entries != nil {
		t.Fatal("LoadTOC kept the entry table as well as the TOC")
	}
	want, err := built.TOC("gzip", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(tc.Entries) != len(want.Entries) || len(tc.Entries) < 5 {
		t.Fatalf("%d entries, want %d", len(tc.Entries), len(want.Entries))
	}
	for i, e := range tc.Entries {
		w := want.Entries[i]
		if e.Name != w.Name || e.TarOffset != w.TarOffset || e.DataOffset != w.DataOffset || e.Digest != w.Digest || e.Size != w.Size {
			t.Fatalf("entry %d: %s at %d/%d, want %s at %d/%d", i, e.Name, e.TarOffset, e.DataOffset, w.Name, w.TarOffset, w.DataOffset)
		}
	}
}

func TestLoadedWindowsStayCompressed(t *testing.T) {
	blob, built, b := loaded(t)
	ix, err := Unmarshal(b, "sha256:x", built.Size)
	if err != nil {
		t.Fatal(err)
	}
	var raw int
	for _, c := range ix.Checkpoints {
		if c.Window != nil {
			t.Fatalf("checkpoint at byte %d: window inflated on load", c.In)
		}
		raw += c.WindowLen
	}
	if len(ix.windows) == 0 || len(ix.windows) >= raw {
		t.Fatalf("windows section %d bytes for %d bytes of windows", len(ix.windows), raw)
	}
	// A loaded index serialises to one that loads and reads the same.
	b2, err := ix.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	ix2, err := Unmarshal(b2, "sha256:x", built.Size)
	if err != nil {
		t.Fatal(err)
	}
	cp := windowed(t, ix2)
	r := &ranges{b: blob}
	rc, err := ix2.Open(context.Background(), r.open, cp.Out, min(cp.Out+4096, ix2.Uncompressed))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	zr, _ := gzip.NewReader(bytes.NewReader(blob))
	all, _ := io.ReadAll(zr)
	if !bytes.Equal(got, all[cp.Out:cp.Out+int64(len(got))]) || len(got) == 0 {
		t.Fatal("bytes read from a loaded checkpoint differ from the layer's")
	}
}

func TestCorruptWindowDetected(t *testing.T) {
	blob, built, b := loaded(t)
	good, err := Unmarshal(b, "sha256:x", built.Size)
	if err != nil {
		t.Fatal(err)
	}
	cp := windowed(t, good)
	bad := bytes.Clone(b)
	bad[len(magic)+8+int(cp.WindowAt+cp.WindowZ/2)] ^= 0x55
	// The damage is in a window: loading (listing) does not inflate it,
	// but a read starting at its checkpoint refuses it.
	ix, err := Unmarshal(bad, "sha256:x", built.Size)
	if err != nil {
		t.Fatal(err)
	}
	r := &ranges{b: blob}
	_, err = ix.Open(context.Background(), r.open, cp.Out, min(cp.Out+1, ix.Uncompressed))
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("err = %v, want ErrCorrupt", err)
	}
	if r.bytes != 0 {
		t.Fatalf("%d blob bytes read through a corrupt window", r.bytes)
	}
	// Other checkpoints still read.
	e := ix.Entries[0]
	rc, err := ix.Open(context.Background(), r.open, e.Header, e.Data+e.Size)
	if err != nil {
		t.Fatal(err)
	}
	rc.Close()
}

func TestLoadRefusesDamagedLayout(t *testing.T) {
	_, built, b := loaded(t)
	short := bytes.Clone(b)
	n := binary.BigEndian.Uint64(short[len(magic):])
	binary.BigEndian.PutUint64(short[len(magic):], n-1)
	// An index of version 1: gzip-compressed JSON lines.
	var v1 bytes.Buffer
	zw := gzip.NewWriter(&v1)
	zw.Write([]byte(`{"version":1,"layer":"sha256:x"}` + "\n"))
	zw.Close()
	for _, tc := range []struct {
		name, want string
		b          []byte
	}{
		{"version 1", "version", v1.Bytes()},
		{"windows section past the end", "past its end", append(bytes.Clone(b[:len(magic)]), 0, 0, 0, 0, 1, 0, 0, 0)},
		{"windows section shorter than the checkpoints say", "seek index", short},
		{"truncated", "unexpected EOF", b[:len(b)-20]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Unmarshal(tc.b, "sha256:x", built.Size); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one saying %q", err, tc.want)
			}
		})
	}
}

// rewriteHead returns the serialised index b with its head line (the
// checkpoints) changed by damage, and everything else as it was.
func rewriteHead(t *testing.T, b []byte, damage func(*Index)) []byte {
	t.Helper()
	n := binary.BigEndian.Uint64(b[len(magic):])
	pre, rest := b[:len(magic)+8+int(n)], b[len(magic)+8+int(n):]
	zr, err := gzip.NewReader(bytes.NewReader(rest))
	if err != nil {
		t.Fatal(err)
	}
	lines, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	head, entries, _ := bytes.Cut(lines, []byte("\n"))
	var ix Index
	if err := json.Unmarshal(head, &ix); err != nil {
		t.Fatal(err)
	}
	damage(&ix)
	head, _ = json.Marshal(&ix)
	var out bytes.Buffer
	out.Write(pre)
	zw := gzip.NewWriter(&out)
	zw.Write(head)
	zw.Write([]byte("\n"))
	zw.Write(entries)
	zw.Close()
	return out.Bytes()
}

func TestLoadRefusesMisplacedWindows(t *testing.T) {
	_, built, b := loaded(t)
	// The first checkpoint with a window, by index.
	first := -1
	for i, c := range built.Checkpoints {
		if c.WindowLen > 0 {
			first = i
			break
		}
	}
	if first < 0 {
		t.Fatal("no checkpoint with a window")
	}
	if _, err := Unmarshal(rewriteHead(t, b, func(*Index) {}), "sha256:x", built.Size); err != nil {
		t.Fatalf("an undamaged rewrite is refused: %v", err)
	}
	for _, tc := range []struct {
		name   string
		damage func(*Index)
	}{
		{"huge compressed window", func(ix *Index) { ix.Checkpoints[first].WindowZ = 1 << 62 }},
		{"negative compressed window", func(ix *Index) { ix.Checkpoints[first].WindowZ = -5 }},
		{"window elsewhere", func(ix *Index) { ix.Checkpoints[first].WindowAt += 3 }},
		{"window longer than 32 KiB", func(ix *Index) { ix.Checkpoints[first].WindowLen = 40 << 10 }},
		{"window without a digest", func(ix *Index) { ix.Checkpoints[first].WindowSum = "" }},
		{"window at a member start", func(ix *Index) { ix.Checkpoints[first].Member = true }},
		{"window dropped", func(ix *Index) { ix.Checkpoints[first].WindowZ, ix.Checkpoints[first].WindowLen = 0, 0 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Unmarshal(rewriteHead(t, b, tc.damage), "sha256:x", built.Size)
			if err == nil || !strings.Contains(err.Error(), "seek index: ") {
				t.Fatalf("err = %v, want a refusal", err)
			}
		})
	}
}
