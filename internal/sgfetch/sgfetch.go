// Package sgfetch is the sg-fetch tool: file entries (or IMAGE BLOB PATH)
// in, files on disk and one fetch result per entry out.
package sgfetch

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sourcegraph/conc/pool"
	"github.com/sourcegraph/conc/stream"

	"github.com/stargz-get/stargz-get/internal/cli"
	"github.com/stargz-get/stargz-get/internal/heapfloor"
	"github.com/stargz-get/stargz-get/internal/source"
	"github.com/stargz-get/stargz-get/pkg/fetch"
	"github.com/stargz-get/stargz-get/pkg/registry"
	"github.com/stargz-get/stargz-get/pkg/toc"
	"github.com/stargz-get/stargz-get/pkg/wire"
)

const tool = "sg-fetch"

const usage = `Usage:
  sg-fetch [options] -o DIR IMAGE PATH...
  sg-fetch [options] -o DIR IMAGE BLOB PATH...
  sg-ls IMAGE BLOB | grep ... | sg-fetch [options] -o DIR
  sg-fetch [options] -o DIR ARTIFACT [GLOB... | BLOB]
  sg-layers ARTIFACT | jq ... | sg-fetch [options] -o DIR
  sg-fetch [options] -o DIR --blob IMAGE BLOB
  sg-fetch [options] -o DIR REPO@sha256:BLOB-DIGEST
  sg-fetch [options] -o - IMAGE PATH           (one file to stdout)
  sg-fetch [options] --tar -o -|FILE.tar IMAGE PATH...   (a tar stream)

Download files out of eStargz layers into DIR, fetching only the compressed
chunks that hold them, with parallel HTTP Range requests. Each file is
written under a temporary name, its chunk and file digests are checked
against the layer's TOC (itself checked against the manifest's TOC digest
annotation), and only then renamed into place under DIR, keeping the
layer's directory structure. One JSON result per entry is printed.

With IMAGE PATH, fetch PATH (a file, or a directory and everything under
it; "/" for everything) from the image's flattened filesystem: what its
layers make when unpacked in order, from whichever layer provides each
file. With IMAGE BLOB PATH, fetch PATH from layer BLOB alone (a 0-based
index, a digest, or a unique digest prefix of 6 or more hex digits). Without arguments, fetch the file
entries read from stdin (the output of sg-ls, filtered as you like); the
layer's TOC is read once per layer, and only the entries' ref, manifest,
layer and name are used.

Artifacts (oras push): each layer is a file named by its title and is
written to DIR/<title>. ARTIFACT alone fetches every titled layer; GLOBs
select titles (path.Match); BLOB one layer. Layer records from sg-layers
on stdin fetch those blobs. Blobs are downloaded in -j parallel ranged
segments into DIR/.sg-<hex>.part, checked against their sha256, and
renamed into place; a killed run is resumed by running it again. ELF
files get mode 0755, others 0644 (less the umask).

Options:
  -o, --output DIR          directory to write into, created if missing
                            (required); "-" writes one regular file's
                            contents to stdout, verified chunk by chunk
                            as they stream out in order (the result goes
                            to stderr; a digest mismatch exits 1, and the
                            bytes already written must be discarded)
                                                                SG_OUTPUT
  --tar                     write the selected entries as one POSIX tar
                            stream (to stdout with -o -, else to the file
                            -o names, renamed into place when complete):
                            names, modes, owners, times, links and xattrs
                            from the TOC, in the order selected; no
                            results are printed                   SG_TAR
  -j, --jobs N              parallel range downloads (default 16) SG_JOBS
  --max-ranges N            most byte ranges asked for in one request
                            (default 64); scattered chunks are fetched
                            with multi-range requests, and servers that
                            do not answer them are asked range by range;
                            1 turns them off                SG_MAX_RANGES
  --progress auto|always|never  progress bar on stderr; auto shows it when
                            stderr is a terminal (default auto) SG_PROGRESS
  --allow-full-layers       fetch from layers that are not eStargz (plain
                            gzip, zstd, tar) by streaming them in parallel
                            segments: with IMAGE BLOB PATH, reading stops
                            after the last file wanted (the layer digest is
                            then not checked); read to the end, the layer
                            is checked against its digest. A gzip layer
                            listed before (its seek index is cached) needs
                            no flag: its files are read lazily
                                                      SG_ALLOW_FULL_LAYERS
  --require-verified        refuse layers whose TOC is not pinned by a TOC
                            digest annotation in the manifest, and files
                            without digests           SG_REQUIRE_VERIFIED
  --refetch                 download files even when an identical file
                            (same digest) is already in place; by default
                            those are skipped, so a re-run after an
                            interruption fetches only what is missing
                                                               SG_REFETCH
  --preserve-permissions    keep setuid, setgid and sticky bits (dropped
                            by default)           SG_PRESERVE_PERMISSIONS
  --same-owner              apply the TOC's uid/gid (only when running as
                            root)                           SG_SAME_OWNER
  --devices                 create fifos, and char/block devices when
                            running as root (refused by default) SG_DEVICES
  --blob                    write a filesystem layer's raw compressed
                            blob instead of its files          SG_BLOB
  --name NAME               file name of a single blob (default: its
                            title, else sha256-<hex>)           SG_NAME
  --overwrite               download blobs even when an identical file
                            is in place                     SG_OVERWRITE
  --extract                 unpack tar, tar.gz, tar.zst, tar.xz and zip
                            blobs into DIR                    SG_EXTRACT
  --keep-archive            with --extract, keep the archive too
                                                         SG_KEEP_ARCHIVE

` + cli.CacheUsage + `
` + cli.LimitUsage + `
` + cli.RegistryUsage + `
Examples:
  sg-fetch -o out ghcr.io/stargz-containers/node:13.13.0-esgz /usr/local/bin/node
  sg-fetch -o rootfs IMAGE /
  sg-fetch -o - IMAGE usr/bin/node | sha256sum
  sg-fetch --tar -o - IMAGE / | tar -x -C rootfs
  sg-ls --diff IMAGE:v1 IMAGE:v2 | sg-fetch -o changed
  sg-layers IMAGE | sg-ls | jq -c 'select(.name | startswith("etc/"))' | sg-fetch -o out
  sg-ls IMAGE 0 | grep '\.so' | sg-fetch -o out -j 16 | jq -r 'select(.status != "fetched")'
  sg-fetch -o out ghcr.io/me/tools:v1 '*linux-amd64*'
  sg-layers ghcr.io/me/tools:v1 | jq -c 'select(.title | test("docs/"))' | sg-fetch -o out

Entries that would write outside DIR (names with "..", absolute names,
links pointing out, entries below a symlink of the layer), hardlinks to
nothing in the layer, entries of unknown type, and fifos and devices
without --devices are refused: each gets a result with "status":"refused"
and the rule in "error", and a line on stderr.

Exit status: 0 when every entry was fetched (or skipped), 1 when any failed
or was refused (the others are still fetched and reported), 2 on usage
errors.
`

// Main runs sg-fetch as a process.
func Main() int {
	// The live heap is mostly TOCs and input records; collecting at half
	// again its size (rather than double) keeps peak RSS of whole-layer
	// fetches well under 100 MiB for tens of thousands of entries.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(50)
	}
	return cli.Main(tool, Run)
}

// Run is sg-fetch without the process: testable in-process.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(tool, flag.ContinueOnError)
	var rf cli.RegistryFlags
	rf.Register(fs)
	var out string
	fs.StringVar(&out, "output", "", "output directory")
	fs.StringVar(&out, "o", "", "output directory")
	var jobs int
	fs.IntVar(&jobs, "jobs", fetch.DefaultJobs, "parallel downloads")
	fs.IntVar(&jobs, "j", fetch.DefaultJobs, "parallel downloads")
	progress := fs.String("progress", "auto", "auto, always or never")
	allowFull := fs.Bool("allow-full-layers", false, "read non-eStargz layers whole")
	requireVerified := fs.Bool("require-verified", false, "refuse unpinned layers")
	tarMode := fs.Bool("tar", false, "write a tar stream")
	var opts fetch.Options
	fs.IntVar(&opts.MaxRanges, "max-ranges", fetch.DefaultMaxRanges, "most ranges in one request")
	fs.BoolVar(&opts.Refetch, "refetch", false, "download identical files again")
	fs.BoolVar(&opts.PreservePermissions, "preserve-permissions", false, "keep setuid/setgid/sticky")
	fs.BoolVar(&opts.SameOwner, "same-owner", false, "apply uid/gid as root")
	fs.BoolVar(&opts.Devices, "devices", false, "create fifos and devices")
	var bo blobOptions
	fs.BoolVar(&bo.raw, "blob", false, "write layer blobs as they are")
	fs.StringVar(&bo.name, "name", "", "file name of a single blob")
	fs.BoolVar(&bo.overwrite, "overwrite", false, "download blobs already in place")
	fs.BoolVar(&bo.extract, "extract", false, "unpack archive blobs")
	fs.BoolVar(&bo.keepArchive, "keep-archive", false, "keep unpacked archives")
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
	case out == "":
		return cli.Usagef("missing -o DIR: say where to write the files")
	case jobs < 1:
		return cli.Usagef("-j must be at least 1, got %d", jobs)
	case opts.MaxRanges < 1:
		return cli.Usagef("--max-ranges must be at least 1, got %d", opts.MaxRanges)
	case *progress != "auto" && *progress != "always" && *progress != "never":
		return cli.Usagef("--progress must be auto, always or never, got %q", *progress)
	}
	if bo.name != "" {
		if bo.name, err = checkName(bo.name); err != nil {
			return err
		}
	}
	if len(pos) > 0 {
		rf.Stdin = stdin // the input came as arguments: stdin is free for --password-stdin
	} else if out == "-" && rf.PasswordStdin {
		return cli.Usagef("--password-stdin reads stdin, which holds the entries; give IMAGE PATH as arguments")
	}
	src, log, err := cli.NewSource(tool, stderr, &rf, limits.TOC())
	if err != nil {
		return err
	}
	src.AllowFull = *allowFull
	src.Cache = cf.Open(tool, stderr)
	opts.Cache = src.Cache // verified chunks, by digest
	src.Warnf = cli.Warnf(tool, stderr)
	defer src.Close()
	bo.jobs, bo.progress, bo.logf = jobs, *progress, log.Func()

	// Blobs: artifacts by title or glob, blob layers, --blob, REPO@digest
	// of a blob, and layer records on stdin.
	var blobJobs []*blobJob
	br := bufio.NewReaderSize(stdin, 64<<10)
	switch {
	case len(pos) > 0:
		if blobJobs, err = blobsFromArgs(ctx, src, pos[0], pos[1:], &bo); err != nil {
			return err
		}
	case peekLayerRecords(br):
		if blobJobs, err = blobsFromStdin(ctx, src, limits.Decoder(wire.NewDecoder(br, "stdin")), &bo); err != nil {
			return err
		}
	}
	if blobJobs != nil && (out == "-" || *tarMode) {
		return cli.Usagef("-o - and --tar write files of layers; blobs (artifact layers, --blob) are written into a directory: give -o DIR")
	}
	if blobJobs != nil {
		return fetchBlobs(ctx, out, blobJobs, &bo, src, stdout, stderr)
	}
	switch {
	case bo.raw || bo.name != "" || bo.extract || bo.keepArchive:
		return cli.Usagef("--blob, --name, --extract and --keep-archive apply to blobs (artifact layers, --blob IMAGE BLOB), not to files of layers")
	case len(pos) == 1:
		return cli.Usagef("want IMAGE PATH..., IMAGE BLOB PATH..., or file entries on stdin; got only IMAGE, which is not an artifact")
	case len(pos) == 2 && source.LooksLikeLayer(pos[1]):
		return cli.Usagef("missing PATH after IMAGE BLOB (use / for the whole layer, or --blob for its compressed blob)")
	}
	stdin = br

	var items []*item
	var job *plainJob // a plain layer without a seek index, read once
	switch {
	case len(pos) > 0 && source.LooksLikeLayer(pos[1]):
		items, job, err = fromArgs(ctx, src, pos[0], pos[1], pos[2:])
	case len(pos) > 0:
		items, job, err = fromFlattened(ctx, src, pos[0], pos[1:])
	default:
		var ahead *fetch.Options // reading ahead is for fetches into a directory
		if !*tarMode && out != "-" {
			opts.Jobs = jobs
			ahead = &opts
		}
		var aheads []*fetch.Ahead
		items, aheads, err = fromStdin(ctx, src, limits.Decoder(wire.NewDecoder(stdin, "stdin")), ahead)
		defer func() {
			for _, a := range aheads {
				a.Close()
			}
		}()
	}
	if err != nil {
		return err
	}
	if (*tarMode || out == "-") && job != nil {
		return cli.WithHint(fmt.Errorf("-o - and --tar read eStargz and zstd:chunked layers; layer %s is a plain %s layer", job.rec.Digest, job.rec.Format),
			"fetch it into a directory with sg-fetch --allow-full-layers -o DIR, then tar or cat from there")
	}
	if *tarMode || out == "-" {
		opts.Jobs, opts.Logf, opts.RequireVerified = jobs, log.Func(), *requireVerified
		j := &streamJob{out: out, tar: *tarMode, requireVerified: *requireVerified, opts: opts, stdout: stdout, stderr: stderr}
		return j.run(ctx, items)
	}

	out, root, err := openOut(out)
	if err != nil {
		return err
	}
	defer root.Close()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	em := newEmitter(stdout, cancel)
	defer em.close()
	var wants []*fetch.Want
	warned := map[*fetch.Layer]bool{}
	for _, it := range items {
		if it.err == nil && it.skip == "" && !it.layer.Pinned {
			if *requireVerified {
				it.err = fmt.Errorf("layer %s has no TOC digest annotation, so its TOC is not pinned to the manifest; --require-verified refuses it", it.in.Layer)
			} else if !warned[it.layer] {
				warned[it.layer] = true
				fmt.Fprintf(stderr, "%s: warning: layer %s of %s has no TOC digest annotation: files are checked against its TOC, which nothing pins to the manifest (results say \"verified\":\"toc-unpinned\"; --require-verified refuses such layers)\n", tool, it.in.Layer, it.in.Ref)
			}
		}
		if it.skip != "" {
			r := it.result(out, wire.StatusSkipped, nil)
			r.Error = it.skip
			em.put(r)
			continue
		}
		if it.err != nil {
			em.put(it.result(out, wire.StatusFailed, it.err))
			continue
		}
		wants = append(wants, &fetch.Want{Layer: it.layer, Entry: it.tocEntry, Tag: it})
	}
	bar := newProgressBar(*progress, stderr)
	opts.Jobs, opts.Logf, opts.RequireVerified = jobs, log.Func(), *requireVerified
	say := func(format string, args ...any) { // a line on stderr
		line := fmt.Sprintf(format, args...)
		if bar != nil {
			bar.println(line)
		} else {
			fmt.Fprintln(stderr, line)
		}
	}
	if bar != nil {
		opts.Progress = bar.update
	}
	start := time.Now()
	var entries int
	var compressed int64
	emit := func(o *fetch.Outcome) { // calls are serialized
		it := o.Want.Tag.(*item)
		r := it.result(out, o.Status, o.Err)
		r.Path = filepath.Join(out, filepath.FromSlash(o.Path))
		if o.Status == wire.StatusFetched || o.Status == wire.StatusSkipped {
			r.Size, r.Digest, r.Verified = o.Size, o.Digest, o.Verified
		}
		switch {
		case o.Status == wire.StatusRefused:
			say("%s: refused %s: %v", tool, quoteName(r.Name), o.Err)
		case o.Status == wire.StatusFetched && !opts.PreservePermissions && o.Want.Entry.Mode&0o6000 != 0:
			say("%s: %s: setuid and setgid bits dropped (--preserve-permissions keeps them)", tool, quoteName(r.Name))
		}
		r.CompressedBytes, r.Requests, r.DurationMs = o.CompressedBytes, o.Requests, o.Duration.Milliseconds()
		r.CachedBytes = o.CachedBytes
		entries++
		compressed += o.CompressedBytes
		em.put(r)
	}
	var jobErr error
	if job != nil {
		jobErr = job.run(ctx, root, limits.MaxTOCEntries, *requireVerified, opts, emit, stderr)
	} else {
		// The TOCs and entries are in: the heap floor that kept the
		// collector from running while they were built would now only
		// hold garbage (see package heapfloor).
		heapfloor.Set(heapfloor.RunFloor)
		fetch.Run(ctx, root, wants, opts, emit)
	}
	bar.finish()
	log.Logf("%d entries, %d compressed bytes of chunks, in %s", entries, compressed, time.Since(start).Round(time.Millisecond))
	if err := em.close(); err != nil {
		return err
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if jobErr != nil {
		return jobErr
	}
	n := len(items)
	if job != nil {
		n = entries
	}
	return em.summary(n, "entries")
}

// summary is the run's error when any result failed or was refused: n
// results of what in all.
func (em *emitter) summary(n int, what string) error {
	switch {
	case em.failed > 0 && em.refused > 0:
		return cli.Failedf("%d of %d %s failed and %d were refused (see the results with \"status\":\"failed\" or \"refused\")", em.failed, n, what, em.refused)
	case em.failed > 0:
		return cli.Failedf("%d of %d %s failed (see the results with \"status\":\"failed\")", em.failed, n, what)
	case em.refused > 0:
		return cli.Failedf("%d of %d %s were refused (see the lines above, and the results with \"status\":\"refused\")", em.refused, n, what)
	}
	return nil
}

// openOut makes the output directory out if it is missing and opens it as
// the root every file is written through; it returns out made absolute.
func openOut(out string) (string, *os.Root, error) {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return "", nil, fmt.Errorf("creating output directory: %w", err)
	}
	out, err := filepath.Abs(out)
	if err != nil {
		return "", nil, err
	}
	root, err := os.OpenRoot(out)
	if err != nil {
		return "", nil, fmt.Errorf("opening output directory: %w", err)
	}
	return out, root, nil
}

// quoteName returns name as it is when it prints as itself on one line,
// else quoted, so that a name from a hostile TOC cannot forge lines on
// stderr.
func quoteName(name string) string {
	if q := strconv.Quote(name); q[1:len(q)-1] != name || strings.ContainsRune(name, ' ') || name == "" {
		return q
	}
	return name
}

// item is one requested entry on its way through.
type item struct {
	in       entryRef
	layer    *fetch.Layer
	tocEntry *toc.Entry
	err      error
	skip     string // why nothing is to be fetched (a path removed in a diff)
}

// entryRef is what an item keeps of its input record: which layer of
// which image, and the entry's name and type, for its result. Not the
// whole wire.Entry: a whole layer has an item per entry, and the record
// is 272 bytes to this one's 80.
type entryRef struct{ Ref, Manifest, Layer, Name, Type string }

func (it *item) result(out, status string, err error) *wire.Result {
	r := &wire.Result{
		Ref:    it.in.Ref,
		Layer:  it.in.Layer,
		Name:   it.in.Name,
		Type:   it.in.Type,
		Path:   filepath.Join(out, filepath.FromSlash(toc.CleanName(it.in.Name))),
		Status: status,
	}
	if it.tocEntry != nil {
		r.Type = it.tocEntry.Type
	}
	if err != nil {
		r.Error = err.Error()
	}
	return r
}

// stdinBatch is how many input lines one decoding task takes.
const stdinBatch = 256

// fromStdin reads file entries and resolves each to its layer's TOC entry.
// Lines are decoded in batches on all cores, and each layer is opened
// (several at a time) as soon as its first entry is decoded, while the
// rest of the input is still coming.
//
// With ahead set, fetching into a directory with those options, the
// layers of which the entries want a large share start being read before
// their TOCs are (see aheadStarter); the caller closes the returned
// Aheads after the fetch.
func fromStdin(ctx context.Context, src *source.Source, dec *wire.Decoder, ahead *fetch.Options) ([]*item, []*fetch.Ahead, error) {
	parent := ctx
	ctx, cancel := context.WithCancel(ctx) // a bad line stops the opening
	defer cancel()
	var (
		mu     sync.Mutex
		seen   = map[layerKey]bool{}
		opened = map[layerKey]*fetch.Layer{}
		errs   = map[layerKey]error{}
	)
	p := pool.New().WithMaxGoroutines(4)
	open := func(e *wire.Entry) {
		k := layerKey{e.Ref, e.Manifest, e.Layer}
		mu.Lock()
		isNew := !seen[k]
		seen[k] = true
		mu.Unlock()
		if !isNew {
			return
		}
		size, tocOffset := e.LayerSize, e.TOCOffset
		p.Go(func() {
			l, err := openLayer(ctx, src, k.ref, k.manifest, k.layer, size, tocOffset)
			mu.Lock()
			opened[k], errs[k] = l, err
			mu.Unlock()
		})
	}
	var (
		items    []*item
		firstErr error // of the first batch with a bad line
		readErr  error
		batch    [][]byte
		nums     []int
		starter  *aheadStarter
	)
	if ahead != nil {
		starter = newAheadStarter(parent, src, *ahead)
	}
	s := stream.New().WithMaxGoroutines(runtime.GOMAXPROCS(0))
	flush := func() {
		lines, ns := batch, nums
		batch, nums = nil, nil
		s.Go(func() stream.Callback {
			// Keep only what is used, and one copy of the strings every
			// line of a layer repeats: tens of thousands of entries stay
			// small.
			interned := map[string]string{}
			intern := func(s string) string {
				if v, ok := interned[s]; ok {
					return v
				}
				interned[s] = s
				return s
			}
			var got []*item
			var ext []extent
			var err error
			for i, line := range lines {
				var e wire.Entry
				if err = dec.DecodeLine(line, ns[i], &e); err != nil {
					break
				}
				slim := entryRef{Ref: intern(e.Ref), Manifest: intern(e.Manifest), Layer: intern(e.Layer), Name: e.Name, Type: intern(e.Type)}
				if e.Change == wire.ChangeRemoved {
					got = append(got, removedItem(&e))
					continue
				}
				open(&e)
				got = append(got, &item{in: slim})
				if ahead != nil && e.Type == wire.TypeReg && e.CompressedSize > 0 {
					x := extent{layer: layerKey{slim.Ref, slim.Manifest, slim.Layer}, tocOffset: e.TOCOffset, span: registry.Span{Off: e.Offset, N: e.CompressedSize}, layerSize: e.LayerSize}
					if e.Chunks == 1 {
						x.digest = e.Digest
					}
					x.chunks = e.ChunkOffsets
					ext = append(ext, x)
				}
			}
			return func() {
				if firstErr == nil {
					items, firstErr = append(items, got...), err
					for _, x := range ext {
						starter.add(x)
					}
				}
			}
		})
	}
	for {
		line, n, err := dec.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			readErr = err
			break
		}
		batch, nums = append(batch, bytes.Clone(line)), append(nums, n)
		// The first line alone, so that its layer is opened at once.
		if len(batch) == stdinBatch || n == 1 {
			flush()
		}
	}
	if len(batch) > 0 {
		flush()
	}
	s.Wait() // every p.Go call is made by then
	if firstErr != nil || readErr != nil {
		cancel()
	}
	if firstErr == nil && readErr == nil {
		starter.flush()
	}
	p.Wait()
	if firstErr == nil {
		firstErr = readErr // a bad line before it is reported first
	}
	aheads := starter.attach(func(k layerKey) *fetch.Layer {
		if errs[k] != nil {
			return nil
		}
		return opened[k]
	})
	if firstErr != nil {
		for _, a := range aheads {
			a.Close()
		}
		return nil, nil, cli.WithHint(firstErr, "sg-fetch reads the file entries sg-ls prints, one JSON object per line")
	}
	for _, it := range items {
		if it.skip != "" {
			continue
		}
		k := layerKey{it.in.Ref, it.in.Manifest, it.in.Layer}
		if it.err = errs[k]; it.err != nil {
			continue
		}
		it.layer = opened[k]
		e, ok := it.layer.TOC.Lookup(it.in.Name)
		if !ok {
			it.err = fmt.Errorf("%q is not in layer %s", it.in.Name, it.in.Layer)
			continue
		}
		it.tocEntry = e
	}
	return items, aheads, nil
}

// layerKey names a layer as file entries do.
type layerKey struct{ ref, manifest, layer string }

// extent is where the contents of a wanted file lie in its layer's blob,
// from its entry; digest is set for files of one chunk, whose chunk the
// cache holds under it.
type extent struct {
	layer                layerKey
	layerSize, tocOffset int64
	span                 registry.Span
	chunks               []int64 // where its chunks after the first start
	digest               string
}

// aheadStarter starts reading the layers of which the entries want a
// large share ahead (fetch.AheadCutter): as the entries come when they
// want at least half a layer, else once the input is in; one fetch.Ahead
// per layer blob, at most one span per job in all. Files the chunk cache
// holds are left out: their bytes are not downloaded. Its methods are
// called in the input's order, from one goroutine at a time; a nil
// aheadStarter does nothing.
type aheadStarter struct {
	ctx    context.Context
	src    *source.Source
	opts   fetch.Options
	left   int // spans still to start
	cached func(digest string) bool
	looked bool                   // cached is set
	layers map[string]*aheadLayer // by layer digest
	order  []string
}

type aheadLayer struct {
	key       layerKey // of the first entry naming the layer
	layerSize int64
	tocOffset int64
	cut       *fetch.AheadCutter // once the fetch's size is known, see add
	pending   []extent           // until then
	seen      int64              // bytes of the extents pending
	ahead     *fetch.Ahead       // once a span is started
	spans     int
	bytes     int64
}

func newAheadStarter(ctx context.Context, src *source.Source, opts fetch.Options) *aheadStarter {
	return &aheadStarter{ctx: ctx, src: src, opts: opts, left: opts.Jobs, layers: map[string]*aheadLayer{}}
}

func (r *aheadStarter) add(x extent) {
	if r == nil || r.left <= 0 || x.tocOffset <= 0 || x.layerSize <= 0 {
		return
	}
	if !r.looked {
		r.looked = true
		r.cached = fetch.HasChunk(r.opts.Cache)
	}
	if r.cached != nil && x.digest != "" && r.cached(x.digest) {
		return
	}
	// Entries are input: an extent outside the data is not read ahead.
	// The tail read with the TOC may hold data too: it is not read twice.
	end := r.src.TOC.ReadStart(x.layerSize, x.tocOffset)
	if x.span.Off < 0 || x.span.Off >= end || x.span.N > x.layerSize {
		return
	}
	x.span.N = min(x.span.N, end-x.span.Off)
	l, ok := r.layers[x.layer.layer]
	if !ok {
		l = &aheadLayer{key: x.layer, layerSize: x.layerSize, tocOffset: x.tocOffset}
		r.layers[x.layer.layer] = l
		r.order = append(r.order, x.layer.layer)
	}
	if l.cut != nil {
		l.cut.Add(x.span, x.chunks...)
		return
	}
	// The spans' size follows the fetch's, known only at the end of the
	// input; but once the entries want half the layer, the data before
	// its TOC stands for it (right for a whole layer, a little coarse for
	// a share of it), and the spans go out while the rest is read.
	l.pending = append(l.pending, x)
	if l.seen += x.span.N; 2*l.seen >= l.tocOffset {
		r.cutter(l, l.tocOffset)
	}
}

// cutter starts cutting l's spans for a fetch of total bytes.
func (r *aheadStarter) cutter(l *aheadLayer, total int64) {
	l.cut = fetch.NewAheadCutter(total, r.opts, &r.left, func(sp registry.Span) { r.start(l, sp) })
	for _, x := range l.pending {
		l.cut.Add(x.span, x.chunks...)
	}
	l.pending = nil
}

// start starts reading span sp of layer l, opening its blob first.
func (r *aheadStarter) start(l *aheadLayer, sp registry.Span) {
	if l.ahead == nil {
		ref, err := r.src.Client.ParseReference(l.key.ref)
		if err != nil {
			return // said when the layer is opened
		}
		blob, err := r.src.Blob(r.ctx, ref.Context(), l.key.layer, l.layerSize)
		if err != nil {
			return
		}
		l.ahead = fetch.NewAhead(r.ctx, blob)
	}
	l.ahead.Start(sp)
	l.spans++
	l.bytes += sp.N
}

// flush gives the last spans, once the input is in.
func (r *aheadStarter) flush() {
	if r == nil {
		return
	}
	for _, d := range r.order {
		l := r.layers[d]
		if l.cut == nil {
			r.cutter(l, l.seen)
		}
		l.cut.Flush()
	}
}

// attach attaches each layer's Ahead to the layer opened for it (layer
// returns nil for one that failed), and returns them all, for the caller
// to close after the fetch.
func (r *aheadStarter) attach(layer func(layerKey) *fetch.Layer) []*fetch.Ahead {
	if r == nil {
		return nil
	}
	var aheads []*fetch.Ahead
	for _, d := range r.order {
		al := r.layers[d]
		if al.ahead == nil {
			continue
		}
		aheads = append(aheads, al.ahead)
		if l := layer(al.key); l != nil && !l.TOC.Full && l.Ahead == nil {
			l.Ahead = al.ahead
			if r.src.Logf != nil {
				r.src.Logf("layer %s: %d bytes read ahead of its TOC, in %d ranges", al.key.layer, al.bytes, al.spans)
			}
		}
	}
	return aheads
}

// removedItem is a record of sg-ls --diff for a path the newer image
// does not have: nothing to fetch.
func removedItem(e *wire.Entry) *item {
	in := entryRef{Ref: e.Ref, Manifest: e.Manifest, Name: e.Name, Type: e.Type}
	if e.Before != nil {
		in.Layer, in.Type = e.Before.Layer, e.Before.Type
	}
	return &item{in: in, skip: "removed in the newer image of the diff: nothing to fetch"}
}

// openLayer resolves the image an entry names and reads the layer's TOC,
// pinned to the manifest's annotation. When the entry gives the layer's
// size and the manifest's digest, the TOC is read while the manifest is
// fetched, saving a round trip; the manifest then decides whether that
// read counts.
func openLayer(ctx context.Context, src *source.Source, ref, manifest, layer string, size, tocOffset int64) (*fetch.Layer, error) {
	type early struct {
		blob *registry.Blob
		toc  *toc.TOC
		err  error
	}
	var ch chan early
	// A plain layer with a cached seek index has no TOC to read early.
	if r, err := src.Client.ParseReference(ref); err == nil && size > 0 && manifest != "" && !src.Indexed(layer) {
		ch = make(chan early, 1)
		go func() {
			blob, t, err := src.ReadEarly(ctx, r.Context(), layer, size, tocOffset)
			ch <- early{blob, t, err}
		}()
	}
	img, err := src.Image(ctx, ref, manifest)
	var got early
	if ch != nil {
		got = <-ch
	}
	if err != nil {
		return nil, err
	}
	for _, l := range img.Layers {
		if l.Digest.String() != layer {
			continue
		}
		rec := source.Record(img, l, "")
		if got.err == nil && got.toc != nil && l.Size == size {
			return src.Adopt(img.Ref.Context(), rec, got.blob, got.toc)
		}
		return src.Open(ctx, img.Ref.Context(), rec)
	}
	return nil, fmt.Errorf("%w: layer %s is not in %s (manifest %s)", registry.ErrNotFound, layer, ref, img.Manifest)
}

// fromArgs selects PATHs (files or whole directories) of one layer. A
// plain layer without a seek index is not listed first: the job returned
// streams it once, writing what matches as it passes.
func fromArgs(ctx context.Context, src *source.Source, image, blob string, paths []string) ([]*item, *plainJob, error) {
	img, err := src.Image(ctx, image, "")
	if err != nil {
		return nil, nil, cli.Hint(err)
	}
	l, err := source.FindLayer(img, blob)
	if err != nil {
		return nil, nil, cli.Hint(err)
	}
	rec := source.Record(img, l, "")
	layer, listed, err := src.OpenStreaming(ctx, img.Ref.Context(), rec)
	if err != nil {
		return nil, nil, cli.Hint(err)
	}
	notFound := func(p string) error {
		return cli.WithHint(fmt.Errorf("%q is not in layer %d (%s) of %s", p, l.Index, l.Digest, img.Ref), fmt.Sprintf("list the layer's files with: sg-ls %s %s", image, blob))
	}
	if !listed {
		return nil, newPlainJob(rec, layer, paths, notFound), nil
	}
	items, err := selectLayerPaths(rec, layer, paths, notFound)
	return items, nil, err
}

// fromFlattened selects PATHs from the flattened view of an image. An
// image of one layer is that layer (see fromArgs); with more, every layer
// is listed first, as whiteouts in upper layers decide what is there.
func fromFlattened(ctx context.Context, src *source.Source, image string, paths []string) ([]*item, *plainJob, error) {
	img, err := src.Image(ctx, image, "")
	if err != nil {
		return nil, nil, cli.Hint(err)
	}
	if len(img.Layers) == 1 {
		return fromArgs(ctx, src, image, "0", paths)
	}
	recs, err := src.ImageRecords(ctx, img)
	if err != nil {
		return nil, nil, cli.Hint(err)
	}
	entries, err := src.Flatten(ctx, recs)
	if err != nil {
		return nil, nil, cli.Hint(err)
	}
	items, err := selectPaths(entries, paths, func(p string) error {
		return cli.WithHint(fmt.Errorf("%q is not in the filesystem of %s (its %d layers flattened)", p, img.Ref, len(recs)), fmt.Sprintf("list it with: sg-ls --flatten %s", image))
	})
	return items, nil, err
}

// selectPaths picks the entries at or under each path, in the order of
// entries for each path, path after path; a path that matches nothing is
// the error notFound makes. Entries are sorted by name once, so each path
// costs two binary searches plus its matches (the names at or under a
// path are one run of the sorted order, the path itself and the names
// starting with path+"/"), not a pass over every entry.
func selectPaths(entries []source.FlatEntry, paths []string, notFound func(path string) error) ([]*item, error) {
	return pickPaths(len(entries), func(i int) *toc.Entry { return entries[i].Entry }, func(i int) *item {
		fe := entries[i]
		in := entryRef{Ref: fe.Rec.Ref, Manifest: fe.Rec.Manifest, Layer: fe.Rec.Digest, Name: fe.Entry.Name, Type: fe.Entry.Type}
		return &item{in: in, layer: fe.Layer, tocEntry: fe.Entry}
	}, paths, notFound)
}

// emitter prints each result within 50 ms of its entry being done
// (completion order), so the output is a live log of what has landed: a
// run interrupted by Ctrl-C or SIGTERM has printed a result for every
// file it finished. A run killed outright (SIGKILL, a second Ctrl-C) may
// lose the last 50 ms of results, not files: a re-run reports those as
// skipped.
type emitter struct {
	mu      sync.Mutex
	w       *bufio.Writer
	enc     *wire.Encoder
	failed  int
	refused int
	err     error
	cancel  context.CancelFunc
	stop    chan struct{}
	done    chan struct{}
	closed  sync.Once
}

// newEmitter prints results to stdout through a buffer flushed every
// 50 ms (and at the end): a live log without a system call per result.
func newEmitter(stdout io.Writer, cancel context.CancelFunc) *emitter {
	w := bufio.NewWriterSize(stdout, 64<<10)
	em := &emitter{w: w, enc: wire.NewEncoder(w), cancel: cancel, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(em.done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				em.mu.Lock()
				em.flush()
				em.mu.Unlock()
			case <-em.stop:
				return
			}
		}
	}()
	return em
}

func (em *emitter) put(r *wire.Result) {
	em.mu.Lock()
	defer em.mu.Unlock()
	switch r.Status {
	case wire.StatusFailed:
		em.failed++
	case wire.StatusRefused:
		em.refused++
	}
	if em.err != nil {
		return
	}
	if err := em.enc.Encode(r); err != nil {
		em.fail(err)
	}
}

// flush writes out what is buffered; em.mu is held.
func (em *emitter) flush() {
	if em.err == nil && em.w.Buffered() > 0 {
		if err := em.w.Flush(); err != nil {
			em.fail(err)
		}
	}
}

func (em *emitter) fail(err error) {
	em.err = err
	em.cancel() // nobody reads the results: stop downloading
}

// close stops the timer and flushes the rest; it may be called again.
func (em *emitter) close() error {
	em.closed.Do(func() { close(em.stop) })
	<-em.done
	em.mu.Lock()
	defer em.mu.Unlock()
	em.flush()
	return em.err
}

// fetchBlobs writes the blobs of jobs into out and prints their results.
func fetchBlobs(ctx context.Context, out string, jobs []*blobJob, bo *blobOptions, src *source.Source, stdout, stderr io.Writer) error {
	if bo.name != "" && len(jobs) > 1 {
		return cli.Usagef("--name names one blob, but %d are selected", len(jobs))
	}
	out, root, err := openOut(out)
	if err != nil {
		return err
	}
	defer root.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	em := newEmitter(stdout, cancel)
	defer em.close()
	runBlobs(ctx, root, out, jobs, bo, src, em, stderr)
	if err := em.close(); err != nil {
		return err
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return em.summary(len(jobs), "blobs")
}
