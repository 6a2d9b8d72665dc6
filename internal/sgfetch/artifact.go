package sgfetch

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/cheggaaa/pb/v3"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/sourcegraph/conc/pool"

	"github.com/stargz-get/stargz-get/internal/cli"
	"github.com/stargz-get/stargz-get/internal/source"
	"github.com/stargz-get/stargz-get/pkg/blob"
	"github.com/stargz-get/stargz-get/pkg/registry"
	"github.com/stargz-get/stargz-get/pkg/wire"
)

// blobOptions are the flags of blob downloads.
type blobOptions struct {
	raw         bool   // --blob
	name        string // --name
	overwrite   bool
	extract     bool
	keepArchive bool
	jobs        int
	progress    string
	logf        func(string, ...any)
	// limit caps the requests open at once over all blobs at jobs.
	limit chan struct{}
}

// blobJob is one blob to write.
type blobJob struct {
	ref      string
	manifest string
	repo     name.Repository
	digest   v1.Hash
	size     int64
	index    int // layer index, -1 for a bare blob
	mt       string
	title    string
	hasTitle bool
	name     string // slash path under DIR
	err      error  // refused before downloading
	refused  bool   // err is a rule the title breaks
	dupOf    *blobJob
	result   *wire.Result
}

// maxNameBytes is the longest path component most filesystems take.
const maxNameBytes = 255

// checkTitle returns the slash path under DIR a title names, or why it
// cannot be used. Titles are refused rather than rewritten: a title that
// climbs out (..), is absolute, empty, holds a NUL or an over-long name is
// a broken or hostile artifact, and guessing a name would hide that.
func checkTitle(title string) (string, error) {
	switch {
	case title == "":
		return "", errors.New("the title is empty")
	case strings.ContainsRune(title, 0):
		return "", errors.New("the title holds a NUL byte")
	case !utf8.ValidString(title):
		return "", errors.New("the title is not valid UTF-8")
	case strings.HasPrefix(title, "/"):
		return "", errors.New("the title is an absolute path")
	}
	for _, part := range strings.Split(title, "/") {
		if part == ".." {
			return "", errors.New("the title climbs out of the output directory with ..")
		}
		if len(part) > maxNameBytes {
			return "", fmt.Errorf("a name in the title is %d bytes long, over the %d most filesystems allow", len(part), maxNameBytes)
		}
	}
	clean := path.Clean(title)
	if clean == "." {
		return "", errors.New("the title names the output directory itself")
	}
	return clean, nil
}

// describeJob names a job's layer in messages.
func (j *blobJob) describe() string {
	if j.index < 0 {
		return fmt.Sprintf("blob %s of %s", j.digest, j.repo)
	}
	if j.hasTitle {
		return fmt.Sprintf("layer %d (%s, title %q) of %s", j.index, j.digest, j.title, j.ref)
	}
	return fmt.Sprintf("layer %d (%s) of %s", j.index, j.digest, j.ref)
}

// jobFor makes the job of layer l of img; named says how to name it when
// it has no title (raw layer blobs).
func jobFor(img *registry.Image, l registry.Layer, bo *blobOptions) *blobJob {
	title, has := l.Annotations[source.TitleAnnotation]
	j := &blobJob{
		ref: img.Ref.Name(), manifest: img.Manifest.String(), repo: img.Ref.Context(),
		digest: l.Digest, size: l.Size, index: l.Index, mt: string(l.MediaType),
		title: title, hasTitle: has,
	}
	switch {
	case bo.name != "":
		j.name, j.err = checkName(bo.name)
	case has:
		var err error
		if j.name, err = checkTitle(title); err != nil {
			j.err, j.refused = fmt.Errorf("refusing %s: %w", j.describe(), err), true
		}
	default:
		j.name = digestName(l.Digest)
	}
	return j
}

// checkName checks a --name.
func checkName(n string) (string, error) {
	clean, err := checkTitle(filepath.ToSlash(n))
	if err != nil {
		return "", cli.Usagef("--name %q: %s", n, strings.Replace(err.Error(), "the title ", "the name ", 1))
	}
	return clean, nil
}

// digestName is the file name of a blob without a title: its digest with
// ":" made "-" (sha256-<hex>), safe on every filesystem.
func digestName(d v1.Hash) string { return d.Algorithm + "-" + d.Hex }

// peekLayerRecords reports whether the first line of r is a layer record
// (sg-layers output) rather than a file entry (sg-ls output).
// Blank lines before it are skipped, as the decoders skip them; a first
// line longer than r's buffer is read as a file entry.
func peekLayerRecords(r *bufio.Reader) bool {
	var b []byte
	for n := min(4096, r.Size()); ; n = min(2*n, r.Size()) {
		var err error
		b, err = r.Peek(n) // no more than needed: the input may be a slow pipe
		b = bytes.TrimLeft(b, " \t\r\n")
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[:i]
			break
		}
		if err != nil || n == r.Size() {
			break
		}
	}
	var probe struct {
		Layer  *string `json:"layer"`
		Format *string `json:"format"`
	}
	return json.Unmarshal(b, &probe) == nil && probe.Layer == nil && probe.Format != nil
}

// blobsFromStdin reads layer records and makes a job of each blob layer
// (each layer, with --blob). The manifest, not the record, says what the
// layer is and how it is named.
func blobsFromStdin(ctx context.Context, src *source.Source, dec *wire.Decoder, bo *blobOptions) ([]*blobJob, error) {
	var jobs []*blobJob
	for {
		var rec wire.Layer
		err := dec.Decode(&rec)
		if err == io.EOF {
			break
		}
		if err == nil {
			err = rec.Validate()
			if err != nil {
				err = fmt.Errorf("stdin line %d: %w", dec.Line(), err)
			}
		}
		if err != nil {
			return nil, cli.WithHint(err, "sg-fetch reads the layer records sg-layers prints (or the file entries sg-ls prints), one JSON object per line")
		}
		img, err := src.Image(ctx, rec.Ref, rec.Manifest)
		if err != nil {
			return nil, cli.Hint(err)
		}
		l, err := source.FindLayer(img, rec.Digest)
		if err != nil {
			return nil, cli.Hint(err)
		}
		j := jobFor(img, l, bo)
		if j.err == nil && !source.IsBlob(img, l) && !bo.raw {
			j.err = cli.WithHint(fmt.Errorf("%s is a filesystem layer, not a blob", j.describe()), "list its files with sg-ls, or pass --blob to write its compressed blob")
		}
		jobs = append(jobs, j)
	}
	if len(jobs) == 0 {
		return nil, cli.Usagef("no layer records on stdin")
	}
	return jobs, nil
}

// blobsFromArgs selects the blobs IMAGE [GLOB... | BLOB] names, or nil
// when the arguments name files of a filesystem image (the other forms).
func blobsFromArgs(ctx context.Context, src *source.Source, image string, args []string, bo *blobOptions) ([]*blobJob, error) {
	img, err := src.Image(ctx, image, "")
	if err != nil {
		if j, berr := bareBlob(ctx, src, image, bo); berr == nil {
			return []*blobJob{j}, nil
		}
		return nil, cli.Hint(err)
	}
	artifact := source.ArtifactType(img) != ""
	if !artifact && !bo.raw {
		if len(args) == 1 && source.LooksLikeLayer(args[0]) {
			if l, err := source.FindLayer(img, args[0]); err == nil && source.IsBlob(img, l) {
				return []*blobJob{jobFor(img, l, bo)}, nil
			}
		}
		return nil, nil
	}
	if bo.raw && !artifact {
		if len(args) != 1 || !source.LooksLikeLayer(args[0]) {
			return nil, cli.Usagef("--blob takes IMAGE BLOB (a layer index, digest or digest prefix)")
		}
		l, err := source.FindLayer(img, args[0])
		if err != nil {
			return nil, cli.Hint(err)
		}
		return []*blobJob{jobFor(img, l, bo)}, nil
	}
	var titled []registry.Layer
	for _, l := range img.Layers {
		if _, ok := l.Annotations[source.TitleAnnotation]; ok {
			titled = append(titled, l)
		}
	}
	if len(args) == 0 {
		if len(titled) == 0 {
			return nil, fmt.Errorf("%s is an artifact without titled layers; fetch a layer with sg-fetch -o DIR %s BLOB", img.Ref, image)
		}
		var jobs []*blobJob
		for _, l := range titled {
			jobs = append(jobs, jobFor(img, l, bo))
		}
		return jobs, nil
	}
	// One argument that is a layer index or digest, and no title by that
	// name: that layer.
	if len(args) == 1 && source.LooksLikeLayer(args[0]) && !matchesAny(titled, args[0]) {
		l, err := source.FindLayer(img, args[0])
		if err != nil {
			return nil, cli.Hint(err)
		}
		return []*blobJob{jobFor(img, l, bo)}, nil
	}
	var jobs []*blobJob
	taken := map[int]bool{}
	for _, pat := range args {
		if _, err := path.Match(pat, ""); err != nil {
			return nil, cli.Usagef("bad pattern %q: %v", pat, err)
		}
		n := 0
		for _, l := range titled {
			if ok, _ := path.Match(pat, l.Annotations[source.TitleAnnotation]); ok {
				n++
				if !taken[l.Index] {
					taken[l.Index] = true
					jobs = append(jobs, jobFor(img, l, bo))
				}
			}
		}
		if n == 0 {
			return nil, cli.WithHint(fmt.Errorf("no title of %s matches %q", img.Ref, pat), fmt.Sprintf("list the titles with: sg-layers %s | jq -r .title", image))
		}
	}
	sort.Slice(jobs, func(a, b int) bool { return jobs[a].index < jobs[b].index })
	return jobs, nil
}

func matchesAny(layers []registry.Layer, pat string) bool {
	for _, l := range layers {
		if ok, _ := path.Match(pat, l.Annotations[source.TitleAnnotation]); ok {
			return true
		}
	}
	return false
}

// bareBlob makes the job of REPO@sha256:... when that digest is a blob of
// the repository rather than a manifest.
func bareBlob(ctx context.Context, src *source.Source, image string, bo *blobOptions) (*blobJob, error) {
	ref, err := src.Client.ParseReference(image)
	if err != nil {
		return nil, err
	}
	d, ok := ref.(name.Digest)
	if !ok {
		return nil, errors.New("not a digest reference")
	}
	h, err := v1.NewHash(d.DigestStr())
	if err != nil {
		return nil, err
	}
	size, err := src.Client.StatBlob(ctx, d.Context(), h)
	if err != nil {
		return nil, err
	}
	j := &blobJob{ref: ref.Name(), repo: d.Context(), digest: h, size: size, index: -1, name: digestName(h)}
	if bo.name != "" {
		j.name, j.err = checkName(bo.name)
	}
	return j, nil
}

// markDuplicates fails jobs that would write different blobs to one name,
// and makes a later job of the same blob under the same name wait for the
// first.
func markDuplicates(jobs []*blobJob) {
	byName := map[string][]*blobJob{}
	for _, j := range jobs {
		if j.err == nil {
			byName[j.name] = append(byName[j.name], j)
		}
	}
	for n, js := range byName {
		if len(js) < 2 {
			continue
		}
		same := true
		for _, j := range js[1:] {
			same = same && j.digest == js[0].digest
		}
		if same {
			for _, j := range js[1:] {
				j.dupOf = js[0]
			}
			continue
		}
		var which []string
		for _, j := range js {
			which = append(which, fmt.Sprintf("%d (%s)", j.index, j.digest))
		}
		for _, j := range js {
			j.err = cli.WithHint(fmt.Errorf("refusing %s: layers %s all write %q with different contents", j.describe(), strings.Join(which, ", "), n),
				"fetch one of them by its digest with --name")
			j.refused = true
		}
	}
}

// runBlobs downloads the jobs into root (at out) and prints a result for
// each.
func runBlobs(ctx context.Context, root *os.Root, out string, jobs []*blobJob, bo *blobOptions, src *source.Source, em *emitter, stderr io.Writer) {
	markDuplicates(jobs)
	var total int64
	for _, j := range jobs {
		if j.err == nil && j.dupOf == nil {
			total += j.size
		}
	}
	bar := newBlobBar(bo.progress, stderr, total)
	defer bar.finish()
	// A few blobs at once, sharing -j connections: small files do not wait
	// for each other's round trips, and a big one gets the connections the
	// others leave.
	bo.limit = make(chan struct{}, bo.jobs)
	// Jobs of one digest (under different names) share the temp file
	// named by it, so they run one after the other.
	p := pool.New().WithMaxGoroutines(blobsAtOnce)
	byDigest := map[v1.Hash][]*blobJob{}
	var order []v1.Hash
	for _, j := range jobs {
		if j.err != nil || j.dupOf != nil {
			continue
		}
		if byDigest[j.digest] == nil {
			order = append(order, j.digest)
		}
		byDigest[j.digest] = append(byDigest[j.digest], j)
	}
	for _, d := range order {
		p.Go(func() {
			for _, j := range byDigest[d] {
				j.result = fetchBlob(ctx, root, out, j, bo, src, bar)
			}
		})
	}
	p.Wait()
	for _, j := range jobs {
		switch {
		case j.err != nil && j.refused:
			fmt.Fprintf(stderr, "%s: %v\n", tool, j.err)
			em.put(j.baseResult(out, wire.StatusRefused, j.err))
		case j.err != nil:
			em.put(j.baseResult(out, wire.StatusFailed, j.err))
		case j.dupOf != nil:
			r := *j.dupOf.result
			r.Layer, r.Name, r.Title = j.digest.String(), j.displayName(), j.title
			if r.Status != wire.StatusFailed {
				r.Status, r.CompressedBytes, r.Requests = wire.StatusPresent, 0, 0
			}
			em.put(&r)
		default:
			em.put(j.result)
		}
	}
}

// blobsAtOnce is how many blobs are downloaded at the same time.
const blobsAtOnce = 4

func (j *blobJob) displayName() string {
	if j.hasTitle {
		return j.title
	}
	return j.name
}

func (j *blobJob) baseResult(out, status string, err error) *wire.Result {
	r := &wire.Result{
		Ref: j.ref, Layer: j.digest.String(), Name: j.displayName(), Title: j.title, Type: wire.TypeReg,
		Status: status, Size: j.size,
	}
	if j.name != "" {
		r.Path = filepath.Join(out, filepath.FromSlash(j.name))
	}
	if err != nil {
		r.Error = err.Error()
		if h := cli.HintOf(err); h != "" {
			r.Error += " (" + h + ")"
		}
	}
	return r
}

// fetchBlob downloads one blob (and extracts it with --extract).
func fetchBlob(ctx context.Context, root *os.Root, out string, j *blobJob, bo *blobOptions, src *source.Source, bar *blobBar) *wire.Result {
	start := time.Now()
	b, err := src.Client.Blob(ctx, j.repo, j.digest, j.size)
	if err != nil {
		return j.baseResult(out, wire.StatusFailed, fmt.Errorf("fetching %s: %w", j.describe(), err))
	}
	opts := []blob.Option{blob.WithJobs(bo.jobs), blob.WithLimit(bo.limit), blob.WithOverwrite(bo.overwrite), blob.WithLogf(bo.logf)}
	if bar != nil {
		opts = append(opts, blob.WithProgress(bar.add))
	}
	res, err := blob.Download(ctx, root, j.name, b, j.digest.String(), opts...)
	if err != nil {
		return j.baseResult(out, wire.StatusFailed, fmt.Errorf("fetching %s: %w", j.describe(), err))
	}
	r := j.baseResult(out, res.Status, nil)
	r.Digest, r.Verified = j.digest.String(), wire.VerifiedDigest
	r.CompressedBytes, r.Requests = res.Bytes, res.Requests
	if bo.extract {
		n, err := extractBlob(root, j.name, j.mt)
		switch {
		case errors.Is(err, errNotArchive):
		case err != nil:
			return j.baseResult(out, wire.StatusFailed, fmt.Errorf("extracting %s: %w", j.describe(), err))
		default:
			r.Extracted = n
			if !bo.keepArchive {
				if err := root.Remove(j.name); err != nil {
					return j.baseResult(out, wire.StatusFailed, fmt.Errorf("removing archive %s: %w", j.name, err))
				}
				r.Path = out
			}
		}
	}
	r.DurationMs = time.Since(start).Milliseconds()
	return r
}

// blobBar is the pb/v3 progress bar of blob downloads, in bytes.
type blobBar struct {
	mu  sync.Mutex
	bar *pb.ProgressBar
}

func newBlobBar(mode string, stderr io.Writer, total int64) *blobBar {
	if newProgressBar(mode, stderr) == nil {
		return nil
	}
	bar := pb.New64(total)
	bar.SetWriter(stderr)
	bar.Set(pb.Bytes, true)
	bar.SetTemplateString(`{{counters . }} {{bar . }} {{percent . }} {{speed . }} {{rtime . "ETA %s"}}`)
	bar.Start()
	return &blobBar{bar: bar}
}

func (b *blobBar) add(n int64) {
	b.mu.Lock()
	b.bar.Add64(n)
	b.mu.Unlock()
}

func (b *blobBar) finish() {
	if b != nil {
		b.bar.Finish()
	}
}
