package toc

import (
	"fmt"
	"io/fs"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/containerd/stargz-snapshotter/estargz"
)

func entry(typ, raw, link string) *Entry {
	return &Entry{TOCEntry: &estargz.TOCEntry{Name: raw, Type: typ, LinkName: link}, Name: CleanName(raw), RawName: raw}
}

func TestUnsafe(t *testing.T) {
	for _, tc := range []struct {
		typ, raw, link string
		want           string // substring of the reason; "" = safe
	}{
		{"reg", "usr/bin/ls", "", ""},
		{"reg", "./usr/bin/ls", "", ""},
		{"dir", "usr/", "", ""},
		{"reg", "a/./b", "", ""},
		{"reg", "..foo/bar..", "", ""},
		{"reg", "../etc/passwd", "", "climbs out"},
		{"reg", "a/../../b", "", "climbs out"},
		{"reg", "a/..", "", "climbs out"},
		{"reg", "/etc/passwd", "", "absolute"},
		{"reg", "", "", "empty"},
		{"reg", "a\x00b", "", "NUL"},
		{"symlink", "usr/lib/libc.so", "libc.so.6", ""},
		{"symlink", "usr/lib/x", "../../bin/sh", ""},
		{"symlink", "usr/lib/x", "../../../etc", "outside"},
		{"symlink", "x", "..", "outside"},
		{"symlink", "etc/localtime", "/usr/share/zoneinfo/UTC", ""},
		{"symlink", "x", "", "empty target"},
		{"hardlink", "a/b", "a/c", ""},
		{"hardlink", "a/b", "../c", "climbs out"},
		{"hardlink", "a/b", "/etc/shadow", "absolute"},
	} {
		got := entry(tc.typ, tc.raw, tc.link).Unsafe()
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%s %q -> %q: Unsafe() = %q, want %q", tc.typ, tc.raw, tc.link, got, tc.want)
		}
	}
}

// FuzzUnsafe checks that a name or link target that Unsafe accepts can
// never lead outside the output directory once cleaned and joined.
func FuzzUnsafe(f *testing.F) {
	for _, s := range [][2]string{
		{"usr/bin/ls", ""}, {"../x", ""}, {"a/../../b", ""}, {"/abs", ""}, {"./a/./b/", ""},
		{"a/b", "../../c"}, {"a", "/etc"}, {"a/b/c", "../.."}, {"x", "..."}, {"a//b", "b//../../c"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, raw, link string) {
		for _, typ := range []string{"reg", "symlink", "hardlink"} {
			e := entry(typ, raw, link)
			if e.Unsafe() != "" {
				continue
			}
			if e.Name == ".." || strings.HasPrefix(e.Name, "../") || strings.HasPrefix(e.Name, "/") {
				t.Fatalf("%s %q accepted, cleans to %q", typ, raw, e.Name)
			}
			if j := path.Join("/root", e.Name); j != "/root" && !strings.HasPrefix(j, "/root/") {
				t.Fatalf("%s %q accepted, lands at %q", typ, raw, j)
			}
			switch typ {
			case "symlink":
				if !path.IsAbs(link) {
					if j := path.Join("/root", path.Dir(e.Name), link); j != "/root" && !strings.HasPrefix(j, "/root/") {
						t.Fatalf("symlink %q -> %q accepted, points at %q", raw, link, j)
					}
				}
			case "hardlink":
				if j := path.Join("/root", link); j != "/root" && !strings.HasPrefix(j, "/root/") {
					t.Fatalf("hardlink %q -> %q accepted, points at %q", raw, link, j)
				}
			}
		}
	})
}

// TestCleanNameMatchesPathClean: the fast path for names that are clean
// already gives what cleaning them gives, on awkward names and on every
// name of a real tree in the forms users and TOCs write them.
func TestCleanNameMatchesPathClean(t *testing.T) {
	reference := func(name string) string { return strings.TrimPrefix(path.Clean("/"+name), "/") }
	names := []string{"", ".", "..", "/", "//", "./", "a", "a/", "/a", "./a", "a//b", "a/./b", "a/../b", "a/..", "../a",
		"a/b/c", "a/b/.", "...", "a/...", ".a", "a.", "a/.b/c", "a/b..", "..a/b", "a\\b", " a", "a /b"}
	// Real names: a tree of the Go distribution, as a layer would hold it.
	root := filepath.Join(runtime.GOROOT(), "src", "net")
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(filepath.Dir(root), p)
		n := filepath.ToSlash(rel)
		names = append(names, n, "./"+n, "/"+n+"/", n+"/./", n+"/../x")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if got, want := CleanName(n), reference(n); got != want {
			t.Errorf("CleanName(%q) = %q, want %q", n, got, want)
		}
	}
}

// TestSymlinkParent: the nearest parent that is a symlink, whether the
// layer has a few symlinks (compared one by one) or many (looked up by
// parent), and a replaced entry no longer counts.
func TestSymlinkParent(t *testing.T) {
	for _, extra := range []int{0, 2 * fewLinks} {
		b := NewBuilder("gzip", 0)
		add := func(typ, name, link string) {
			t.Helper()
			if _, err := b.Add(&estargz.TOCEntry{Name: name, Type: typ, LinkName: link}); err != nil {
				t.Fatal(err)
			}
		}
		add("dir", "usr", "")
		add("symlink", "usr/lib", "lib64")
		add("symlink", "usr/lib/x/y", "z")
		add("symlink", "opt", "usr")
		add("symlink", "gone", "usr")
		add("dir", "gone", "") // replaces the symlink
		for i := range extra {
			add("symlink", fmt.Sprintf("links/l%d", i), "usr")
		}
		toc := b.TOC()
		for _, tc := range []struct {
			name, want string
		}{
			{"usr/bin/ls", ""},
			{"usr/lib", ""}, // the link itself
			{"usr/lib/libc.so", "usr/lib"},
			{"usr/lib/x/y/f", "usr/lib/x/y"}, // the nearest
			{"usr/libexec/f", ""},            // a longer name, not a parent
			{"opt/f", "opt"},
			{"optx/f", ""},
			{"gone/f", ""},
		} {
			got, ok := toc.SymlinkParent(tc.name)
			if got != tc.want || ok != (tc.want != "") {
				t.Errorf("%d symlinks more: SymlinkParent(%q) = %q, %v; want %q", extra, tc.name, got, ok, tc.want)
			}
		}
	}
}
