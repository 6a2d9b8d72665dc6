package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// ErrRangeRefused means the server refused a valid Range request with 416,
// 501 or 400: the blob can only be read in one stream from its start.
var ErrRangeRefused = errors.New("server refused a range request")

// Segment is the answer to [Blob.GetSegment]: either the bytes asked for
// (Partial) or, when the server ignored Range or the If-Range validator no
// longer matched, the whole blob from byte 0.
type Segment struct {
	// Body is the response body; the caller must close it.
	Body io.ReadCloser
	// Partial is true for a 206 carrying exactly the range asked for, and
	// false for a 200 carrying the whole blob.
	Partial bool
	// Validator is the response's ETag, or else its Last-Modified, or "":
	// what an If-Range of a later request can name.
	Validator string
}

// GetSegment GETs the n bytes at off of the blob, in one request (retried
// as the client's RetryPolicy says, but not resumed when cut short: the
// caller keeps track of what arrived). ifRange, when not empty, is sent as
// If-Range, so a server whose copy changed answers 200 with the whole
// (new) blob instead of splicing bytes of two versions. A 416, 501 or 400
// answer to a range inside the blob is ErrRangeRefused.
//
// Unlike ReadRange, GetSegment never hides a 200: the caller decides
// whether to read the whole blob from it or start over.
func (b *Blob) GetSegment(ctx context.Context, off, n int64, ifRange string) (*Segment, error) {
	if off < 0 || n <= 0 || (b.size > 0 && off+n > b.size) {
		return nil, fmt.Errorf("reading blob %s: range %d+%d outside blob of %d bytes", b.digest, off, n, b.size)
	}
	return atTarget(ctx, b, func(client *http.Client, u string, viaRegistry bool) (*Segment, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, off+n-1))
		if ifRange != "" {
			req.Header.Set("If-Range", ifRange)
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, fmt.Errorf("reading blob %s: %w", b.digest, classify(b.repo.RegistryStr(), err))
		}
		b.remember(resp, u, viaRegistry)
		seg := &Segment{Body: resp.Body, Validator: validator(resp.Header)}
		switch resp.StatusCode {
		case http.StatusPartialContent:
			if err := checkContentRange(resp.Header.Get("Content-Range"), off, n); err != nil {
				resp.Body.Close()
				return nil, fmt.Errorf("reading blob %s: %w", b.digest, err)
			}
			seg.Partial = true
			return seg, nil
		case http.StatusOK:
			if b.size > 0 && resp.ContentLength >= 0 && resp.ContentLength != b.size {
				resp.Body.Close()
				return nil, fmt.Errorf("reading blob %s: the server sent %d bytes for a blob of %d", b.digest, resp.ContentLength, b.size)
			}
			if ifRange == "" { // not a changed blob: the server ignores Range
				b.ignoredRange.Store(true)
			}
			return seg, nil
		case http.StatusRequestedRangeNotSatisfiable, http.StatusNotImplemented, http.StatusBadRequest:
			// Later reads of this blob (ReadRange, RangeIgnored) know it.
			b.noRange.Store(true)
			drain(resp.Body)
			return nil, fmt.Errorf("reading blob %s: %w (%s to Range bytes=%d-%d)", b.digest, ErrRangeRefused, resp.Status, off, off+n-1)
		}
		defer drain(resp.Body)
		err = transport.CheckError(resp, http.StatusOK, http.StatusPartialContent)
		return nil, fmt.Errorf("reading blob %s: %w", b.digest, classify(b.repo.RegistryStr(), err))
	})
}

// GetWhole GETs the whole blob without a Range header, in one request (not
// resumed when cut short). It returns the body and the response's
// validator.
func (b *Blob) GetWhole(ctx context.Context) (io.ReadCloser, string, error) {
	type whole struct {
		body      io.ReadCloser
		validator string
	}
	w, err := atTarget(ctx, b, func(client *http.Client, u string, viaRegistry bool) (whole, error) {
		resp, err := b.send(ctx, client, u, "")
		if err != nil {
			return whole{}, err
		}
		b.remember(resp, u, viaRegistry)
		if resp.StatusCode != http.StatusOK {
			defer drain(resp.Body)
			err = transport.CheckError(resp, http.StatusOK)
			return whole{}, fmt.Errorf("reading blob %s: %w", b.digest, classify(b.repo.RegistryStr(), err))
		}
		return whole{resp.Body, validator(resp.Header)}, nil
	})
	return w.body, w.validator, err
}

// validator returns the strong ETag of a response, else its Last-Modified.
// A weak ETag (W/"...") cannot be used in If-Range (RFC 9110 13.1.5).
func validator(h http.Header) string {
	if et := h.Get("ETag"); et != "" && len(et) > 2 && et[:2] != "W/" {
		return et
	}
	return h.Get("Last-Modified")
}

// StatBlob asks the registry (with a HEAD) whether dgst is a blob in repo,
// and returns its size. A blob that is not there is ErrNotFound.
func (c *Client) StatBlob(ctx context.Context, repo name.Repository, dgst v1.Hash) (int64, error) {
	rt, err := c.transport(ctx, repo)
	if err != nil {
		return 0, fmt.Errorf("looking up blob %s: %w", dgst, err)
	}
	u := fmt.Sprintf("%s://%s/v2/%s/blobs/%s", repo.Scheme(), repo.RegistryStr(), repo.RepositoryStr(), dgst)
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, u, nil)
	if err != nil {
		return 0, err
	}
	resp, err := (&http.Client{Transport: rt}).Do(req)
	if err != nil {
		return 0, fmt.Errorf("looking up blob %s: %w", dgst, classify(repo.RegistryStr(), err))
	}
	defer drain(resp.Body)
	if err := transport.CheckError(resp, http.StatusOK); err != nil {
		return 0, fmt.Errorf("looking up blob %s: %w", dgst, classify(repo.RegistryStr(), err))
	}
	size, err := strconv.ParseInt(resp.Header.Get("Content-Length"), 10, 64)
	if err != nil || size < 0 {
		return 0, fmt.Errorf("looking up blob %s: the registry gave no size (Content-Length %q)", dgst, resp.Header.Get("Content-Length"))
	}
	return size, nil
}
