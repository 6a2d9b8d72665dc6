// Package sgls is the sg-ls tool: layer records (or IMAGE BLOB) in, one
// file entry per TOC entry out.
package sgls

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"

	"github.com/sourcegraph/conc/stream"

	"github.com/stargz-get/stargz-get/internal/cli"
	"github.com/stargz-get/stargz-get/internal/source"
	"github.com/stargz-get/stargz-get/pkg/fetch"
	"github.com/stargz-get/stargz-get/pkg/toc"
	"github.com/stargz-get/stargz-get/pkg/wire"
)

const tool = "sg-ls"

const usage = `Usage:
  sg-ls [options] IMAGE BLOB
  sg-ls [options] --flatten IMAGE
  sg-layers IMAGE | sg-ls [options] [--flatten]
  sg-ls [options] --diff IMAGE_A IMAGE_B

Print one JSON record per file, directory and link in the table of
contents of an eStargz layer, reading only the layer's footer and TOC
(usually one HTTP Range request). Large files' chunks are folded into their
file's record. With IMAGE BLOB, list that layer; BLOB is a digest, a unique
digest prefix, or a 0-based layer index. Without arguments, list every
layer record read from stdin (the output of sg-layers), in order.

With --flatten, list the filesystem the image's layers make when unpacked
in order instead: later layers replace earlier ones at the same path,
".wh.NAME" whiteouts delete NAME, ".wh..wh..opq" hides what lower layers
have in a directory. Each entry names the layer that provides it, sorted by
name; deleted and replaced files are not listed, so sg-fetch never
downloads them.

With --diff, compare the flattened views of IMAGE_A and IMAGE_B (TOCs
only, no file contents; across registries and platforms) and print one
record per path that differs, sorted by name: the path's entry in IMAGE_B
with "change" set to "added", "removed", "modified" (type, size, digest
or device differ) or "metadata" (mode, owner, link target or xattrs
differ; times are not compared), and "before", its entry in IMAGE_A.
Piped into sg-fetch, the IMAGE_B side of what changed is fetched and
removed paths are skipped.

Options:
  -a, --all                 also list the .prefetch.landmark and
                            .no.prefetch.landmark marker files      SG_ALL
  --flatten                 list the image's flattened filesystem (all
                            layers, base first)                 SG_FLATTEN
  --diff                    compare two images' flattened views SG_DIFF
  --allow-full-layers       list layers that are not eStargz (plain gzip,
                            zstd, tar) by streaming them whole, checked
                            against their digest; a gzip layer's seek index
                            is built on the way and cached, and later runs
                            list it from there without reading the layer
                            (by default such layers are an error, unless
                            indexed already)          SG_ALLOW_FULL_LAYERS

` + cli.CacheUsage + `
` + cli.LimitUsage + `
` + cli.RegistryUsage + `
Examples:
  sg-ls ghcr.io/stargz-containers/python:3.9-esgz 0 | jq -r .name
  sg-layers IMAGE | sg-ls | jq -c 'select(.type == "reg" and .size > 1000000)'
  sg-layers IMAGE | sg-ls | grep '"name":"etc/' | sg-fetch -o out
  sg-ls --flatten IMAGE | sg-fetch -o rootfs
  sg-ls --diff IMAGE:v1 IMAGE:v2 | jq -c 'select(.change == "modified")'

Exit status: 0 on success, 1 when a layer could not be listed (the others
are still listed), 2 on usage errors.
`

// Main runs sg-ls as a process.
func Main() int {
	// Listing a plain layer holds its entry table and seek index besides
	// the stream's segments; collecting at half again the live heap, and
	// harder near 80 MiB, keeps peak RSS under 100 MiB for layers of 70,000
	// entries streamed whole, even when the GC is short of CPU.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(50)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(80 << 20)
	}
	return cli.Main(tool, Run)
}

// Run is sg-ls without the process: testable in-process.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(tool, flag.ContinueOnError)
	var rf cli.RegistryFlags
	rf.Register(fs)
	all := fs.Bool("all", false, "list marker files")
	fs.BoolVar(all, "a", false, "list marker files")
	flat := fs.Bool("flatten", false, "list the flattened filesystem")
	diff := fs.Bool("diff", false, "compare two images")
	allowFull := fs.Bool("allow-full-layers", false, "read non-eStargz layers whole")
	var cf cli.CacheFlags
	cf.Register(fs)
	var limits cli.LimitFlags
	limits.Register(fs)
	pos, err := cli.Parse(fs, args, usage, stdout)
	if err != nil {
		return err
	}
	if err := limits.Check(); err != nil {
		return err
	}
	switch {
	case *diff && *flat:
		return cli.Usagef("--diff compares the flattened views already; drop --flatten")
	case *diff && len(pos) != 2:
		return cli.Usagef("--diff takes IMAGE_A IMAGE_B; got %d arguments", len(pos))
	case *flat && len(pos) > 1:
		return cli.Usagef("--flatten takes IMAGE, or layer records on stdin; got %d arguments", len(pos))
	case !*flat && !*diff && len(pos) != 0 && len(pos) != 2:
		return cli.Usagef("want IMAGE BLOB, or layer records on stdin; got %d arguments", len(pos))
	}
	if len(pos) > 0 {
		rf.Stdin = stdin // the input came as arguments: stdin is free for --password-stdin
	}
	src, _, err := cli.NewSource(tool, stderr, &rf, limits.TOC())
	if err != nil {
		return err
	}
	src.AllowFull = *allowFull
	src.Cache = cf.Open(tool, stderr)
	src.Warnf = cli.Warnf(tool, stderr)
	defer src.Close()
	enc := wire.NewEncoder(stdout)
	l := &lister{src: src, enc: enc, all: *all}
	if *diff {
		return l.diff(ctx, pos[0], pos[1])
	}
	if *flat {
		return l.flattened(ctx, pos, limits.Decoder(wire.NewDecoder(stdin, "stdin")))
	}

	if len(pos) == 2 {
		img, err := src.Image(ctx, pos[0], "")
		if err != nil {
			return cli.Hint(err)
		}
		layer, err := source.FindLayer(img, pos[1])
		if err != nil {
			return cli.Hint(err)
		}
		format, err := src.Format(ctx, img, layer)
		if err != nil {
			return cli.Hint(err)
		}
		return cli.Hint(l.list(ctx, source.Record(img, layer, format)))
	}

	// Layers are read concurrently and printed in input order.
	const parallelLayers = 4
	s := stream.New().WithMaxGoroutines(parallelLayers)
	dec := limits.Decoder(wire.NewDecoder(stdin, "stdin"))
	var (
		failed, total int
		fatal         error // set by callbacks only
		decodeErr     error
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for {
		var rec wire.Layer
		err := dec.Decode(&rec)
		if err == io.EOF {
			break
		}
		if err != nil {
			decodeErr = err
			break
		}
		total++
		s.Go(func() stream.Callback {
			layer, err := l.layer(ctx, rec)
			return func() {
				if fatal != nil {
					return
				}
				if err == nil {
					err = l.print(rec, layer.TOC)
				}
				switch {
				case err == nil:
				case cli.IsEPIPE(err) || errors.Is(err, context.Canceled):
					fatal = err
					cancel()
				default:
					fmt.Fprintf(stderr, "%s: error: %v\n", tool, err)
					if errors.Is(err, source.ErrNotLazy) {
						fmt.Fprintf(stderr, "%s: hint: %s\n", tool, source.NotLazyHint)
					}
					if errors.Is(err, source.ErrBlob) {
						fmt.Fprintf(stderr, "%s: hint: %s\n", tool, source.BlobHint)
					}
					failed++
				}
			}
		})
	}
	s.Wait()
	if fatal != nil {
		return fatal
	}
	if decodeErr != nil {
		return cli.WithHint(decodeErr, "sg-ls reads the layer records sg-layers prints, one JSON object per line")
	}
	if failed > 0 {
		return cli.Failedf("%d of %d layers could not be listed", failed, total)
	}
	return nil
}

type lister struct {
	src *source.Source
	enc *wire.Encoder
	all bool
}

func (l *lister) list(ctx context.Context, rec wire.Layer) error {
	layer, err := l.layer(ctx, rec)
	if err != nil {
		return err
	}
	return l.print(rec, layer.TOC)
}

func (l *lister) layer(ctx context.Context, rec wire.Layer) (*fetch.Layer, error) {
	ref, err := l.src.Client.ParseReference(rec.Ref)
	if err != nil {
		return nil, err
	}
	return l.src.Open(ctx, ref.Context(), rec)
}

func (l *lister) print(rec wire.Layer, t *toc.TOC) error {
	indexed := t.Full && l.src.Indexed(rec.Digest)
	for _, e := range t.Entries {
		if !l.all && toc.Landmark(e.Name) {
			continue
		}
		r := EntryRecord(rec, t, e)
		r.Indexed = indexed
		if err := l.enc.Encode(r); err != nil {
			return err
		}
	}
	return nil
}

// EntryRecord describes entry e of the TOC t of the layer rec as a wire
// record.
func EntryRecord(rec wire.Layer, t *toc.TOC, e *toc.Entry) wire.Entry {
	var tocOffset, offset, end int64
	var chunks []int64
	if !t.Full {
		tocOffset = t.Offset
		offset, end = e.CompressedSpan()
		chunks = e.ChunkStarts()
	}
	return wire.Entry{
		Ref:            rec.Ref,
		Manifest:       rec.Manifest,
		Layer:          rec.Digest,
		LayerSize:      rec.Size,
		TOCOffset:      tocOffset,
		Name:           e.Name,
		Type:           e.Type,
		Size:           e.Size,
		Mode:           e.Mode,
		UID:            e.UID,
		GID:            e.GID,
		UserName:       e.Uname,
		GroupName:      e.Gname,
		ModTime:        e.ModTime3339,
		LinkName:       e.LinkName,
		Digest:         e.Digest,
		Chunks:         len(e.Chunks),
		Offset:         offset,
		CompressedSize: end - offset,
		ChunkOffsets:   chunks,
		DevMajor:       e.DevMajor,
		DevMinor:       e.DevMinor,
		Xattrs:         e.Xattrs,
	}
}

// flattened lists the flattened view of IMAGE, or of each image whose
// layer records come on stdin.
func (l *lister) flattened(ctx context.Context, pos []string, dec *wire.Decoder) error {
	var groups [][]wire.Layer
	if len(pos) == 1 {
		img, err := l.src.Image(ctx, pos[0], "")
		if err != nil {
			return cli.Hint(err)
		}
		recs, err := l.src.ImageRecords(ctx, img)
		if err != nil {
			return cli.Hint(err)
		}
		groups = [][]wire.Layer{recs}
	} else {
		var recs []wire.Layer
		for {
			var rec wire.Layer
			err := dec.Decode(&rec)
			if err == io.EOF {
				break
			}
			if err != nil {
				return cli.WithHint(err, "sg-ls reads the layer records sg-layers prints, one JSON object per line")
			}
			recs = append(recs, rec)
		}
		groups = source.GroupByImage(recs)
	}
	for _, recs := range groups {
		if err := source.CheckOrder(recs); err != nil {
			return cli.WithHint(err, "pipe sg-layers IMAGE into sg-ls --flatten without filtering its lines")
		}
		entries, err := l.src.Flatten(ctx, recs)
		if err != nil {
			return cli.Hint(err)
		}
		indexed := map[string]bool{}
		for _, rec := range recs {
			indexed[rec.Digest] = l.src.Indexed(rec.Digest)
		}
		for _, fe := range entries {
			r := EntryRecord(fe.Rec, fe.Layer.TOC, fe.Entry)
			r.Indexed = fe.Layer.TOC.Full && indexed[fe.Rec.Digest]
			if err := l.enc.Encode(r); err != nil {
				return err
			}
		}
	}
	return nil
}
