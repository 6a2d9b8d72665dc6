package sgfetch

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/stargz-get/stargz-get/pkg/fetch"
	"github.com/stargz-get/stargz-get/pkg/toc"
	"github.com/stargz-get/stargz-get/pkg/wire"
)

// plainJob fetches PATHs from a plain layer without a seek index in one
// pass over its stream (fetch.RunStream), stopping after the last entry
// wanted when every PATH names a file.
type plainJob struct {
	rec      wire.Layer
	layer    *fetch.Layer
	paths    []string         // cleaned
	byPath   map[string][]int // indexes into paths ("" is the whole layer)
	matched  []bool
	done     []bool // an entry of exactly that name, not a directory, passed
	left     int
	full     bool // read to the end (--require-verified)
	notFound func(path string) error
}

func newPlainJob(rec wire.Layer, layer *fetch.Layer, paths []string, notFound func(string) error) *plainJob {
	j := &plainJob{rec: rec, layer: layer, byPath: map[string][]int{}, matched: make([]bool, len(paths)), done: make([]bool, len(paths)), left: len(paths), notFound: notFound}
	for i, p := range paths {
		p = toc.CleanName(p)
		j.paths = append(j.paths, p)
		j.byPath[p] = append(j.byPath[p], i)
	}
	return j
}

// Select implements fetch.Selector.
func (j *plainJob) Select(e *toc.Entry) (any, bool) {
	if toc.Landmark(e.Name) {
		return nil, false
	}
	// The PATHs an entry is under are its name and its parents: looked up
	// one by one, as many as the name has parts, whatever the number of
	// PATHs (tens of thousands from xargs against a layer as many).
	ok := false
	for a := e.Name; ; {
		for _, i := range j.byPath[a] {
			ok, j.matched[i] = true, true
			if a == e.Name && e.Type != wire.TypeDir && !j.done[i] {
				j.done[i] = true
				j.left--
			}
		}
		if a == "" {
			break
		}
		if k := strings.LastIndexByte(a, '/'); k >= 0 {
			a = a[:k]
		} else {
			a = ""
		}
	}
	if !ok {
		return nil, false
	}
	in := entryRef{Ref: j.rec.Ref, Manifest: j.rec.Manifest, Layer: j.rec.Digest, Name: e.Name, Type: e.Type}
	return &item{in: in, layer: j.layer, tocEntry: e}, true
}

// Done implements fetch.Selector: every PATH was a file and has passed.
func (j *plainJob) Done() bool { return !j.full && j.left == 0 }

// run streams the layer and reports a PATH that matched nothing.
func (j *plainJob) run(ctx context.Context, root *os.Root, maxEntries int64, requireVerified bool, opts fetch.Options, emit func(*fetch.Outcome), stderr io.Writer) error {
	j.full = requireVerified
	if err := fetch.RunStream(ctx, root, j.layer, maxEntries, j, opts, emit); err != nil {
		return fmt.Errorf("layer %d (%s) of %s: %w", j.rec.Index, j.rec.Digest, j.rec.Ref, err)
	}
	if j.Done() {
		fmt.Fprintf(stderr, "%s: warning: layer %s of %s is %s without a seek index: it was read up to the last file wanted and no further, so its digest was not checked (results have no \"verified\"); --require-verified reads it to the end and checks it\n", tool, j.rec.Digest, j.rec.Ref, j.layer.TOC.Format)
	}
	for i, p := range j.paths {
		if !j.matched[i] {
			return j.notFound(p)
		}
	}
	return nil
}
