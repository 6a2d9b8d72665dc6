package blob

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sourcegraph/conc/pool"

	"github.com/stargz-get/stargz-get/pkg/registry"
)

// Defaults, each with its reason.
const (
	// DefaultJobs is how many segments are downloaded at once: enough
	// connections to fill a link that gives each connection a fraction of
	// its bandwidth (a CDN's per-connection cap), few enough not to be
	// taken for abuse.
	DefaultJobs = 8
	// MinSegmentSize and MaxSegmentSize bound the segment size, chosen as
	// the blob's size over four segments per job: small segments keep all
	// connections busy to the end and lose little on a kill, large ones
	// spend few round trips.
	MinSegmentSize = 1 << 20
	MaxSegmentSize = 32 << 20
	// DefaultTries is how many times a segment's request is made before the
	// download fails (the registry client retries each on top of this).
	DefaultTries = 5
	// saveEvery is how often the state file is rewritten during a download:
	// a kill loses at most this long of progress per connection.
	saveEvery = 250 * time.Millisecond
	// bufSize is each worker's read buffer.
	bufSize = 256 << 10
)

// Statuses of a Result.
const (
	StatusFetched = "fetched"
	StatusResumed = "resumed"
	StatusPresent = "present"
)

// ErrDigestMismatch means the bytes of a blob do not match its digest:
// Download writes nothing under the final name, and a Stream returns it
// (wrapped) at the end of such a blob.
var ErrDigestMismatch = errors.New("downloaded bytes do not match the digest")

// Remote is the blob being downloaded; *registry.Blob is one.
type Remote interface {
	Size() int64
	GetSegment(ctx context.Context, off, n int64, ifRange string) (*registry.Segment, error)
	GetWhole(ctx context.Context) (io.ReadCloser, string, error)
}

// Result says what Download did.
type Result struct {
	// Status is StatusFetched, StatusResumed or StatusPresent.
	Status string
	// Size is the blob's size.
	Size int64
	// Bytes is how many bytes of the blob this run downloaded.
	Bytes int64
	// Requests is how many GETs this run made.
	Requests int
	// Executable is true when the blob starts with the ELF magic (its mode
	// is then 0755 less the umask).
	Executable bool
}

type options struct {
	jobs      int
	segSize   int64
	tries     int
	overwrite bool
	progress  func(n int64)
	logf      func(format string, args ...any)
	limit     chan struct{}
}

// Option configures Download.
type Option func(*options) error

// WithJobs sets how many segments are downloaded at once (DefaultJobs).
func WithJobs(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return fmt.Errorf("jobs must be at least 1, got %d", n)
		}
		o.jobs = n
		return nil
	}
}

// WithSegmentSize fixes the segment size instead of deriving it from the
// blob's size.
func WithSegmentSize(n int64) Option {
	return func(o *options) error {
		if n < 1 {
			return fmt.Errorf("segment size must be at least 1, got %d", n)
		}
		o.segSize = n
		return nil
	}
}

// WithTries sets how many requests a segment may take (DefaultTries).
func WithTries(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return fmt.Errorf("tries must be at least 1, got %d", n)
		}
		o.tries = n
		return nil
	}
}

// WithOverwrite downloads the blob even when an identical file is at the
// final name.
func WithOverwrite(on bool) Option {
	return func(o *options) error { o.overwrite = on; return nil }
}

// WithProgress calls fn with the number of bytes of the blob newly
// written (including, once at the start, those a resumed download already
// had). Calls come from several goroutines.
func WithProgress(fn func(n int64)) Option {
	return func(o *options) error { o.progress = fn; return nil }
}

// WithLimit shares a cap on open requests among downloads: each request
// holds a slot of limit (a buffered channel, its capacity the cap) until
// its body is read, so several blobs downloaded at once stay within one
// connection budget. Without it, each download opens up to its jobs.
func WithLimit(limit chan struct{}) Option {
	return func(o *options) error {
		if limit == nil || cap(limit) < 1 {
			return errors.New("limit must be a channel with a capacity of at least 1")
		}
		o.limit = limit
		return nil
	}
}

// WithLogf reports what happens (resumes, fallbacks) through logf.
func WithLogf(logf func(format string, args ...any)) Option {
	return func(o *options) error { o.logf = logf; return nil }
}

// TempNames returns the root-relative names of the temp and state files
// of the blob with digest dgst.
func TempNames(dgst string) (part, state string) {
	_, hx, _ := strings.Cut(dgst, ":")
	return ".sg-" + hx + ".part", ".sg-" + hx + ".state"
}

// Download writes the blob r with digest dgst ("sha256:<hex>") to name,
// a slash-separated path inside root, as the package doc describes.
func Download(ctx context.Context, root *os.Root, name string, r Remote, dgst string, opts ...Option) (*Result, error) {
	o := options{jobs: DefaultJobs, tries: DefaultTries}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	algo, hx, _ := strings.Cut(dgst, ":")
	if _, err := hex.DecodeString(hx); algo != "sha256" || len(hx) != 64 || err != nil || strings.ToLower(hx) != hx {
		return nil, fmt.Errorf("downloading %s: want a sha256 digest (sha256: and 64 lower-case hex digits)", dgst)
	}
	size := r.Size()
	if size < 0 {
		return nil, fmt.Errorf("downloading %s: unknown size", dgst)
	}
	d := &download{o: o, root: root, name: name, r: r, digest: dgst, size: size}
	if !o.overwrite {
		if ok, exec := d.present(); ok {
			return &Result{Status: StatusPresent, Size: size, Executable: exec}, nil
		}
	}
	if dir := path.Dir(name); dir != "." {
		if err := root.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("creating directory for %s: %w", name, err)
		}
	}
	d.part, d.stateName = TempNames(dgst)
	res, err := d.run(ctx)
	if errors.Is(err, errRestart) {
		d.logf("blob %s: %v; downloading it again from the start", dgst, err)
		d.discard()
		res, err = d.run(ctx)
	}
	if err != nil {
		return nil, err
	}
	return res, nil
}

// acquire takes a request slot (see WithLimit).
func (d *download) acquire(ctx context.Context) error {
	if d.o.limit == nil {
		return nil
	}
	select {
	case d.o.limit <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// release gives a request slot back.
func (d *download) release() {
	if d.o.limit != nil {
		<-d.o.limit
	}
}

func (d *download) logf(format string, args ...any) {
	if d.o.logf != nil {
		d.o.logf(format, args...)
	}
}

// errBusy means another process is downloading the same blob into the
// same directory.
var errBusy = errors.New("another process is downloading this blob into the same directory")

// errRestart means a resumed download must start over: the server's blob
// changed, or the spliced bytes did not verify.
var errRestart = errors.New("restart")

// The reasons for errRestart.
var (
	errChanged = fmt.Errorf("%w: the server's copy changed (If-Range was answered with the whole blob)", errRestart)
	errSpliced = fmt.Errorf("%w: the resumed download did not match the digest", errRestart)
)

type download struct {
	o               options
	root            *os.Root
	name            string
	r               Remote
	digest          string
	size            int64
	part, stateName string

	requests atomic.Int64
	bytes    atomic.Int64
}

// present reports whether name already holds the blob, and whether it is
// an ELF executable.
func (d *download) present() (bool, bool) {
	f, err := d.root.Open(d.name)
	if err != nil {
		return false, false
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() || fi.Size() != d.size {
		return false, false
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return false, false
	}
	if "sha256:"+hex.EncodeToString(h.Sum(nil)) != d.digest {
		return false, false
	}
	magic := make([]byte, 4)
	n, _ := f.ReadAt(magic, 0)
	return true, isELF(magic[:n])
}

// discard removes the temp and state files.
func (d *download) discard() {
	d.root.Remove(d.part)
	d.root.Remove(d.stateName)
	d.root.Remove(d.stateName + ".tmp") // a save cut short by a kill
}

// state is what the state file holds.
type state struct {
	Digest      string  `json:"digest"`
	Size        int64   `json:"size"`
	SegmentSize int64   `json:"segmentSize"`
	Validator   string  `json:"validator,omitempty"`
	Done        []int64 `json:"done"`
}

func (d *download) segmentSize() int64 {
	if d.o.segSize > 0 {
		return d.o.segSize
	}
	s := d.size / int64(4*d.o.jobs)
	return min(max(s, MinSegmentSize), MaxSegmentSize)
}

// run downloads into the temp file (resuming what a state file records),
// verifies and renames.
func (d *download) run(ctx context.Context) (*Result, error) {
	st, f, resumed, err := d.openPart()
	if err != nil {
		return nil, err
	}
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	have := int64(0)
	for _, n := range st.Done {
		have += n
	}
	if have > 0 && d.o.progress != nil {
		d.o.progress(have)
	}
	var sum []byte
	if d.size == 0 {
		sum = sha256.New().Sum(nil)
	} else {
		sum, err = d.fetch(ctx, f, st, resumed)
		if err != nil {
			return nil, err
		}
	}
	if got := "sha256:" + hex.EncodeToString(sum); got != d.digest {
		f.Close()
		f = nil
		d.discard()
		if resumed {
			return nil, errSpliced
		}
		return nil, fmt.Errorf("downloading %s: %w (got %s)", d.digest, ErrDigestMismatch, got)
	}
	magic := make([]byte, 4)
	n, _ := f.ReadAt(magic, 0)
	exec := isELF(magic[:n])
	mode := fs.FileMode(0o644)
	if exec {
		mode = 0o755
	}
	if err := f.Chmod(mode &^ umask()); err != nil {
		return nil, fmt.Errorf("setting mode of %s: %w", d.name, err)
	}
	if err := f.Close(); err != nil {
		f = nil
		return nil, fmt.Errorf("writing %s: %w", d.name, err)
	}
	f = nil
	if err := d.root.Rename(d.part, d.name); err != nil {
		return nil, fmt.Errorf("moving %s into place: %w", d.name, err)
	}
	d.root.Remove(d.stateName)
	d.root.Remove(d.stateName + ".tmp")
	status := StatusFetched
	if resumed {
		status = StatusResumed
	}
	return &Result{Status: status, Size: d.size, Bytes: d.bytes.Load(), Requests: int(d.requests.Load()), Executable: exec}, nil
}

// openPart opens the temp file, with the state an earlier run left when
// it is usable, else empty.
func (d *download) openPart() (*state, *os.File, bool, error) {
	segSize := d.segmentSize()
	fresh := &state{Digest: d.digest, Size: d.size, SegmentSize: segSize, Done: make([]int64, (d.size+segSize-1)/segSize)}
	if raw, err := d.root.ReadFile(d.stateName); err == nil {
		var st state
		if json.Unmarshal(raw, &st) == nil && st.valid(d.digest, d.size) {
			f, err := d.root.OpenFile(d.part, os.O_RDWR, 0)
			if err == nil {
				if lerr := tryLock(f); lerr != nil {
					f.Close()
					return nil, nil, false, fmt.Errorf("downloading %s: %w", d.name, lerr)
				}
			}
			if fi, serr := statOf(f, err); serr == nil && fi.Size() == d.size {
				for _, n := range st.Done {
					if n > 0 {
						return &st, f, true, nil
					}
				}
				return &st, f, false, nil
			}
			if f != nil {
				f.Close()
			}
		}
	}
	// Lock before truncating: a part file another process is writing is
	// left alone.
	f, err := d.root.OpenFile(d.part, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, nil, false, fmt.Errorf("creating temp file for %s: %w", d.name, err)
	}
	if err := tryLock(f); err != nil {
		f.Close()
		return nil, nil, false, fmt.Errorf("downloading %s: %w", d.name, err)
	}
	d.root.Remove(d.stateName)
	if err := f.Truncate(0); err != nil {
		f.Close()
		return nil, nil, false, fmt.Errorf("sizing temp file for %s: %w", d.name, err)
	}
	if err := f.Truncate(d.size); err != nil {
		f.Close()
		return nil, nil, false, fmt.Errorf("sizing temp file for %s: %w", d.name, err)
	}
	return fresh, f, false, nil
}

func statOf(f *os.File, err error) (os.FileInfo, error) {
	if err != nil {
		return nil, err
	}
	return f.Stat()
}

func (st *state) valid(dgst string, size int64) bool {
	if st.Digest != dgst || st.Size != size || st.SegmentSize < 1 || int64(len(st.Done)) != (size+st.SegmentSize-1)/st.SegmentSize {
		return false
	}
	for i, n := range st.Done {
		if n < 0 || n > st.segLen(i) {
			return false
		}
	}
	return true
}

func (st *state) segLen(i int) int64 {
	return min(st.SegmentSize, st.Size-int64(i)*st.SegmentSize)
}

// isELF reports whether b starts with the ELF magic.
func isELF(b []byte) bool { return bytes.HasPrefix(b, []byte("\x7fELF")) }

// fetch downloads the missing bytes into f and returns the sha256 of the
// whole blob.
func (d *download) fetch(ctx context.Context, f *os.File, st *state, resumed bool) ([]byte, error) {
	first := -1
	for i, n := range st.Done {
		if n < st.segLen(i) {
			first = i
			break
		}
	}
	if first < 0 { // everything is there: only the hash is left
		return hashFile(f, d.size)
	}
	tr := newTracker(st)
	off := int64(first)*st.SegmentSize + st.Done[first]
	ifRange := ""
	if resumed {
		ifRange = st.Validator
	}
	// The first request's slot goes with its body: to the single stream,
	// or to the worker of the first segment.
	if err := d.acquire(ctx); err != nil {
		return nil, err
	}
	d.requests.Add(1)
	seg, err := d.r.GetSegment(ctx, off, st.segLen(first)-st.Done[first], ifRange)
	switch {
	case errors.Is(err, registry.ErrRangeRefused):
		d.release()
		d.logf("blob %s: %v; downloading it in one stream", d.digest, err)
		return d.single(ctx, f, nil)
	case err != nil:
		d.release()
		return nil, fmt.Errorf("downloading %s: %w", d.digest, err)
	case !seg.Partial && resumed:
		seg.Body.Close()
		d.release()
		return nil, errChanged
	case !seg.Partial:
		d.logf("blob %s: the server ignored Range and sent the whole blob; downloading it in one stream", d.digest)
		return d.single(ctx, f, seg.Body)
	}
	if st.Validator == "" {
		st.Validator = seg.Validator
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// The state file: saved now (so a kill keeps the validator), every
	// saveEvery, and at the end.
	saveDone := make(chan struct{})
	stopSave := make(chan struct{})
	if err := d.save(tr); err != nil {
		seg.Body.Close()
		d.release()
		return nil, err
	}
	go func() {
		defer close(saveDone)
		t := time.NewTicker(saveEvery)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				_ = d.save(tr)
			case <-stopSave:
				return
			}
		}
	}()

	hashed := make(chan hashResult, 1)
	go func() { hashed <- tr.hash(ctx, f) }()

	p := pool.New().WithContext(ctx).WithCancelOnError().WithFirstError().WithMaxGoroutines(d.o.jobs)
	p.Go(func(ctx context.Context) error { return d.segment(ctx, f, tr, first, seg.Body) })
	for i := first + 1; i < len(st.Done); i++ {
		if tr.done(i) < st.segLen(i) {
			p.Go(func(ctx context.Context) error { return d.segment(ctx, f, tr, i, nil) })
		}
	}
	err = p.Wait()
	close(stopSave)
	<-saveDone
	if serr := d.save(tr); err == nil && serr != nil {
		err = serr
	}
	if err != nil {
		cancel()
		<-hashed
		if errors.Is(err, errRestart) {
			return nil, err
		}
		return nil, fmt.Errorf("downloading %s: %w", d.digest, err)
	}
	h := <-hashed
	return h.sum, h.err
}

// segment downloads what is missing of segment i into f; body, when not
// nil, is the open answer for it (holding a request slot).
func (d *download) segment(ctx context.Context, f *os.File, tr *tracker, i int, body io.ReadCloser) error {
	st := tr.st
	start, n := int64(i)*st.SegmentSize, st.segLen(i)
	buf := make([]byte, bufSize)
	var lastErr error
	for try := 0; ; try++ {
		have := tr.done(i)
		if have == n {
			return nil
		}
		if body == nil {
			if try >= d.o.tries {
				return fmt.Errorf("segment at byte %d after %d requests: %w", start+have, try, lastErr)
			}
			if try > 0 {
				d.logf("blob %s: segment at byte %d stopped (%v); asking for its remaining %d bytes", d.digest, start+have, lastErr, n-have)
			}
			if err := d.acquire(ctx); err != nil {
				return err
			}
			d.requests.Add(1)
			seg, err := d.r.GetSegment(ctx, start+have, n-have, st.Validator)
			if err != nil {
				d.release()
				if ctx.Err() != nil {
					return ctx.Err()
				}
				lastErr = err
				continue
			}
			if !seg.Partial {
				seg.Body.Close()
				d.release()
				return errChanged // If-Range did not match
			}
			body = seg.Body
		}
		err := d.copy(ctx, f, tr, i, start+have, n-have, body, buf)
		body.Close()
		body = nil
		d.release()
		if err == nil {
			continue
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		lastErr = err
	}
}

// copy reads up to n bytes from body into f at off, recording each write
// in tr as it lands.
func (d *download) copy(ctx context.Context, f *os.File, tr *tracker, i int, off, n int64, body io.Reader, buf []byte) error {
	for n > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		k, err := io.ReadAtLeast(body, buf[:min(int64(len(buf)), n)], 1)
		if k > 0 {
			if _, werr := f.WriteAt(buf[:k], off); werr != nil {
				return fmt.Errorf("writing temp file: %w", werr)
			}
			off += int64(k)
			n -= int64(k)
			d.bytes.Add(int64(k))
			tr.add(i, int64(k))
			if d.o.progress != nil {
				d.o.progress(int64(k))
			}
		}
		if err != nil && n > 0 {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// single downloads the whole blob in one stream (body, holding a request
// slot, or a new plain GET), hashing as it writes. Nothing is saved for
// resuming.
func (d *download) single(ctx context.Context, f *os.File, body io.ReadCloser) ([]byte, error) {
	d.root.Remove(d.stateName)
	if body == nil {
		if err := d.acquire(ctx); err != nil {
			return nil, err
		}
		d.requests.Add(1)
		var err error
		if body, _, err = d.r.GetWhole(ctx); err != nil {
			d.release()
			return nil, fmt.Errorf("downloading %s: %w", d.digest, err)
		}
	}
	defer d.release()
	defer body.Close()
	h := sha256.New()
	w := &offsetWriter{f: f, progress: d.o.progress, n: &d.bytes}
	k, err := io.Copy(io.MultiWriter(w, h), io.LimitReader(body, d.size+1))
	if err != nil {
		return nil, fmt.Errorf("downloading %s: %w", d.digest, err)
	}
	if k != d.size {
		return nil, fmt.Errorf("downloading %s: got %d bytes, want %d", d.digest, k, d.size)
	}
	return h.Sum(nil), nil
}

type offsetWriter struct {
	f        *os.File
	off      int64
	n        *atomic.Int64
	progress func(int64)
}

func (w *offsetWriter) Write(p []byte) (int, error) {
	k, err := w.f.WriteAt(p, w.off)
	w.off += int64(k)
	w.n.Add(int64(k))
	if w.progress != nil {
		w.progress(int64(k))
	}
	return k, err
}

// save writes the state file atomically.
func (d *download) save(tr *tracker) error {
	raw := tr.snapshot()
	tmp := d.stateName + ".tmp"
	if err := d.root.WriteFile(tmp, raw, 0o644); err != nil {
		return fmt.Errorf("saving download state: %w", err)
	}
	if err := d.root.Rename(tmp, d.stateName); err != nil {
		return fmt.Errorf("saving download state: %w", err)
	}
	return nil
}

// hashFile hashes the first size bytes of f.
func hashFile(f *os.File, size int64) ([]byte, error) {
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, size)); err != nil {
		return nil, fmt.Errorf("hashing temp file: %w", err)
	}
	return h.Sum(nil), nil
}

// tracker keeps each segment's progress, shared by the workers, the
// hasher and the state saver.
type tracker struct {
	st     *state
	mu     sync.Mutex
	notify chan struct{}
}

func newTracker(st *state) *tracker {
	return &tracker{st: st, notify: make(chan struct{}, 1)}
}

func (t *tracker) done(i int) int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.st.Done[i]
}

func (t *tracker) add(i int, n int64) {
	t.mu.Lock()
	t.st.Done[i] += n
	t.mu.Unlock()
	select {
	case t.notify <- struct{}{}:
	default:
	}
}

func (t *tracker) snapshot() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	raw, _ := json.Marshal(t.st)
	return raw
}

type hashResult struct {
	sum []byte
	err error
}

// hash follows the written bytes in order, reading each back once (from
// the page cache, moments after it was written), until the whole blob is
// hashed or ctx ends.
func (t *tracker) hash(ctx context.Context, f *os.File) hashResult {
	h := sha256.New()
	buf := make([]byte, 1<<20)
	var off int64
	size := t.st.Size
	for off < size {
		i := int(off / t.st.SegmentSize)
		avail := int64(i)*t.st.SegmentSize + t.done(i)
		if avail <= off {
			select {
			case <-t.notify:
			case <-ctx.Done():
				return hashResult{err: ctx.Err()}
			}
			continue
		}
		for off < avail {
			k := min(int64(len(buf)), avail-off)
			if _, err := f.ReadAt(buf[:k], off); err != nil {
				return hashResult{err: fmt.Errorf("hashing temp file: %w", err)}
			}
			h.Write(buf[:k])
			off += k
		}
	}
	return hashResult{sum: h.Sum(nil)}
}
