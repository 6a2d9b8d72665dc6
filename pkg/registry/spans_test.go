package registry_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stargz-get/stargz-get/internal/testenv"
	"github.com/stargz-get/stargz-get/pkg/registry"
)

// testSpans are scattered stretches of a blob of size, sorted and apart.
func testSpans(size int64) []registry.Span {
	return []registry.Span{
		{Off: 0, N: 1},
		{Off: 100, N: 4000},
		{Off: size / 3, N: 12345},
		{Off: size / 2, N: 65536},
		{Off: size/2 + 65536 + 1, N: 7},
		{Off: size - 51, N: 51},
	}
}

// readSpans reads spans through b and compares them with the blob file's
// bytes.
func readSpans(t *testing.T, ctx context.Context, b *registry.Blob, l *testenv.Layer, spans []registry.Span) {
	t.Helper()
	sr, err := b.ReadSpans(ctx, spans)
	if err != nil {
		t.Fatalf("ReadSpans: %v", err)
	}
	defer sr.Close()
	for i, s := range spans {
		r, err := sr.Next()
		if err != nil {
			t.Fatalf("Next for span %d (%d+%d): %v", i, s.Off, s.N, err)
		}
		// Every other span is left unread past its first byte: Next
		// must skip the rest.
		if i%2 == 1 {
			got := make([]byte, 1)
			if _, err := io.ReadFull(r, got); err != nil {
				t.Fatalf("span %d (%d+%d): %v", i, s.Off, s.N, err)
			}
			if want := fixtureBytes(t, l, s.Off, 1); !bytes.Equal(got, want) {
				t.Errorf("span %d (%d+%d) first byte: %s", i, s.Off, s.N, describeDiff(want, got))
			}
			continue
		}
		got, err := io.ReadAll(r)
		if err != nil {
			t.Fatalf("span %d (%d+%d): %v", i, s.Off, s.N, err)
		}
		if want := fixtureBytes(t, l, s.Off, s.N); !bytes.Equal(got, want) {
			t.Errorf("span %d (%d+%d): %s", i, s.Off, s.N, describeDiff(want, got))
		}
	}
	if r, err := sr.Next(); err != io.EOF {
		t.Errorf("Next after the last span = %v, %v; want io.EOF", r, err)
	}
}

// The distribution registry answers a multi-range request with
// multipart/byteranges: all spans come in one GET.
func TestReadSpans(t *testing.T) {
	e := testEnv(t)
	ctx := testCtx(t)
	var contentType atomic.Value
	p := newProxy(t, e.anon.Host, nil, func(resp *http.Response) error {
		contentType.Store(resp.Header.Get("Content-Type"))
		return nil
	})
	l := e.fx.GoTree.Layers[0]
	b := openBlob(t, ctx, newClient(t), e.fx.GoTree.Ref(p.Listener.Addr().String()), l)
	readSpans(t, ctx, b, l, testSpans(l.Size))
	if n := p.blobGets.Load(); n != 1 {
		t.Errorf("%d blob GETs for %d spans, want 1", n, len(testSpans(l.Size)))
	}
	if ct, _ := contentType.Load().(string); !strings.HasPrefix(ct, "multipart/byteranges") {
		t.Errorf("registry answered with Content-Type %q, want multipart/byteranges", ct)
	}
	// One span is a plain range request.
	p.blobGets.Store(0)
	readSpans(t, ctx, b, l, testSpans(l.Size)[2:3])
	if n := p.blobGets.Load(); n != 1 {
		t.Errorf("%d blob GETs for one span, want 1", n)
	}
}

// Servers that do not answer a multi-range request with every range asked
// for still yield the right bytes: what is missing is read range by range,
// and later calls do not ask for several ranges again.
func TestReadSpansFallbacks(t *testing.T) {
	e := testEnv(t)
	l := e.fx.GoTree.Layers[0]
	spans := testSpans(l.Size)
	tests := []struct {
		name string
		// rewrite changes the Range header of a multi-range request on its
		// way to the registry ("" drops it).
		rewrite func(ranges []string) string
		// status replaces the answer's status with a bodiless one.
		status int
		log    string // a line of the client's log must contain it
	}{
		{name: "whole blob (object storage)", rewrite: func([]string) string { return "" }, log: "answered 200 OK"},
		{name: "first range only", rewrite: func(r []string) string { return "bytes=" + r[0] }, log: "with bytes"},
		{name: "joined into one range", rewrite: func([]string) string {
			return fmt.Sprintf("bytes=%d-%d", spans[0].Off, spans[len(spans)-1].Off+spans[len(spans)-1].N-1)
		}},
		{name: "every other range", rewrite: func(r []string) string {
			var odd []string
			for i := 0; i < len(r); i += 2 {
				odd = append(odd, r[i])
			}
			return "bytes=" + strings.Join(odd, ",")
		}, log: "lacks bytes"},
		{name: "later ranges first", rewrite: func(r []string) string {
			return "bytes=" + strings.Join(append(r[1:len(r):len(r)], r[0]), ",")
		}, log: "lacks bytes"},
		{name: "416 (zot, object stores)", status: http.StatusRequestedRangeNotSatisfiable, log: "answered 416"},
		{name: "400 (GCR)", status: http.StatusBadRequest, log: "answered 400"},
		{name: "501 (GHCR's blob CDN)", status: http.StatusNotImplemented, log: "answered 501"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			var multi atomic.Int64
			p := newProxy(t, e.anon.Host, func(r *http.Request) {
				rng, ok := strings.CutPrefix(r.Header.Get("Range"), "bytes=")
				if !ok || !strings.Contains(rng, ",") {
					return
				}
				multi.Add(1)
				if tc.rewrite == nil {
					return
				}
				if h := tc.rewrite(strings.Split(rng, ",")); h != "" {
					r.Header.Set("Range", h)
				} else {
					r.Header.Del("Range")
				}
			}, func(resp *http.Response) error {
				if tc.status != 0 && strings.Contains(resp.Request.Header.Get("Range"), ",") {
					resp.Body.Close()
					resp.Body, resp.ContentLength = http.NoBody, 0
					resp.StatusCode, resp.Status = tc.status, fmt.Sprintf("%d %s", tc.status, http.StatusText(tc.status))
					resp.Header.Set("Content-Range", fmt.Sprintf("bytes */%d", l.Size))
				}
				return nil
			})
			var log logLines
			c := newClient(t, registry.WithLogf(log.logf))
			b := openBlob(t, ctx, c, e.fx.GoTree.Ref(p.Listener.Addr().String()), l)
			readSpans(t, ctx, b, l, spans)
			sr, err := b.ReadSpans(ctx, spans)
			if err != nil {
				t.Fatal(err)
			}
			if tc.log != "" && !sr.Single() {
				t.Errorf("after a refusal, SpanReader.Single() = false, want true")
			}
			sr.Close()
			readSpans(t, ctx, b, l, spans)
			// Another blob of the same registry, through the same client.
			l2 := e.fx.Multi.Layers[0]
			b2 := openBlob(t, ctx, c, e.fx.Multi.Ref(p.Listener.Addr().String()), l2)
			readSpans(t, ctx, b2, l2, []registry.Span{{Off: 0, N: 1}, {Off: 100, N: 400}, {Off: l2.Size / 2, N: 100}, {Off: l2.Size - 51, N: 51}})
			if tc.log != "" {
				if !strings.Contains(strings.Join(log.all(), "\n"), tc.log) {
					t.Errorf("no log line contains %q; log:\n%s", tc.log, strings.Join(log.all(), "\n"))
				}
				if n := multi.Load(); n != 1 {
					t.Errorf("%d multi-range requests, want 1: later calls, on any blob of the registry, must not ask again", n)
				}
			}
		})
	}
}

// A multi-range answer cut short is an error, never short or wrong bytes.
func TestReadSpansCut(t *testing.T) {
	e := testEnv(t)
	ctx := testCtx(t)
	l := e.fx.GoTree.Layers[0]
	spans := testSpans(l.Size)
	p := newProxy(t, e.anon.Host, nil, func(resp *http.Response) error {
		if strings.HasPrefix(resp.Header.Get("Content-Type"), "multipart/") {
			resp.Body = struct {
				io.Reader
				io.Closer
			}{io.LimitReader(resp.Body, 9000), resp.Body}
		}
		return nil
	})
	b := openBlob(t, ctx, newClient(t, registry.WithRetry(registry.RetryPolicy{Tries: 1})), e.fx.GoTree.Ref(p.Listener.Addr().String()), l)
	sr, err := b.ReadSpans(ctx, spans)
	if err != nil {
		t.Fatalf("ReadSpans: %v", err)
	}
	defer sr.Close()
	var read int64
	for i, s := range spans {
		r, err := sr.Next()
		if err == nil {
			var got []byte
			got, err = io.ReadAll(r)
			read += int64(len(got))
			if err == nil && !bytes.Equal(got, fixtureBytes(t, l, s.Off, s.N)) {
				t.Fatalf("span %d: wrong bytes and no error", i)
			}
		}
		if err != nil {
			t.Logf("span %d: %v", i, err)
			return
		}
	}
	t.Errorf("all %d spans (%d bytes) read without an error from an answer cut at 9000 bytes", len(spans), read)
}

func TestReadSpansArguments(t *testing.T) {
	e := testEnv(t)
	ctx := testCtx(t)
	l := e.fx.GoTree.Layers[0]
	b := openBlob(t, ctx, newClient(t), e.fx.GoTree.Ref(e.anon.Host), l)
	for _, tc := range []struct {
		name  string
		spans []registry.Span
	}{
		{"overlapping", []registry.Span{{Off: 0, N: 10}, {Off: 5, N: 10}}},
		{"unsorted", []registry.Span{{Off: 100, N: 10}, {Off: 0, N: 10}}},
		{"past the end", []registry.Span{{Off: 0, N: 10}, {Off: l.Size - 5, N: 10}}},
		{"empty span", []registry.Span{{Off: 0, N: 0}}},
		{"negative offset", []registry.Span{{Off: -1, N: 10}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if sr, err := b.ReadSpans(ctx, tc.spans); err == nil {
				sr.Close()
				t.Errorf("ReadSpans(%v) succeeded, want an error", tc.spans)
			}
		})
	}
}

// Many spans are asked for in several multi-range requests, each with a
// Range header servers accept.
func TestReadSpansMany(t *testing.T) {
	e := testEnv(t)
	ctx := testCtx(t)
	var longest atomic.Int64
	p := newProxy(t, e.anon.Host, func(r *http.Request) {
		if n := int64(len(r.Header.Get("Range"))); n > longest.Load() {
			longest.Store(n)
		}
	}, nil)
	l := e.fx.GoTree.Layers[0]
	var spans []registry.Span
	for i := range int64(1000) {
		spans = append(spans, registry.Span{Off: i * (l.Size / 1000), N: 10})
	}
	b := openBlob(t, ctx, newClient(t), e.fx.GoTree.Ref(p.Listener.Addr().String()), l)
	readSpans(t, ctx, b, l, spans)
	if n := p.blobGets.Load(); n < 2 || n > 20 {
		t.Errorf("%d blob GETs for 1000 spans, want a few", n)
	}
	if n := longest.Load(); n > 4096 {
		t.Errorf("longest Range header is %d bytes, want at most 4 KiB", n)
	}
}
