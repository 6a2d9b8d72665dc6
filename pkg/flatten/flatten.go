// Package flatten computes the filesystem an image's layers produce when
// unpacked in order, following the OCI image layer rules, without reading
// any file contents: only the layers' tables of contents.
//
// The rules (OCI image spec, "Representing Changes"): entries of a later
// layer replace entries of earlier layers at the same path; a replaced
// directory keeps the lower layers' contents unless the new entry is not a
// directory; a whiteout file ".wh.NAME" deletes NAME and everything below it
// from the lower layers; an opaque whiteout ".wh..wh..opq" in a directory
// hides everything the lower layers have below that directory. Whiteouts
// apply to lower layers only and never appear in the result.
package flatten

import (
	"path"
	"sort"
	"strings"

	"github.com/stargz-get/stargz-get/pkg/toc"
)

// Whiteout prefixes from the OCI image spec.
const (
	WhiteoutPrefix = ".wh."
	OpaqueWhiteout = ".wh..wh..opq"
)

// Visible is an entry of the flattened filesystem and the layer (its index
// in the list given to Flatten) that provides it.
type Visible struct {
	Layer int
	Entry *toc.Entry
}

// Flatten applies layers (base first, each a list of entries) and returns
// the visible entries sorted by name, so parents come before children.
func Flatten(layers [][]*toc.Entry) []Visible {
	fs := map[string]Visible{}
	for i, entries := range layers {
		// Whiteouts first: they delete from the lower layers only.
		for _, e := range entries {
			dir, base := path.Split(e.Name)
			dir = strings.TrimSuffix(dir, "/")
			switch {
			case base == OpaqueWhiteout:
				removeBelow(fs, dir)
			case strings.HasPrefix(base, WhiteoutPrefix):
				target := path.Join(dir, strings.TrimPrefix(base, WhiteoutPrefix))
				delete(fs, target)
				removeBelow(fs, target)
			}
		}
		for _, e := range entries {
			if strings.HasPrefix(path.Base(e.Name), WhiteoutPrefix) || toc.Landmark(e.Name) {
				continue
			}
			if old, ok := fs[e.Name]; ok && old.Entry.Type == "dir" && e.Type != "dir" {
				removeBelow(fs, e.Name)
			}
			// A non-directory below this entry's path in a lower layer
			// (e.g. a symlink where this layer has a directory) is
			// replaced by the implicit parent directory.
			for dir := path.Dir(e.Name); dir != "."; dir = path.Dir(dir) {
				if old, ok := fs[dir]; ok && old.Layer < i && old.Entry.Type != "dir" {
					delete(fs, dir)
				}
			}
			fs[e.Name] = Visible{Layer: i, Entry: e}
		}
	}
	out := make([]Visible, 0, len(fs))
	for _, v := range fs {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Entry.Name < out[j].Entry.Name })
	return out
}

// removeBelow deletes every entry strictly below dir ("" is the root).
func removeBelow(fs map[string]Visible, dir string) {
	prefix := dir + "/"
	if dir == "" || dir == "." {
		prefix = ""
	}
	for name := range fs {
		if strings.HasPrefix(name, prefix) && name != dir {
			delete(fs, name)
		}
	}
}
