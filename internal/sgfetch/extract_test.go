package sgfetch

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/stargz-get/stargz-get/internal/testenv"
)

// entry is one archive member for the test archives.
type entry struct {
	name, body, link string
	typ              byte
	mode             int64
}

// realFiles returns a few real files of GOROOT/src/errors as entries.
func realFiles(t *testing.T) []entry {
	t.Helper()
	goroot, err := testenv.GoRoot()
	if err != nil {
		t.Fatal(err)
	}
	es := []entry{{name: "errors/", typ: tar.TypeDir, mode: 0o755}}
	for _, n := range []string{"errors.go", "wrap.go", "join.go"} {
		b, err := os.ReadFile(filepath.Join(goroot, "src/errors", n))
		if err != nil {
			t.Fatal(err)
		}
		es = append(es, entry{name: "errors/" + n, body: string(b), typ: tar.TypeReg, mode: 0o644})
	}
	return append(es, entry{name: "errors/link.go", link: "errors.go", typ: tar.TypeSymlink, mode: 0o777})
}

func tarOf(t *testing.T, es []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range es {
		hdr := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Size: int64(len(e.body)), Linkname: e.link}
		if e.typ != tar.TypeReg {
			hdr.Size = 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			if _, err := io.WriteString(tw, e.body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func compress(t *testing.T, kind string, raw []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.WriteCloser
	var err error
	switch kind {
	case "tar":
		return raw
	case "tar.gz":
		w = gzip.NewWriter(&buf)
	case "tar.zst":
		w, err = zstd.NewWriter(&buf)
	case "tar.xz":
		w, err = xz.NewWriter(&buf)
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(raw); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func zipOf(t *testing.T, es []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range es {
		fh := &zip.FileHeader{Name: e.name, Method: zip.Deflate}
		body := e.body
		switch e.typ {
		case tar.TypeDir:
			fh.SetMode(os.ModeDir | 0o755)
		case tar.TypeSymlink:
			fh.SetMode(os.ModeSymlink | 0o777)
			body = e.link
		default:
			fh.SetMode(os.FileMode(e.mode))
		}
		w, err := zw.CreateHeader(fh)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(w, body); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// tree lists dir as "name -> target" or "name: body".
func tree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		switch {
		case rel == "." || strings.HasPrefix(d.Name(), "archive"):
		case d.Type()&os.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			out = append(out, rel+" -> "+target)
		case d.IsDir():
			out = append(out, rel+"/")
		default:
			b, _ := os.ReadFile(p)
			out = append(out, rel+": "+string(b))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func want(es []entry) []string {
	var out []string
	for _, e := range es {
		switch e.typ {
		case tar.TypeDir:
			out = append(out, strings.TrimSuffix(e.name, "/")+"/")
		case tar.TypeSymlink:
			out = append(out, e.name+" -> "+e.link)
		default:
			out = append(out, e.name+": "+e.body)
		}
	}
	sort.Strings(out)
	return out
}

func extractBytes(t *testing.T, blob []byte, mt string) (string, int, error) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "archive"), blob, 0o644); err != nil {
		t.Fatal(err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	n, err := extractBlob(root, "archive", mt)
	return dir, n, err
}

// TestExtractFormats unpacks the same real files from every archive
// format, found by magic bytes under oras's default media type.
func TestExtractFormats(t *testing.T) {
	es := realFiles(t)
	raw := tarOf(t, es)
	blobs := map[string][]byte{"zip": zipOf(t, es)}
	for _, k := range []string{"tar", "tar.gz", "tar.zst", "tar.xz"} {
		blobs[k] = compress(t, k, raw)
	}
	for kind, b := range blobs {
		t.Run(kind, func(t *testing.T) {
			dir, n, err := extractBytes(t, b, "application/vnd.oci.image.layer.v1.tar")
			if err != nil {
				t.Fatal(err)
			}
			if n != len(es) {
				t.Errorf("extracted %d entries, want %d", n, len(es))
			}
			if diff := cmp.Diff(want(es), tree(t, dir)); diff != "" {
				t.Errorf("tree (-want +got):\n%s", diff)
			}
		})
	}
}

// TestExtractHostile: entries that climb out, are absolute, link out or
// are devices are refused, and nothing lands outside the directory.
func TestExtractHostile(t *testing.T) {
	for _, tc := range []struct {
		name string
		es   []entry
		err  string
	}{
		{"dotdot", []entry{{name: "../evil", body: "x", typ: tar.TypeReg, mode: 0o644}}, "climbs out"},
		{"climb", []entry{{name: "a/../../evil", body: "x", typ: tar.TypeReg, mode: 0o644}}, "climbs out"},
		{"absolute", []entry{{name: "/tmp/evil", body: "x", typ: tar.TypeReg, mode: 0o644}}, "absolute name"},
		{"symlink out", []entry{{name: "l", link: "../../etc", typ: tar.TypeSymlink, mode: 0o777}}, "leaves the output directory"},
		{"absolute symlink", []entry{{name: "l", link: "/etc/passwd", typ: tar.TypeSymlink, mode: 0o777}}, "leaves the output directory"},
		{"write through link", []entry{
			{name: "d", link: ".", typ: tar.TypeSymlink, mode: 0o777},
			{name: "d/../../evil", body: "x", typ: tar.TypeReg, mode: 0o644},
		}, "climbs out"},
		{"hardlink out", []entry{{name: "h", link: "../../etc/passwd", typ: tar.TypeLink}}, "climbs out"},
		{"device", []entry{{name: "dev", typ: tar.TypeChar, mode: 0o600}}, "character device"},
		{"fifo", []entry{{name: "fifo", typ: tar.TypeFifo, mode: 0o600}}, "fifo"},
		// The archive is removed after extraction: an entry of its name
		// would be removed with it.
		{"the archive's own name", []entry{{name: "archive", body: "x", typ: tar.TypeReg, mode: 0o644}}, "would write over the archive"},
		{"under the archive's name", []entry{{name: "archive/x", body: "x", typ: tar.TypeReg, mode: 0o644}}, "would write over the archive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, _, err := extractBytes(t, compress(t, "tar.gz", tarOf(t, tc.es)), "")
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("got %v, want an error containing %q", err, tc.err)
			}
			if _, err := os.Lstat(filepath.Join(filepath.Dir(dir), "evil")); err == nil {
				t.Fatal("a file was written outside the directory")
			}
		})
	}
}

// TestExtractNotArchive: a blob that is no archive is kept as it is,
// unless its media type claims it is one.
func TestExtractNotArchive(t *testing.T) {
	if _, _, err := extractBytes(t, []byte("plain text\n"), "text/plain"); !errors.Is(err, errNotArchive) {
		t.Errorf("text: %v, want errNotArchive", err)
	}
	gz := compress(t, "tar.gz", []byte(strings.Repeat("not a tar ", 100)))
	if _, _, err := extractBytes(t, gz, "application/octet-stream"); !errors.Is(err, errNotArchive) {
		t.Errorf("gzip of text: %v, want errNotArchive", err)
	}
	if _, _, err := extractBytes(t, []byte("plain text\n"), "application/zip"); err == nil || errors.Is(err, errNotArchive) {
		t.Errorf("text typed zip: %v, want an error", err)
	}
}
