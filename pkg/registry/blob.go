package registry

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

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
// it. A registry that ignores Range and sends the whole blob is still read
// correctly (the bytes before off are skipped), just less efficiently.
func (b *Blob) ReadRange(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	if off < 0 || n <= 0 || (b.size > 0 && off+n > b.size) {
		return nil, fmt.Errorf("reading blob %s: range %d+%d outside blob of %d bytes", b.digest, off, n, b.size)
	}
	b.mu.Lock()
	resolved := b.resolved
	b.mu.Unlock()
	if resolved != "" {
		body, err := b.get(ctx, http.DefaultClient, b.c.base, resolved, off, n)
		if err == nil {
			return body, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		// Signed URLs expire: go back to the registry for a fresh one.
		b.c.logf("blob %s: redirect target stopped working (%v); asking the registry again", b.digest, err)
		b.mu.Lock()
		b.resolved = ""
		b.mu.Unlock()
	}
	return b.get(ctx, b.client, nil, b.url, off, n)
}

// ReadAt reads len(p) bytes at off, for callers wanting io.ReaderAt.
func (b *Blob) ReadAt(p []byte, off int64) (int, error) {
	rc, err := b.ReadRange(context.Background(), off, int64(len(p)))
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	return io.ReadFull(rc, p)
}

func (b *Blob) get(ctx context.Context, client *http.Client, rt http.RoundTripper, u string, off, n int64) (io.ReadCloser, error) {
	if rt != nil {
		client = &http.Client{Transport: rt}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	// Always a closed range: some registries answer 416 to open-ended ones.
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, off+n-1))
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reading blob %s: %w", b.digest, classify(b.repo.RegistryStr(), err))
	}
	if final := resp.Request.URL; final.Host != req.URL.Host && rt == nil {
		b.mu.Lock()
		b.resolved = final.String()
		b.mu.Unlock()
	}
	switch resp.StatusCode {
	case http.StatusPartialContent:
		if err := checkContentRange(resp.Header.Get("Content-Range"), off, n); err != nil {
			resp.Body.Close()
			return nil, fmt.Errorf("reading blob %s: %w", b.digest, err)
		}
		return resp.Body, nil
	case http.StatusOK:
		b.c.logf("blob %s: registry ignored Range and sent the whole blob; skipping to byte %d", b.digest, off)
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
