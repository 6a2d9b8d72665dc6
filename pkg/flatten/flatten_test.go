package flatten

import (
	"strings"
	"testing"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/google/go-cmp/cmp"

	"github.com/stargz-get/stargz-get/pkg/toc"
)

// layer makes entries from "type name" strings ("dir a", "reg a/b").
func layer(specs ...string) []*toc.Entry {
	var es []*toc.Entry
	for _, s := range specs {
		typ, name, _ := strings.Cut(s, " ")
		es = append(es, &toc.Entry{TOCEntry: &estargz.TOCEntry{Name: name, Type: typ}, Name: name, RawName: name})
	}
	return es
}

func TestFlatten(t *testing.T) {
	for _, tc := range []struct {
		name   string
		layers [][]*toc.Entry
		want   []string // "layer:name"
	}{
		{"later layer replaces a file",
			[][]*toc.Entry{layer("reg a"), layer("reg a")},
			[]string{"1:a"}},
		{"whiteout deletes a file of a lower layer",
			[][]*toc.Entry{layer("dir etc", "reg etc/x", "reg etc/y"), layer("reg etc/.wh.x")},
			[]string{"0:etc", "0:etc/y"}},
		{"whiteout deletes a directory tree",
			[][]*toc.Entry{layer("dir d", "dir d/e", "reg d/e/f", "reg keep"), layer("reg .wh.d")},
			[]string{"0:keep"}},
		{"whiteout applies to lower layers only",
			[][]*toc.Entry{layer("reg a"), layer("reg .wh.a", "reg a")},
			[]string{"1:a"}},
		{"opaque directory hides lower contents, keeps its own",
			[][]*toc.Entry{layer("dir o", "reg o/a", "dir o/sub", "reg o/sub/b"), layer("dir o", "reg o/.wh..wh..opq", "reg o/c")},
			[]string{"1:o", "1:o/c"}},
		{"file replacing a directory hides its contents",
			[][]*toc.Entry{layer("dir x", "reg x/y"), layer("reg x")},
			[]string{"1:x"}},
		{"directory replacing a file",
			[][]*toc.Entry{layer("reg x"), layer("dir x", "reg x/y")},
			[]string{"1:x", "1:x/y"}},
		{"directory over a directory merges",
			[][]*toc.Entry{layer("dir d", "reg d/a"), layer("dir d", "reg d/b")},
			[]string{"1:d", "0:d/a", "1:d/b"}},
		{"a symlink under a new file's path gives way",
			[][]*toc.Entry{layer("symlink lib"), layer("reg lib/x")},
			[]string{"1:lib/x"}},
		{"deleted then brought back",
			[][]*toc.Entry{layer("reg a"), layer("reg .wh.a"), layer("reg a")},
			[]string{"2:a"}},
		{"landmarks and whiteouts are never listed",
			[][]*toc.Entry{layer("reg .prefetch.landmark", "reg .wh.nothing", "reg z")},
			[]string{"0:z"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, v := range Flatten(tc.layers) {
				got = append(got, strings.Join([]string{string(rune('0' + v.Layer)), v.Entry.Name}, ":"))
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Flatten (-want +got):\n%s", diff)
			}
		})
	}
}
