package fetch_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/stargz-snapshotter/estargz"

	"github.com/stargz-get/stargz-get/internal/testenv"
	"github.com/stargz-get/stargz-get/pkg/fetch"
	"github.com/stargz-get/stargz-get/pkg/wire"
)

// longEntry is one entry of the long-names layer.
type longEntry struct {
	name, link string
	typ        byte
	body       string
}

// longNamesLayer builds, with estargz.Build, a layer whose entries have
// names of NAME_MAX (255) bytes (a file, a directory, a file in it, a
// symlink and a hardlink), one of 256 bytes, a path of PATH_MAX-1 (4095)
// bytes and one longer than PATH_MAX.
func longNamesLayer(t *testing.T) (entries []longEntry, blob []byte) {
	t.Helper()
	n255 := func(c string) string { return strings.Repeat(c, 255) }
	deep := func(top string, total int) (dirs []string, leaf string) {
		p := top
		dirs = append(dirs, p)
		for i := 0; len(p)+251+60 <= total; i++ {
			p += "/" + strings.Repeat(string(rune('a'+i%26)), 250)
			dirs = append(dirs, p)
		}
		leaf = p + "/" + strings.Repeat("z", total-len(p)-1)
		return dirs, leaf
	}
	entries = []longEntry{
		{name: "long", typ: tar.TypeDir},
		{name: "long/" + n255("d"), typ: tar.TypeDir},
		{name: "long/" + n255("d") + "/" + n255("f"), typ: tar.TypeReg, body: "in a 255-byte directory\n"},
		{name: "long/" + n255("f"), typ: tar.TypeReg, body: "a 255-byte name\n"},
		{name: "long/" + n255("s"), typ: tar.TypeSymlink, link: n255("f")},
		{name: "long/" + n255("h"), typ: tar.TypeLink, link: "long/" + n255("f")},
	}
	for _, top := range []string{"deep", "deeper"} {
		total := 4095 // PATH_MAX less its NUL
		if top == "deeper" {
			total = 4600
		}
		dirs, leaf := deep(top, total)
		if len(leaf) != total {
			t.Fatalf("deep path of %d bytes, want %d", len(leaf), total)
		}
		for _, d := range dirs {
			entries = append(entries, longEntry{name: d, typ: tar.TypeDir})
		}
		entries = append(entries, longEntry{name: leaf, typ: tar.TypeReg, body: fmt.Sprintf("a path of %d bytes\n", total)})
	}
	entries = append(entries, longEntry{name: "long/" + strings.Repeat("x", 256), typ: tar.TypeReg, body: "one byte too long\n"})

	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: 0o644, ModTime: testenv.ModTime, Format: tar.FormatPAX, Size: int64(len(e.body))}
		if e.typ == tar.TypeDir {
			h.Name += "/"
			h.Mode = 0o755
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	rc, err := estargz.Build(io.NewSectionReader(bytes.NewReader(tb.Bytes()), 0, int64(tb.Len())))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if blob, err = io.ReadAll(rc); err != nil {
		t.Fatal(err)
	}
	return entries, blob
}

// TestLongNames fetches entries whose names are NAME_MAX bytes long and
// whose paths reach and pass PATH_MAX: each is written with its contents
// (temp names do not grow with the final name), and a name the filesystem
// cannot hold is refused, leaving nothing behind.
func TestLongNames(t *testing.T) {
	entries, blob := longNamesLayer(t)
	b := &blobFile{data: blob}
	l := readTOC(t, b)
	dir := t.TempDir()
	out := run(t, context.Background(), dir, wantAll(l, ""), fetch.Options{Jobs: 4})
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	tooLong := "long/" + strings.Repeat("x", 256)
	for _, e := range entries {
		o := out[e.name]
		if o == nil {
			t.Errorf("no outcome for %s", e.name)
			continue
		}
		if e.name == tooLong {
			if o.Status != wire.StatusRefused || o.Err == nil || !strings.Contains(o.Err.Error(), "part of 256 bytes") {
				t.Errorf("256-byte name: %s %v, want refused, naming its part of 256 bytes", o.Status, o.Err)
			}
			continue // the listing of long/ below shows nothing else was written
		}
		if o.Status != wire.StatusFetched {
			t.Errorf("%d-byte name %.40s...: %s: %v", len(e.name), e.name, o.Status, o.Err)
			continue
		}
		switch e.typ {
		case tar.TypeReg, tar.TypeLink:
			want := e.body
			if e.typ == tar.TypeLink {
				want = "a 255-byte name\n"
			}
			got, err := root.ReadFile(e.name)
			if err != nil || string(got) != want {
				t.Errorf("%.40s...: %q, %v; want %q", e.name, got, err, want)
			}
		case tar.TypeSymlink:
			if got, err := root.Readlink(e.name); err != nil || got != e.link {
				t.Errorf("symlink %.40s...: %q, %v; want %q", e.name, got, err, e.link)
			}
		case tar.TypeDir:
			if fi, err := root.Lstat(e.name); err != nil || !fi.IsDir() {
				t.Errorf("directory %.40s...: %v", e.name, err)
			}
		}
	}
	noTemp(t, dir)
	// Nothing was written under a shortened or other name.
	long, err := root.Open("long")
	if err != nil {
		t.Fatal(err)
	}
	names, err := long.Readdirnames(-1)
	long.Close()
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != 4 {
		t.Errorf("long/ holds %d names, want 4 (the directory, file, symlink and hardlink)", len(names))
	}
}

// TestStaleTempsRemoved: a run killed before it could clean up leaves its
// temp files; the next run into the same directory removes them, in the
// form of this version and of earlier ones, and leaves files that only
// look alike.
func TestStaleTempsRemoved(t *testing.T) {
	b := open(t, fixtures.GoTree.Layers[0])
	l := readTOC(t, b)
	const name = "usr/local/go/src/net/net.go"
	dir := t.TempDir()
	sub := filepath.Join(dir, filepath.FromSlash(path.Dir(name)))
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	stale := []string{
		".sg-0123456789abcdef01234567.tmp", // this version's
		".sg-0123456789ab-net.go.tmp",      // an earlier version's
		".sg-0123456789ab-" + strings.Repeat("n", 200) + ".tmp",
	}
	kept := []string{".sg-notes.tmp", ".sg-0123456789abcdef01234567.tmp.bak", "sg-0123456789abcdef01234567.tmp", ".sg-0123456789ABCDEF01234567.tmp"}
	for _, n := range append(stale, kept...) {
		if err := os.WriteFile(filepath.Join(sub, n), []byte("half"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out := run(t, context.Background(), dir, wantAll(l, name), fetch.Options{})
	if o := out[name]; o.Status != wire.StatusFetched {
		t.Fatalf("%s: %s: %v", name, o.Status, o.Err)
	}
	for _, n := range stale {
		if _, err := os.Lstat(filepath.Join(sub, n)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("stale temp %s still there (%v)", n, err)
		}
	}
	for _, n := range kept {
		if _, err := os.Lstat(filepath.Join(sub, n)); err != nil {
			t.Errorf("%s, not ours, was removed: %v", n, err)
		}
	}
}

// TestRefusals: every entry of the hostile layer that would break a rule
// is refused (not failed), with the rule in its error, and an entry of a
// type no writer knows is refused too; the rest is fetched.
func TestRefusals(t *testing.T) {
	b := open(t, fixtures.Hostile.Layers[0])
	l := readTOC(t, b)
	dir := t.TempDir()
	out := run(t, context.Background(), dir, wantAll(l, ""), fetch.Options{})
	refused := map[string]string{}
	for _, o := range out {
		if o.Status == wire.StatusRefused {
			refused[o.Want.Entry.RawName] = o.Err.Error()
		}
	}
	for name, word := range testenv.HostileEntries {
		if why, ok := refused[name]; !ok || !strings.Contains(why, word) {
			t.Errorf("%s: refused %v with %q; want refused with %q", name, ok, why, word)
		}
		delete(refused, name)
	}
	// Fifos and devices without Options.Devices.
	for _, name := range []string{"ok/fifo", "ok/null"} {
		if why, ok := refused[name]; !ok || !strings.Contains(why, "only with --devices") {
			t.Errorf("%s: refused %v with %q; want refused, created only with --devices", name, ok, why)
		}
		delete(refused, name)
	}
	if len(refused) > 0 {
		t.Errorf("refused besides: %v", refused)
	}
	for _, f := range fixtures.Hostile.Layers[0].Files {
		if o := out[f.Name]; o == nil || o.Status != wire.StatusFetched {
			t.Errorf("%s: %+v, want fetched", f.Name, o)
		}
	}

	data := handmadeBlob(t, nil, func([]int64) []*estargz.TOCEntry {
		return []*estargz.TOCEntry{
			{Name: "weird", Type: "whiteout-of-the-future", Mode: 0o644},
			{Name: "loop-a", Type: "hardlink", LinkName: "loop-b"},
			{Name: "loop-b", Type: "hardlink", LinkName: "loop-a"},
			{Name: "to-dir", Type: "hardlink", LinkName: "d"},
			{Name: "d", Type: "dir", Mode: 0o755},
		}
	})
	l = readTOC(t, &blobFile{data: data})
	out = run(t, context.Background(), t.TempDir(), wantAll(l, ""), fetch.Options{})
	for name, word := range map[string]string{
		"weird":  `unknown entry type "whiteout-of-the-future"`,
		"loop-a": "link cycle",
		"loop-b": "link cycle",
		"to-dir": `hardlink to dir "d" is not supported`,
	} {
		if o := out[name]; o == nil || o.Status != wire.StatusRefused || !strings.Contains(o.Err.Error(), word) {
			t.Errorf("%s: %+v; want refused with %q", name, o, word)
		}
	}
}
