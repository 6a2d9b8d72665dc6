package sgls

import (
	"context"
	"maps"
	"slices"
	"strings"

	"github.com/stargz-get/stargz-get/internal/cli"
	"github.com/stargz-get/stargz-get/internal/source"
	"github.com/stargz-get/stargz-get/pkg/wire"
)

// diff prints one record per path whose entry differs between the
// flattened views of images a and b (TOCs only).
func (l *lister) diff(ctx context.Context, a, b string) error {
	side := func(ref string) ([]source.FlatEntry, error) {
		img, err := l.src.Image(ctx, ref, "")
		if err != nil {
			return nil, err
		}
		recs, err := l.src.ImageRecords(ctx, img)
		if err != nil {
			return nil, err
		}
		return l.src.Flatten(ctx, recs)
	}
	before, err := side(a)
	if err != nil {
		return cli.Hint(err)
	}
	after, err := side(b)
	if err != nil {
		return cli.Hint(err)
	}
	bimg, err := l.src.Image(ctx, b, "")
	if err != nil {
		return cli.Hint(err)
	}
	for _, r := range Diff(before, after, bimg.Ref.Name(), bimg.Manifest.String()) {
		if err := l.enc.Encode(r); err != nil {
			return err
		}
	}
	return nil
}

// Diff compares two flattened views (sorted by name, as Source.Flatten
// returns them) and returns one record per differing path, sorted by
// name: the path's entry in after with Change set and Before holding its
// entry in before. A removed path's record has only ref and manifest (of
// after's image), name, change and before. Times are not compared: a
// rebuilt image changes them all.
func Diff(before, after []source.FlatEntry, ref, manifest string) []wire.Entry {
	var out []wire.Entry
	rec := func(fe source.FlatEntry) wire.Entry { return EntryRecord(fe.Rec, fe.Layer.TOC, fe.Entry) }
	i, j := 0, 0
	for i < len(before) || j < len(after) {
		switch {
		case j == len(after) || i < len(before) && before[i].Entry.Name < after[j].Entry.Name:
			a := rec(before[i])
			out = append(out, wire.Entry{Ref: ref, Manifest: manifest, Name: a.Name, Change: wire.ChangeRemoved, Before: &a})
			i++
		case i == len(before) || after[j].Entry.Name < before[i].Entry.Name:
			b := rec(after[j])
			b.Change = wire.ChangeAdded
			out = append(out, b)
			j++
		default:
			a, b := rec(before[i]), rec(after[j])
			if c := change(&a, &b); c != "" {
				b.Change, b.Before = c, &a
				out = append(out, b)
			}
			i++
			j++
		}
	}
	return out
}

// change says how entry b differs from a at the same path, or "".
func change(a, b *wire.Entry) string {
	switch {
	case a.Type != b.Type, a.Size != b.Size, a.Digest != b.Digest,
		a.DevMajor != b.DevMajor, a.DevMinor != b.DevMinor:
		return wire.ChangeModified
	case a.Mode != b.Mode, a.UID != b.UID, a.GID != b.GID,
		a.LinkName != b.LinkName && !(a.Type == wire.TypeHardlink && sameLink(a.LinkName, b.LinkName)),
		!maps.EqualFunc(a.Xattrs, b.Xattrs, slices.Equal):
		return wire.ChangeMetadata
	}
	return ""
}

func sameLink(a, b string) bool {
	return strings.TrimPrefix(a, "./") == strings.TrimPrefix(b, "./")
}
