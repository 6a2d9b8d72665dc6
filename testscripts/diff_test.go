package testscripts

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/stargz-get/stargz-get/internal/testenv"
)

// diffWorld is the diff pair (two versions of one image) pushed to the
// anonymous registry, as DIFFA and DIFFB, and unpacked by the reference
// unpacker for checkdiff.
type diffWorld struct {
	pair       *testenv.DiffPair
	rootA      string
	rootB      string
	host, vars string
}

var theDiff diffWorld

// setupDiff builds, pushes and unpacks the diff pair, and returns the
// variables scripts see.
func setupDiff(ctx context.Context, host string) ([]string, error) {
	p, err := testenv.BuildDiffPair(filepath.Join(os.TempDir(), "stargz-get-fixtures"))
	if err != nil {
		return nil, err
	}
	d := &theDiff
	d.pair = p
	for _, img := range []*testenv.Image{p.A, p.B} {
		if err := testenv.PushImage(ctx, host, img); err != nil {
			return nil, err
		}
	}
	if d.rootA, err = os.MkdirTemp("", "stargz-get-diff-a-"); err != nil {
		return nil, err
	}
	if d.rootB, err = os.MkdirTemp("", "stargz-get-diff-b-"); err != nil {
		return nil, err
	}
	if err := testenv.UnpackImage(p.A, d.rootA); err != nil {
		return nil, err
	}
	if err := testenv.UnpackImage(p.B, d.rootB); err != nil {
		return nil, err
	}
	return []string{"DIFFA=" + p.A.Ref(host), "DIFFB=" + p.B.Ref(host), "DIFFROOTB=" + d.rootB}, nil
}

func closeDiff() {
	for _, d := range []string{theDiff.rootA, theDiff.rootB} {
		if d != "" {
			os.RemoveAll(d)
		}
	}
}

// checkdiff FILE: FILE, the output of sg-ls --diff DIFFA DIFFB, says for
// every path what comparing the two images unpacked by the reference
// unpacker says (as diff -r would, plus modes and link targets): added,
// removed, modified (type or contents) or metadata (mode, link target),
// and lists nothing else.
func checkdiff(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 || neg {
		ts.Fatalf("usage: checkdiff FILE")
	}
	want, err := treeDiff(theDiff.rootA, theDiff.rootB)
	if err != nil {
		ts.Fatalf("%v", err)
	}
	got := map[string]string{}
	for i, line := range strings.Split(strings.TrimSpace(ts.ReadFile(args[0])), "\n") {
		var r struct{ Name, Change string }
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			ts.Fatalf("%s line %d: %v", args[0], i+1, err)
		}
		if _, dup := got[r.Name]; dup {
			ts.Fatalf("%s: %s listed twice", args[0], r.Name)
		}
		got[r.Name] = r.Change
	}
	var bad []string
	for n, c := range want {
		if got[n] != c {
			bad = append(bad, fmt.Sprintf("%s: %q, the unpacked trees say %q", n, got[n], c))
		}
	}
	for n, c := range got {
		if _, ok := want[n]; !ok {
			bad = append(bad, fmt.Sprintf("%s: %q, but the unpacked trees do not differ there", n, c))
		}
	}
	sort.Strings(bad)
	if len(bad) > 0 {
		ts.Fatalf("sg-ls --diff differs from the reference in %d paths:\n%s", len(bad), strings.Join(bad, "\n"))
	}
}

// treeDiff compares two directory trees path by path.
func treeDiff(a, b string) (map[string]string, error) {
	list := func(root string) (map[string]fs.FileInfo, error) {
		m := map[string]fs.FileInfo{}
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			if rel == "." {
				return nil
			}
			fi, err := d.Info()
			m[filepath.ToSlash(rel)] = fi
			return err
		})
		return m, err
	}
	ta, err := list(a)
	if err != nil {
		return nil, err
	}
	tb, err := list(b)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for n, fa := range ta {
		fb, ok := tb[n]
		if !ok {
			out[n] = "removed"
			continue
		}
		pa, pb := filepath.Join(a, n), filepath.Join(b, n)
		switch {
		case fa.Mode().Type() != fb.Mode().Type():
			out[n] = "modified"
		case fa.Mode().IsRegular():
			ca, err := os.ReadFile(pa)
			if err != nil {
				return nil, err
			}
			cb, err := os.ReadFile(pb)
			if err != nil {
				return nil, err
			}
			if !bytes.Equal(ca, cb) {
				out[n] = "modified"
			} else if fa.Mode().Perm() != fb.Mode().Perm() {
				out[n] = "metadata"
			}
		case fa.Mode().Type() == fs.ModeSymlink:
			la, _ := os.Readlink(pa)
			lb, _ := os.Readlink(pb)
			if la != lb {
				out[n] = "metadata"
			}
		case fa.Mode().Perm() != fb.Mode().Perm():
			out[n] = "metadata"
		}
	}
	for n := range tb {
		if _, ok := ta[n]; !ok {
			out[n] = "added"
		}
	}
	return out, nil
}
