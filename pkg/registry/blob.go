package registry

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Blob reads byte ranges of one blob. It is safe for concurrent use.
type Blob struct {
	c      *Client
	repo   name.Repository
	digest v1.Hash
	size   int64
	client *http.Client // through the repository's authorized transport
	url    string

	// noRange is set once the registry answered 416 to a valid range:
	// later reads ask for the whole blob straight away.
	noRange atomic.Bool
	// ignoredRange is set once the registry answered a ranged GET with the
	// whole blob.
	ignoredRange atomic.Bool

	mu sync.Mutex
	// resolved is where the registry last redirected this blob to (blob
	// storage, a CDN); later ranges go there directly, without the
	// registry's credentials, until it stops answering.
	resolved string
}

// Blob returns a reader of the blob dgst of size bytes in repo.
func (c *Client) Blob(ctx context.Context, repo name.Repository, dgst v1.Hash, size int64) (*Blob, error) {
	rt, err := c.transport(ctx, repo)
	if err != nil {
		return nil, fmt.Errorf("opening blob %s: %w", dgst, err)
	}
	return &Blob{
		c:      c,
		repo:   repo,
		digest: dgst,
		size:   size,
		client: &http.Client{Transport: rt},
		url:    fmt.Sprintf("%s://%s/v2/%s/blobs/%s", repo.Scheme(), repo.RegistryStr(), repo.RepositoryStr(), dgst),
	}, nil
}

// Digest returns the blob's digest.
func (b *Blob) Digest() v1.Hash { return b.digest }

// Size returns the blob's size in bytes.
func (b *Blob) Size() int64 { return b.size }

// ReadRange returns a reader of the n bytes at off. The caller must close
// it.
//
// The request is retried as the client's RetryPolicy says. A body cut
// short (a reset, a stall, an early close) is resumed with a request for
// the bytes not yet read, up to the policy's tries, so the reader delivers
// exactly n bytes or an error. A registry that ignores Range and sends the
// whole blob, or answers 416 to a valid range, is still read correctly
// (the bytes before off are skipped), just less efficiently.
func (b *Blob) ReadRange(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	if off < 0 || n <= 0 || (b.size > 0 && off+n > b.size) {
		return nil, fmt.Errorf("reading blob %s: range %d+%d outside blob of %d bytes", b.digest, off, n, b.size)
	}
	body, err := b.open(ctx, off, n)
	if err != nil {
		return nil, err
	}
	return &rangeReader{b: b, ctx: ctx, off: off, left: n, body: body}, nil
}

// RangeIgnored reports whether the registry has answered a ranged read of
// this blob with the whole blob (or refused ranges), so that reading it in
// ranged pieces would download it again for each piece.
func (b *Blob) RangeIgnored() bool { return b.ignoredRange.Load() || b.noRange.Load() }

// ReadAt reads len(p) bytes at off, for callers wanting io.ReaderAt.
func (b *Blob) ReadAt(p []byte, off int64) (int, error) {
	rc, err := b.ReadRange(context.Background(), off, int64(len(p)))
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	return io.ReadFull(rc, p)
}

// open starts one read of the n bytes at off: at the redirect target when
// one is known, else at the registry.
func (b *Blob) open(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	return atTarget(ctx, b, func(client *http.Client, u string, viaRegistry bool) (io.ReadCloser, error) {
		return b.get(ctx, client, u, viaRegistry, off, n)
	})
}

// atTarget calls try with the blob's redirect target (blob storage, a
// CDN) when one is known, without the registry's credentials, and else, or
// when the target fails, with the registry's URL: signed URLs expire, and
// the registry gives a fresh one.
func atTarget[T any](ctx context.Context, b *Blob, try func(client *http.Client, u string, viaRegistry bool) (T, error)) (T, error) {
	b.mu.Lock()
	resolved := b.resolved
	b.mu.Unlock()
	if resolved != "" {
		v, err := try(&http.Client{Transport: b.c.base}, resolved, false)
		if err == nil || ctx.Err() != nil {
			return v, err
		}
		b.c.logf("blob %s: redirect target stopped working (%v); asking the registry again", b.digest, err)
		b.mu.Lock()
		if b.resolved == resolved {
			b.resolved = ""
		}
		b.mu.Unlock()
	}
	return try(b.client, b.url, true)
}

// remember keeps where the registry redirected a successful GET of u, for
// the blob's later reads.
func (b *Blob) remember(resp *http.Response, u string, viaRegistry bool) {
	ok := resp.StatusCode == http.StatusPartialContent || resp.StatusCode == http.StatusOK
	if final := resp.Request.URL; ok && viaRegistry && final.Host != hostOf(u) {
		b.mu.Lock()
		b.resolved = final.String()
		b.mu.Unlock()
	}
}

// get GETs the n bytes at off from u. viaRegistry says u is the
// registry's URL, whose redirect target is then remembered.
func (b *Blob) get(ctx context.Context, client *http.Client, u string, viaRegistry bool, off, n int64) (io.ReadCloser, error) {
	ranged := !b.noRange.Load()
	resp, err := b.do(ctx, client, u, ranged, off, n)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusRequestedRangeNotSatisfiable && ranged {
		drain(resp.Body)
		// "bytes */SIZE": the range is outside the blob, so the whole blob
		// will not have it either.
		if size, ok := unsatisfiedSize(resp.Header.Get("Content-Range")); ok && off+n > size {
			return nil, fmt.Errorf("reading blob %s: range %d+%d outside blob of %d bytes", b.digest, off, n, size)
		}
		b.c.logf("blob %s: registry answered 416 to Range bytes=%d-%d of a %d-byte blob; reading the whole blob instead", b.digest, off, off+n-1, b.size)
		b.noRange.Store(true)
		if resp, err = b.do(ctx, client, u, false, off, n); err != nil {
			return nil, err
		}
	}
	b.remember(resp, u, viaRegistry)
	switch resp.StatusCode {
	case http.StatusPartialContent:
		if err := checkContentRange(resp.Header.Get("Content-Range"), off, n); err != nil {
			resp.Body.Close()
			return nil, fmt.Errorf("reading blob %s: %w", b.digest, err)
		}
		return resp.Body, nil
	case http.StatusOK:
		if resp.ContentLength >= 0 && off+n > resp.ContentLength {
			resp.Body.Close()
			return nil, fmt.Errorf("reading blob %s: range %d+%d outside blob of %d bytes", b.digest, off, n, resp.ContentLength)
		}
		if ranged {
			b.ignoredRange.Store(true)
			b.c.logf("blob %s: registry ignored Range and sent the whole blob; skipping to byte %d", b.digest, off)
		}
		if _, err := io.CopyN(io.Discard, resp.Body, off); err != nil {
			resp.Body.Close()
			return nil, fmt.Errorf("reading blob %s: skipping to byte %d: %w", b.digest, off, err)
		}
		return struct {
			io.Reader
			io.Closer
		}{io.LimitReader(resp.Body, n), resp.Body}, nil
	}
	defer drain(resp.Body)
	err = transport.CheckError(resp, http.StatusOK, http.StatusPartialContent)
	return nil, fmt.Errorf("reading blob %s: %w", b.digest, classify(b.repo.RegistryStr(), err))
}

// hostOf returns the host[:port] of URL u.
func hostOf(u string) string {
	pu, err := url.Parse(u)
	if err != nil {
		return ""
	}
	return pu.Host
}

func (b *Blob) do(ctx context.Context, client *http.Client, u string, ranged bool, off, n int64) (*http.Response, error) {
	rng := ""
	if ranged {
		// Always a closed range: some registries answer 416 to open-ended
		// ones.
		rng = fmt.Sprintf("bytes=%d-%d", off, off+n-1)
	}
	return b.send(ctx, client, u, rng)
}

// send GETs u with the Range header rng ("" for none).
func (b *Blob) send(ctx context.Context, client *http.Client, u, rng string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reading blob %s: %w", b.digest, classify(b.repo.RegistryStr(), err))
	}
	return resp, nil
}

// rangeReader delivers exactly the bytes asked for, resuming a body cut
// short with a request for the rest.
type rangeReader struct {
	b         *Blob
	ctx       context.Context
	off, left int64 // the next byte wanted, and how many are still due
	body      io.ReadCloser
	resumes   int
	err       error // sticky
}

func (r *rangeReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	if r.err != nil {
		return 0, r.err
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	for {
		k, err := r.body.Read(p)
		r.off += int64(k)
		r.left -= int64(k)
		if r.left == 0 || err == nil {
			return k, nil
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF // fewer bytes than asked for
		}
		if r.ctx.Err() != nil || !retryableError(err) || r.resumes+1 >= r.b.c.opts.retry.Tries {
			r.err = fmt.Errorf("reading blob %s at byte %d: %w", r.b.digest, r.off, err)
			if r.resumes > 0 {
				r.err = fmt.Errorf("%w (after resuming %d times)", r.err, r.resumes)
			}
			return k, r.err
		}
		r.body.Close()
		r.body = http.NoBody
		r.resumes++
		// The first resume is at once (a connection dropped); later ones
		// back off like retried requests.
		var wait time.Duration
		if r.resumes > 1 {
			wait = r.b.c.opts.retry.backoff(r.resumes - 1)
		}
		r.b.c.logf("blob %s: reading stopped at byte %d (%v); asking for the remaining %d bytes in %s (resume %d of %d)",
			r.b.digest, r.off, err, r.left, wait.Round(time.Millisecond), r.resumes, r.b.c.opts.retry.Tries-1)
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-r.ctx.Done():
				t.Stop()
				r.err = fmt.Errorf("reading blob %s at byte %d: %w", r.b.digest, r.off, r.ctx.Err())
				return k, r.err
			}
		}
		body, oerr := r.b.open(r.ctx, r.off, r.left)
		if oerr != nil {
			r.err = fmt.Errorf("resuming after %v: %w", err, oerr)
			return k, r.err
		}
		r.body = body
		if k > 0 {
			return k, nil
		}
	}
}

func (r *rangeReader) Close() error { return r.body.Close() }

// unsatisfiedSize returns SIZE from the Content-Range "bytes */SIZE" of a
// 416.
func unsatisfiedSize(cr string) (int64, bool) {
	rest, ok := strings.CutPrefix(cr, "bytes */")
	if !ok {
		return 0, false
	}
	size, err := strconv.ParseInt(rest, 10, 64)
	return size, err == nil && size >= 0
}

// checkContentRange makes sure a 206 carries the bytes asked for.
func checkContentRange(cr string, off, n int64) error {
	const prefix = "bytes "
	if !strings.HasPrefix(cr, prefix) {
		return fmt.Errorf("206 response with invalid Content-Range %q", cr)
	}
	spec, _, _ := strings.Cut(cr[len(prefix):], "/")
	first, last, ok := strings.Cut(spec, "-")
	if !ok {
		return fmt.Errorf("206 response with invalid Content-Range %q", cr)
	}
	a, err1 := strconv.ParseInt(first, 10, 64)
	z, err2 := strconv.ParseInt(last, 10, 64)
	if err1 != nil || err2 != nil || a != off || z != off+n-1 {
		return fmt.Errorf("asked for bytes %d-%d, got Content-Range %q", off, off+n-1, cr)
	}
	return nil
}

func (c *Client) logf(format string, args ...any) {
	if c.opts.logf != nil {
		c.opts.logf(format, args...)
	}
}

// String names the blob for messages.
func (b *Blob) String() string { return b.repo.String() + "@" + b.digest.String() }
