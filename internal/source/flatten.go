package source

import (
	"context"
	"fmt"
	"regexp"
	"strconv"

	"github.com/sourcegraph/conc/pool"

	"github.com/stargz-get/stargz-get/pkg/fetch"
	"github.com/stargz-get/stargz-get/pkg/flatten"
	"github.com/stargz-get/stargz-get/pkg/registry"
	"github.com/stargz-get/stargz-get/pkg/toc"
	"github.com/stargz-get/stargz-get/pkg/wire"
)

// parallelTOCs is how many layer TOCs are read at once.
const parallelTOCs = 4

// FlatEntry is an entry of an image's flattened view, with the layer that
// provides it.
type FlatEntry struct {
	Rec   wire.Layer
	Layer *fetch.Layer
	Entry *toc.Entry
}

// Flatten reads the TOCs of the layers recs describes (one image's layers,
// base first) and returns the visible entries of the filesystem they make,
// sorted by name. Every layer must be eStargz.
func (s *Source) Flatten(ctx context.Context, recs []wire.Layer) ([]FlatEntry, error) {
	layers := make([]*fetch.Layer, len(recs))
	p := pool.New().WithContext(ctx).WithMaxGoroutines(parallelTOCs).WithCancelOnError().WithFirstError()
	for i, rec := range recs {
		p.Go(func(ctx context.Context) error {
			ref, err := s.Client.ParseReference(rec.Ref)
			if err != nil {
				return err
			}
			l, err := s.Open(ctx, ref.Context(), rec)
			layers[i] = l
			return err
		})
	}
	if err := p.Wait(); err != nil {
		return nil, err
	}
	all := make([][]*toc.Entry, len(layers))
	for i, l := range layers {
		all[i] = l.TOC.Entries
	}
	var out []FlatEntry
	for _, v := range flatten.Flatten(all) {
		out = append(out, FlatEntry{Rec: recs[v.Layer], Layer: layers[v.Layer], Entry: v.Entry})
	}
	return out, nil
}

// ImageRecords resolves the formats of img's layers and returns their
// records, base first.
func (s *Source) ImageRecords(ctx context.Context, img *registry.Image) ([]wire.Layer, error) {
	recs := make([]wire.Layer, len(img.Layers))
	for i, l := range img.Layers {
		format, err := s.Format(ctx, img, l)
		if err != nil {
			return nil, err
		}
		recs[i] = Record(img, l, format)
	}
	return recs, nil
}

var layerSpec = regexp.MustCompile(`^(sha256:)?[0-9a-f]{6,64}$`)

// LooksLikeLayer reports whether an argument names a layer (a 0-based
// index, a digest or a digest prefix of at least 6 hex digits) rather
// than a path.
func LooksLikeLayer(arg string) bool {
	if n, err := strconv.Atoi(arg); err == nil && n >= 0 && len(arg) < 4 {
		return true
	}
	return layerSpec.MatchString(arg)
}

// GroupByImage splits layer records into runs of one image each (same ref
// and manifest), keeping their order.
func GroupByImage(recs []wire.Layer) [][]wire.Layer {
	var groups [][]wire.Layer
	for i, r := range recs {
		if i == 0 || r.Ref != recs[i-1].Ref || r.Manifest != recs[i-1].Manifest {
			groups = append(groups, nil)
		}
		groups[len(groups)-1] = append(groups[len(groups)-1], r)
	}
	return groups
}

// CheckOrder makes sure one image's records are its layers in order, as
// flattening needs.
func CheckOrder(recs []wire.Layer) error {
	for i, r := range recs {
		if r.Index != i {
			return fmt.Errorf("layer records of %s are not the image's layers in order (record %d has index %d): flattening needs all layers, base first, as sg-layers prints them", r.Ref, i, r.Index)
		}
	}
	return nil
}
