package blob

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/stargz-get/stargz-get/pkg/registry"
)

// served is a blob in an in-process registry, reached over real HTTP, with
// the bytes the server sent counted.
type served struct {
	data []byte
	blob *registry.Blob
	sent *atomic.Int64
}

type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (w countingWriter) Write(p []byte) (int, error) {
	k, err := w.ResponseWriter.Write(p)
	w.n.Add(int64(k))
	return k, err
}

func serve(t *testing.T, size int) *served { return serveWith(t, size, false) }

// serveWith serves a blob; noRange makes the server ignore Range headers,
// as some registries and proxies do.
func serveWith(t *testing.T, size int, noRange bool) *served {
	t.Helper()
	data := make([]byte, size)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	var sent atomic.Int64
	reg := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/blobs/sha256:") && r.Method == http.MethodGet {
			w = countingWriter{w, &sent}
			if noRange {
				r.Header.Del("Range")
			}
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	repo, err := name.NewRepository(strings.TrimPrefix(srv.URL, "http://")+"/test/blob", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	l := static.NewLayer(data, types.OCILayer)
	if err := remote.WriteLayer(repo, l); err != nil {
		t.Fatal(err)
	}
	c, err := registry.New(registry.WithPlainHTTP(true))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	b, err := c.Blob(context.Background(), repo, v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}, int64(size))
	if err != nil {
		t.Fatal(err)
	}
	sent.Store(0)
	return &served{data: data, blob: b, sent: &sent}
}

// waitSent waits for the server's count to reach want (its handler may
// count the last bytes after the client has them) and returns it.
func (s *served) waitSent(want int64) int64 {
	for i := 0; i < 100 && s.sent.Load() < want; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	return s.sent.Load()
}

func (s *served) digest() string {
	sum := sha256.Sum256(s.data)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func TestStreamWhole(t *testing.T) {
	s := serve(t, 19<<20+12345)
	for _, tc := range []struct {
		name string
		opts []StreamOption
	}{
		{"default", nil},
		{"one at a time", []StreamOption{WithWindow(1), WithSegmentBytes(1 << 20)}},
		{"small segments", []StreamOption{WithWindow(8), WithSegmentBytes(100_000)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s.sent.Store(0)
			st, err := NewStream(context.Background(), s.blob, 0, append(tc.opts, WithDigest(s.digest()))...)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(st)
			st.Close()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, s.data) {
				t.Fatalf("got %d bytes, not the blob's %d", len(got), len(s.data))
			}
			if sent := s.waitSent(int64(len(s.data))); st.BytesMoved() != int64(len(s.data)) || sent != int64(len(s.data)) {
				t.Fatalf("moved %d, server sent %d; want %d", st.BytesMoved(), sent, len(s.data))
			}
		})
	}
}

// A server that ignores Range: after the first segment shows it, the rest
// comes from one request, not a request (and the blob again) per segment.
func TestStreamRangeIgnored(t *testing.T) {
	s := serveWith(t, 19<<20+777, true)
	st, err := NewStream(context.Background(), s.blob, 0, WithDigest(s.digest()), WithSegmentBytes(1<<20))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(st)
	st.Close()
	if err != nil || !bytes.Equal(got, s.data) {
		t.Fatalf("got %d bytes, %v", len(got), err)
	}
	if sent := s.sent.Load(); sent > 3*int64(len(s.data)) {
		t.Fatalf("server sent %d bytes for a blob of %d", sent, len(s.data))
	}
	// And with a wrong digest, the mismatch is still found.
	st, _ = NewStream(context.Background(), s.blob, 0, WithDigest("sha256:"+strings.Repeat("0", 64)))
	defer st.Close()
	if _, err := io.ReadAll(st); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("err = %v, want a digest mismatch", err)
	}
}

func TestStreamFromOffset(t *testing.T) {
	s := serve(t, 3<<20)
	st, err := NewStream(context.Background(), s.blob, 1<<20+7)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	got, err := io.ReadAll(st)
	if err != nil || !bytes.Equal(got, s.data[1<<20+7:]) {
		t.Fatalf("got %d bytes, %v", len(got), err)
	}
}

func TestStreamSpan(t *testing.T) {
	s := serve(t, 3<<20)
	st, err := NewStream(context.Background(), s.blob, 1000, WithEnd(2<<20+5), WithSegmentBytes(300_000))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	got, err := io.ReadAll(st)
	if err != nil || !bytes.Equal(got, s.data[1000:2<<20+5]) {
		t.Fatalf("got %d bytes, %v", len(got), err)
	}
	if sent := s.waitSent(int64(len(got))); sent != int64(len(got)) {
		t.Fatalf("server sent %d bytes for a span of %d", sent, len(got))
	}
}

func TestStreamDigestMismatch(t *testing.T) {
	s := serve(t, 2<<20)
	st, err := NewStream(context.Background(), s.blob, 0, WithDigest("sha256:"+strings.Repeat("0", 64)))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	_, err = io.ReadAll(st)
	if !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("err = %v, want a digest mismatch", err)
	}
}

// Closing early stops the segments: what moved is what was read plus at
// most one window of segments.
func TestStreamEarlyClose(t *testing.T) {
	s := serve(t, 64<<20)
	const seg, window = 1 << 20, 4
	st, err := NewStream(context.Background(), s.blob, 0, WithSegmentBytes(seg), WithWindow(window))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 3<<20)
	if _, err := io.ReadFull(st, buf); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf, s.data[:len(buf)]) {
		t.Fatal("wrong bytes")
	}
	st.Close()
	limit := int64(len(buf) + window*seg)
	if m := st.BytesMoved(); m > limit || s.sent.Load() > limit+seg {
		t.Fatalf("moved %d bytes (server sent %d) for %d read; want at most %d", m, s.sent.Load(), len(buf), limit)
	}
}

func TestStreamCancelled(t *testing.T) {
	s := serve(t, 8<<20)
	ctx, cancel := context.WithCancel(context.Background())
	st, err := NewStream(ctx, s.blob, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cancel()
	if _, err := io.ReadAll(st); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestStreamBadOptions(t *testing.T) {
	s := serve(t, 1000)
	for _, opts := range [][]StreamOption{{WithWindow(0)}, {WithSegmentBytes(0)}} {
		if _, err := NewStream(context.Background(), s.blob, 0, opts...); err == nil {
			t.Error("bad option accepted")
		}
	}
	if _, err := NewStream(context.Background(), s.blob, 0, WithEnd(2000)); err == nil {
		t.Error("end past the blob accepted")
	}
	if _, err := NewStream(context.Background(), s.blob, 2000); err == nil {
		t.Error("start past the end accepted")
	}
	if _, err := NewStream(context.Background(), s.blob, 10, WithDigest(s.digest())); err == nil {
		t.Error("digest check from an offset accepted")
	}
}
