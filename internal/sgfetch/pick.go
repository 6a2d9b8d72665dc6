package sgfetch

import (
	"slices"
	"strings"

	"github.com/stargz-get/stargz-get/pkg/fetch"
	"github.com/stargz-get/stargz-get/pkg/toc"
	"github.com/stargz-get/stargz-get/pkg/wire"
)

// selectLayerPaths is selectPaths over the entries of one layer (landmarks
// left out), without a FlatEntry per entry: a layer listed from a seek
// index may have a hundred thousand entries, and a copy of its record for
// each would cost more memory than its TOC.
func selectLayerPaths(rec wire.Layer, layer *fetch.Layer, paths []string, notFound func(path string) error) ([]*item, error) {
	var at []int32
	for i, e := range layer.TOC.Entries {
		if !toc.Landmark(e.Name) {
			at = append(at, int32(i))
		}
	}
	entry := func(i int) *toc.Entry { return layer.TOC.Entries[at[i]] }
	return pickPaths(len(at), entry, func(i int) *item {
		e := entry(i)
		in := entryRef{Ref: rec.Ref, Manifest: rec.Manifest, Layer: rec.Digest, Name: e.Name, Type: e.Type}
		return &item{in: in, layer: layer, tocEntry: e}
	}, paths, notFound)
}

// pickPaths picks, of n entries (entry(i) is the i-th), those at or under
// each path, in the entries' order for each path, path after path, made
// into items by itemOf; a path that matches nothing is the error notFound
// makes. Entries are sorted by name once, so each path costs two binary
// searches plus its matches (the names at or under a path are one run of
// the sorted order, the path itself and the names starting with
// path+"/"), not a pass over every entry.
func pickPaths(n int, entry func(i int) *toc.Entry, itemOf func(i int) *item, paths []string, notFound func(path string) error) ([]*item, error) {
	order := make([]int32, n)
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortStableFunc(order, func(a, b int32) int {
		return strings.Compare(entry(int(a)).Name, entry(int(b)).Name)
	})
	nameAt := func(i int) string { return entry(int(order[i])).Name }
	var items []*item
	var picked []int
	for _, p := range paths {
		name := toc.CleanName(p)
		picked = picked[:0]
		if name == "" { // the root: everything, in order
			for i := range n {
				picked = append(picked, i)
			}
		} else {
			i, _ := slices.BinarySearchFunc(order, name, func(e int32, name string) int {
				return strings.Compare(entry(int(e)).Name, name)
			})
			for ; i < len(order) && nameAt(i) == name; i++ {
				picked = append(picked, int(order[i]))
			}
			dir := name + "/"
			i, _ = slices.BinarySearchFunc(order, dir, func(e int32, dir string) int {
				return strings.Compare(entry(int(e)).Name, dir)
			})
			for ; i < len(order) && strings.HasPrefix(nameAt(i), dir); i++ {
				picked = append(picked, int(order[i]))
			}
			slices.Sort(picked) // back in the entries' order
		}
		if len(picked) == 0 {
			return nil, notFound(p)
		}
		for _, i := range picked {
			items = append(items, itemOf(i))
		}
	}
	return items, nil
}
