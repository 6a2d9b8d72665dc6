package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strconv"
	"strings"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Span is a stretch of a blob: N bytes at Off.
type Span struct {
	Off, N int64
}

// maxRangeHeader caps the Range header of one request; servers commonly
// refuse request headers of more than 8 KiB.
const maxRangeHeader = 4 << 10

// spanLimit returns how many of spans (from the first) fit into the Range
// header of one request; at least 1.
func spanLimit(spans []Span) int {
	size := len("bytes=")
	for i, s := range spans {
		size += len(strconv.FormatInt(s.Off, 10)) + len(strconv.FormatInt(s.Off+s.N-1, 10)) + 2
		if size > maxRangeHeader {
			return max(i, 1)
		}
	}
	return len(spans)
}

// ReadSpans reads several stretches of the blob, sorted by offset and not
// overlapping, in one request when it can: a multi-range request answered
// with multipart/byteranges, as registries serving blobs themselves do.
//
// Registries differ in how they refuse such a request: GCR answers 400,
// GHCR's blob CDN 501, zot and object stores 416, S3, MinIO and
// registries on a proxy-cache miss send the whole blob (200), and some
// send only the first range (a plain 206). Each is left at once, without
// reading what was not asked for, and without losing what was received:
// the spans not received are read one range request after another (see
// SpanReader.Single for callers that would rather read them in parallel).
// The registry is then asked for one range at a time by every later
// ReadSpans call of the client, on any blob. The caller must close the
// SpanReader.
func (b *Blob) ReadSpans(ctx context.Context, spans []Span) (*SpanReader, error) {
	for i, s := range spans {
		if s.Off < 0 || s.N <= 0 || (b.size > 0 && s.Off+s.N > b.size) {
			return nil, fmt.Errorf("reading blob %s: range %d+%d outside blob of %d bytes", b.digest, s.Off, s.N, b.size)
		}
		if i > 0 && s.Off < spans[i-1].Off+spans[i-1].N {
			return nil, fmt.Errorf("reading blob %s: ranges %d+%d and %d+%d are not sorted apart", b.digest, spans[i-1].Off, spans[i-1].N, s.Off, s.N)
		}
	}
	sr := &SpanReader{b: b, ctx: ctx, spans: spans}
	if err := sr.request(); err != nil {
		return nil, err
	}
	return sr, nil
}

// request asks for the spans from r.next on: as many as fit in one
// multi-range request, or none when the blob is read range by range.
func (r *SpanReader) request() error {
	b, spans := r.b, r.spans[r.next:]
	n := spanLimit(spans)
	r.batchEnd = r.next + n
	if n < 2 || b.noRange.Load() {
		r.batchEnd = len(r.spans)
		return nil
	}
	send, learnt, err := b.c.multiTurn(r.ctx, b.repo.RegistryStr())
	if err != nil {
		return fmt.Errorf("reading blob %s: %w", b.digest, err)
	}
	if !send {
		r.batchEnd = len(r.spans)
		return nil
	}
	var rng strings.Builder
	rng.WriteString("bytes=")
	for i, s := range spans[:n] {
		if i > 0 {
			rng.WriteByte(',')
		}
		fmt.Fprintf(&rng, "%d-%d", s.Off, s.Off+s.N-1)
	}
	resp, err := b.sendRanges(r.ctx, rng.String())
	if err != nil {
		learnt(false, false)
		return err
	}
	switch resp.StatusCode {
	case http.StatusPartialContent:
		r.body = resp.Body
		mt, params, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
		if mt == "multipart/byteranges" && params["boundary"] != "" {
			learnt(true, false)
			r.parts = multipart.NewReader(resp.Body, params["boundary"])
			return nil
		}
		// One range: the server joined them, or sent only the first.
		off, end, err := contentRange(resp.Header.Get("Content-Range"))
		if err != nil {
			learnt(false, false)
			resp.Body.Close()
			r.body = nil
			return fmt.Errorf("reading blob %s: %w", b.digest, err)
		}
		if last := spans[n-1]; off <= spans[0].Off && last.Off+last.N <= end {
			learnt(true, false)
		} else {
			// What it sent is used; the rest comes range by range.
			r.refused(fmt.Sprintf("server answered a request for %d ranges with bytes %d-%d only", n, off, end-1))
			learnt(false, true)
		}
		r.part, r.partPos, r.partEnd = resp.Body, off, end
		return nil
	case http.StatusOK, http.StatusBadRequest, http.StatusRequestedRangeNotSatisfiable, http.StatusNotImplemented:
		// Closed at once: most of a whole blob is not wanted.
		resp.Body.Close()
		r.refused(fmt.Sprintf("server answered %s to a request for %d ranges", resp.Status, n))
		learnt(false, true)
		return nil
	}
	learnt(false, false)
	defer drain(resp.Body)
	err = transport.CheckError(resp, http.StatusOK, http.StatusPartialContent)
	return fmt.Errorf("reading blob %s: %w", b.digest, classify(b.repo.RegistryStr(), err))
}

// sendRanges sends a request with the Range header rng, at the redirect
// target when one is known and still answers (see atTarget).
func (b *Blob) sendRanges(ctx context.Context, rng string) (*http.Response, error) {
	return atTarget(ctx, b, func(client *http.Client, u string, viaRegistry bool) (*http.Response, error) {
		resp, err := b.send(ctx, client, u, rng)
		if err != nil {
			return nil, err
		}
		if !viaRegistry && !multiAnswer(resp.StatusCode) {
			// Most likely a signed URL that expired (403): the registry
			// gives a fresh one.
			drain(resp.Body)
			return nil, errors.New(resp.Status)
		}
		b.remember(resp, u, viaRegistry)
		return resp, nil
	})
}

// multiAnswer reports whether status answers a multi-range request:
// with the ranges (206), or with a refusal to serve several (see
// ReadSpans).
func multiAnswer(status int) bool {
	switch status {
	case http.StatusPartialContent, http.StatusOK, http.StatusBadRequest,
		http.StatusRequestedRangeNotSatisfiable, http.StatusNotImplemented:
		return true
	}
	return false
}

// refused switches the reader, and the client for this registry, to one
// range at a time.
func (r *SpanReader) refused(why string) {
	r.batchEnd = len(r.spans)
	if r.b.c.refuseMulti(r.b.repo.RegistryStr()) {
		r.b.c.logf("blob %s: %s; asking %s for one range at a time from now on", r.b.digest, why, r.b.repo.RegistryStr())
	}
}

// SpanReader hands out the spans of one ReadSpans call in order.
type SpanReader struct {
	b     *Blob
	ctx   context.Context
	spans []Span
	next  int // index of the next span Next returns
	// batchEnd ends the spans of the current request.
	batchEnd int

	body  io.ReadCloser     // the multi-range response, nil when reading range by range
	parts *multipart.Reader // nil for a single joined range
	// part is the current part of body; partPos is the blob offset of its
	// next byte and partEnd the offset after its last.
	part             io.Reader
	partPos, partEnd int64

	single io.ReadCloser // the current span's own range read
}

// Next returns a reader of the next span's bytes, valid until the next
// call; io.EOF after the last span. A span not read to its end is skipped.
func (r *SpanReader) Next() (io.Reader, error) {
	if r.single != nil {
		r.single.Close()
		r.single = nil
	}
	if r.next == len(r.spans) {
		return nil, io.EOF
	}
	if r.next == r.batchEnd {
		if r.body != nil {
			r.body.Close()
			r.body, r.parts, r.part = nil, nil, nil
		}
		if err := r.request(); err != nil {
			return nil, err
		}
	}
	s := r.spans[r.next]
	r.next++
	if r.body != nil {
		rd, err := r.fromParts(s)
		if rd != nil || err != nil {
			return rd, err
		}
		// The server sent fewer or other ranges than asked: the rest is
		// read range by range.
		r.body.Close()
		r.body, r.parts, r.part = nil, nil, nil
		r.refused(fmt.Sprintf("the answer to a multi-range request lacks bytes %d-%d", s.Off, s.Off+s.N-1))
	}
	rc, err := r.b.ReadRange(r.ctx, s.Off, s.N)
	if err != nil {
		return nil, err
	}
	r.single = rc
	return rc, nil
}

// Single reports whether the next span will be read with a range request
// of its own: the server refused to serve several ranges at once (see
// ReadSpans), or only one span is left. A caller with spare connections
// may then read the remaining spans in parallel with Blob.ReadRange
// instead, and close the SpanReader.
func (r *SpanReader) Single() bool {
	if r.next >= len(r.spans) {
		return false
	}
	if r.next < r.batchEnd {
		return r.body == nil
	}
	return r.next == len(r.spans)-1 || r.b.c.multiRefused(r.b.repo.RegistryStr()) || r.b.noRange.Load()
}

// fromParts finds span s in the multipart answer. It returns nil, nil when
// the answer does not hold s.
func (r *SpanReader) fromParts(s Span) (io.Reader, error) {
	for {
		if r.part != nil && r.partPos <= s.Off && s.Off+s.N <= r.partEnd {
			if _, err := io.CopyN(io.Discard, r.part, s.Off-r.partPos); err != nil {
				return nil, fmt.Errorf("reading blob %s at byte %d: %w", r.b.digest, r.partPos, unexpected(err))
			}
			r.partPos = s.Off
			return &partReader{r: r, left: s.N}, nil
		}
		if r.part != nil && r.partEnd > s.Off {
			return nil, nil // the part begins past s, or ends inside it
		}
		if r.parts == nil {
			return nil, nil
		}
		p, err := r.parts.NextPart()
		if err == io.EOF {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading blob %s: multi-range answer: %w", r.b.digest, err)
		}
		off, end, err := contentRange(p.Header.Get("Content-Range"))
		if err != nil {
			return nil, fmt.Errorf("reading blob %s: multi-range answer: %w", r.b.digest, err)
		}
		r.part, r.partPos, r.partEnd = p, off, end
	}
}

// Close ends the request.
func (r *SpanReader) Close() error {
	if r.single != nil {
		r.single.Close()
	}
	if r.body != nil {
		return r.body.Close()
	}
	return nil
}

// partReader reads one span out of the current part.
type partReader struct {
	r    *SpanReader
	left int64
}

func (p *partReader) Read(b []byte) (int, error) {
	if p.left == 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > p.left {
		b = b[:p.left]
	}
	n, err := p.r.part.Read(b)
	p.left -= int64(n)
	p.r.partPos += int64(n)
	if err == io.EOF {
		if p.left > 0 {
			return n, fmt.Errorf("reading blob %s at byte %d: %w", p.r.b.digest, p.r.partPos, io.ErrUnexpectedEOF)
		}
		err = nil
	}
	if err != nil {
		err = fmt.Errorf("reading blob %s at byte %d: %w", p.r.b.digest, p.r.partPos, err)
	}
	return n, err
}

// contentRange parses "bytes FIRST-LAST/SIZE" into the offsets of the
// first byte and after the last.
func contentRange(cr string) (off, end int64, err error) {
	spec, ok := strings.CutPrefix(cr, "bytes ")
	if ok {
		spec, _, ok = strings.Cut(spec, "/")
	}
	var first, last string
	if ok {
		first, last, ok = strings.Cut(spec, "-")
	}
	if ok {
		a, err1 := strconv.ParseInt(first, 10, 64)
		z, err2 := strconv.ParseInt(last, 10, 64)
		if err1 == nil && err2 == nil && a >= 0 && z >= a {
			return a, z + 1, nil
		}
	}
	return 0, 0, fmt.Errorf("invalid Content-Range %q", cr)
}

func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
