package sgfetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/stargz-get/stargz-get/internal/source"
	"github.com/stargz-get/stargz-get/internal/testenv"
	"github.com/stargz-get/stargz-get/pkg/fetch"
	"github.com/stargz-get/stargz-get/pkg/toc"
	"github.com/stargz-get/stargz-get/pkg/wire"
)

// fileBlob reads byte ranges of a fixture blob on disk.
type fileBlob struct{ f *os.File }

func (b fileBlob) Size() int64 {
	fi, err := b.f.Stat()
	if err != nil {
		return 0
	}
	return fi.Size()
}

func (b fileBlob) ReadRange(_ context.Context, off, n int64) (io.ReadCloser, error) {
	return io.NopCloser(io.NewSectionReader(b.f, off, n)), nil
}

var (
	goTreeOnce    sync.Once
	goTreeEntries []source.FlatEntry
	goTreeErr     error
)

// goTreeLayer returns the entries of the gotree fixture's layer, as
// fromArgs collects them, read from the real eStargz blob.
func goTreeLayer(tb testing.TB) []source.FlatEntry {
	tb.Helper()
	goTreeOnce.Do(func() {
		fx, err := testenv.BuildFixtures(filepath.Join(os.TempDir(), "stargz-get-fixtures"))
		if err != nil {
			goTreeErr = err
			return
		}
		l := fx.GoTree.Layers[0]
		f, err := os.Open(l.BlobPath)
		if err != nil {
			goTreeErr = err
			return
		}
		defer f.Close()
		t, err := toc.Read(context.Background(), fileBlob{f}, toc.Options{})
		if err != nil {
			goTreeErr = err
			return
		}
		rec := wire.Layer{Ref: "fixtures/gotree:v1", Digest: l.Digest}
		layer := &fetch.Layer{TOC: t}
		for _, e := range t.Entries {
			if !toc.Landmark(e.Name) {
				goTreeEntries = append(goTreeEntries, source.FlatEntry{Rec: rec, Layer: layer, Entry: e})
			}
		}
	})
	if goTreeErr != nil {
		tb.Fatal(goTreeErr)
	}
	return goTreeEntries
}

var errMissing = errors.New("missing")

// bruteSelect is the reference: every entry checked against every path.
func bruteSelect(entries []source.FlatEntry, paths []string) ([]string, error) {
	var got []string
	for _, p := range paths {
		name := toc.CleanName(p)
		n := len(got)
		for _, fe := range entries {
			if toc.Under(fe.Entry.Name, name) {
				got = append(got, fe.Entry.Name)
			}
		}
		if len(got) == n {
			return nil, fmt.Errorf("%w: %s", errMissing, p)
		}
	}
	return got, nil
}

func selectNames(entries []source.FlatEntry, paths []string) ([]string, error) {
	items, err := selectPaths(entries, paths, func(p string) error { return fmt.Errorf("%w: %s", errMissing, p) })
	if err != nil {
		return nil, err
	}
	names := make([]string, len(items))
	for i, it := range items {
		names[i] = it.in.Name
		if it.tocEntry == nil || it.tocEntry.Name != it.in.Name || it.layer == nil {
			return nil, fmt.Errorf("item %d (%s) does not carry its entry", i, it.in.Name)
		}
	}
	return names, nil
}

// TestSelectPathsMatchesBruteForce checks the indexed selection against
// the reference on a real layer's entries, for every entry's name (files,
// directories, links), with trailing slashes, "./" and "/" prefixes, the
// root, names that are a prefix of others without being their parent, and
// missing paths.
func TestSelectPathsMatchesBruteForce(t *testing.T) {
	entries := goTreeLayer(t)
	var all, odd []string
	for _, fe := range entries {
		n := fe.Entry.Name
		all = append(all, n, path.Dir(n)+"/")
		if fe.Entry.Type == wire.TypeDir {
			all = append(all, n+"/", "/"+n+"/", "./"+n)
		}
		// "usr/local/go/src/net/net.g" is a prefix of net.go but not its
		// parent: it must not select it (and is missing unless another
		// entry has that name).
		odd = append(odd, n[:len(n)-1], n+"x", n+"-", n+"/missing")
	}
	cases := map[string][]string{
		"every name":                all,
		"root":                      {"/"},
		"root forms":                {"", ".", "./", "//"},
		"overlap":                   {"usr/local/go/src/net", "usr/local/go/src/net/net.go", "usr/local/go/src", "/"},
		"missing":                   {"usr/local/go/src/net", "usr/local/go/no-such-file"},
		"prefix not parent missing": {"usr/local/go/src/ne"},
		"sibling with lower byte":   {"usr/local/go/src/net", "usr/local/go/src/net-"},
	}
	for name, paths := range cases {
		t.Run(name, func(t *testing.T) {
			want, wantErr := bruteSelect(entries, paths)
			got, gotErr := selectNames(entries, paths)
			if (wantErr == nil) != (gotErr == nil) || (wantErr != nil && wantErr.Error() != gotErr.Error()) {
				t.Fatalf("error: got %v, want %v", gotErr, wantErr)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("selection (-want +got):\n%s", diff)
			}
		})
	}
	// Each path alone, so a missing one is found for each.
	for _, p := range append(all, odd...) {
		want, wantErr := bruteSelect(entries, []string{p})
		got, gotErr := selectNames(entries, []string{p})
		if (wantErr == nil) != (gotErr == nil) {
			t.Fatalf("%q: error: got %v, want %v", p, gotErr, wantErr)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("%q: selection (-want +got):\n%s", p, diff)
		}
	}
}

// BenchmarkSelectPaths selects 10,000 paths (every file and directory of a
// real layer, over and over) out of its entries.
func BenchmarkSelectPaths(b *testing.B) {
	entries := goTreeLayer(b)
	paths := make([]string, 0, 10000)
	for len(paths) < cap(paths) {
		for _, fe := range entries {
			if len(paths) == cap(paths) {
				break
			}
			paths = append(paths, fe.Entry.Name)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := selectPaths(entries, paths, func(p string) error { return fmt.Errorf("missing %s", p) }); err != nil {
			b.Fatal(err)
		}
	}
}

// TestQuoteName: names print as they are unless they could forge or hide
// a line on stderr.
func TestQuoteName(t *testing.T) {
	for name, want := range map[string]string{
		"etc/passwd":            "etc/passwd",
		"usr/share/ü.txt":       "usr/share/ü.txt",
		"a b":                   `"a b"`,
		"x\nsg-fetch: all good": `"x\nsg-fetch: all good"`,
		"esc\x1b[2K":            `"esc\x1b[2K"`,
		"":                      `""`,
	} {
		if got := quoteName(name); got != want {
			t.Errorf("quoteName(%q) = %s, want %s", name, got, want)
		}
	}
}

// TestPlainSelectMatchesBruteForce checks the selector of a plain layer's
// stream (entries seen one at a time, in tar order) against the
// reference, on the same paths: which entries it takes, which PATHs
// matched nothing, and when it says every PATH naming a file has passed.
func TestPlainSelectMatchesBruteForce(t *testing.T) {
	entries := goTreeLayer(t)
	var files []string
	for _, fe := range entries {
		if fe.Entry.Type == wire.TypeReg {
			files = append(files, fe.Entry.Name)
		}
	}
	cases := map[string][]string{
		"root":        {"/"},
		"overlap":     {"usr/local/go/src/net", "usr/local/go/src/net/net.go", "usr/local/go/src", "./usr/local/go/src/net/"},
		"missing":     {"usr/local/go/src/net", "usr/local/go/no-such-file", "usr/local/go/src/ne"},
		"every file":  files,
		"a file":      {files[len(files)/2]},
		"same twice":  {files[3], "/" + files[3]},
		"lower byte":  {"usr/local/go/src/net", "usr/local/go/src/net-"},
		"dir is last": {files[0], "usr/local/go/src"},
	}
	for name, paths := range cases {
		t.Run(name, func(t *testing.T) {
			var missing []string
			j := newPlainJob(wire.Layer{}, nil, paths, func(p string) error { missing = append(missing, p); return nil })
			var got []string
			doneAt := -1
			for i, fe := range entries {
				if _, ok := j.Select(fe.Entry); ok {
					got = append(got, fe.Entry.Name)
				}
				if doneAt < 0 && j.Done() {
					doneAt = i
				}
			}
			var want []string
			wantDone := -1 // after the last entry that is a PATH naming a non-directory
			var wantMissing []string
			allFiles := true
			for _, p := range paths {
				c := toc.CleanName(p)
				found, isFile := false, false
				for i, fe := range entries {
					if toc.Under(fe.Entry.Name, c) {
						found = true
					}
					if fe.Entry.Name == c && fe.Entry.Type != wire.TypeDir {
						isFile = true
						wantDone = max(wantDone, i)
					}
				}
				allFiles = allFiles && isFile
				if !found {
					wantMissing = append(wantMissing, p)
				}
			}
			if !allFiles {
				wantDone = -1
			}
			for _, fe := range entries {
				for _, p := range paths {
					if toc.Under(fe.Entry.Name, toc.CleanName(p)) {
						want = append(want, fe.Entry.Name)
						break
					}
				}
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("selection (-want +got):\n%s", diff)
			}
			for i, p := range paths {
				if !j.matched[i] != slices.Contains(wantMissing, p) {
					t.Errorf("%q: matched %v, reference says missing %v", p, j.matched[i], slices.Contains(wantMissing, p))
				}
			}
			if doneAt != wantDone {
				t.Errorf("done after entry %d, want %d", doneAt, wantDone)
			}
		})
	}
}
