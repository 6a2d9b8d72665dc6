package main

import (
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// maxWrite is the largest piece of a response body released at once by the
// pacing (ReverseProxy copies in 32 KiB pieces anyway).
const maxWrite = 64 << 10

// shaper is a link-shaping reverse proxy on a loopback port in front of the
// registry. Every request waits one round-trip time before it is forwarded;
// every response body is paced to a bandwidth cap per response, which with
// HTTP/1.1 (one response at a time on a connection) is a cap per
// connection. It counts requests and response body bytes.
//
// All responses together share a total cap as well (the link's
// capacity): each piece of a body reserves its time on the shared link in
// the order pieces arrive, so parallel connections split the total.
//
// What it does not model: TCP and TLS handshakes (a real new connection
// costs one or two more round trips) and slow start.
type shaper struct {
	Host string // 127.0.0.1:PORT, for image references

	srv *http.Server
	rtt atomic.Int64 // nanoseconds
	bw  atomic.Int64 // bytes per second per connection; 0 means no cap
	// total is the cap of all connections together, bytes per second; 0
	// means none. linkFree is when the shared link is next free.
	total    atomic.Int64
	linkMu   sync.Mutex
	linkFree time.Time

	reqs, bytes         atomic.Int64 // all requests and response body bytes
	blobReqs, blobBytes atomic.Int64 // GET .../blobs/... only
	blobServer          atomic.Int64 // summed registry time to response headers of blob GETs, ns
}

// counts is a snapshot of the shaper's counters.
type counts struct {
	Reqs, Bytes, BlobReqs, BlobBytes int64
	// BlobServer is the registry's summed time to response headers of
	// the blob GETs (no added RTT in it): the server's share of latency.
	BlobServer time.Duration
}

// startShaper starts the proxy in front of the plain-HTTP registry at
// upstream (host:port).
func startShaper(upstream string) (*shaper, error) {
	target := &url.URL{Scheme: "http", Host: upstream}
	s := &shaper{}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host // URLs the registry builds name the proxy
		},
		Transport: &timedTransport{s: s, inner: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			MaxIdleConns:        256,
			MaxIdleConnsPerHost: 128,
			DisableCompression:  true,
		}},
		FlushInterval: -1, // flush every write: the pacing decides when bytes leave
		ModifyResponse: func(resp *http.Response) error {
			resp.Body = &pacedBody{rc: resp.Body, s: s, bw: s.bw.Load(), blob: isBlobGet(resp.Request)}
			return nil
		},
		ErrorLog: log.New(io.Discard, "", 0),
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.reqs.Add(1)
		if isBlobGet(r) {
			s.blobReqs.Add(1)
		}
		if d := time.Duration(s.rtt.Load()); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			}
		}
		rp.ServeHTTP(w, r)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("starting the link-shaping proxy: %w", err)
	}
	s.Host = ln.Addr().String()
	s.srv = &http.Server{Handler: h, ErrorLog: log.New(io.Discard, "", 0)}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// Close stops the proxy.
func (s *shaper) Close() error { return s.srv.Close() }

// reserve books n bytes on the shared link and returns when they have
// passed it; the zero time when there is no total cap.
func (s *shaper) reserve(n int) time.Time {
	total := s.total.Load()
	if total <= 0 {
		return time.Time{}
	}
	s.linkMu.Lock()
	defer s.linkMu.Unlock()
	if now := time.Now(); s.linkFree.Before(now) {
		s.linkFree = now
	}
	s.linkFree = s.linkFree.Add(time.Duration(float64(n) / float64(total) * float64(time.Second)))
	return s.linkFree
}

// set sets the link for the next requests and resets the counters.
func (s *shaper) set(rtt time.Duration, bw, total int64) {
	s.rtt.Store(int64(rtt))
	s.bw.Store(bw)
	s.total.Store(total)
	s.reqs.Store(0)
	s.bytes.Store(0)
	s.blobReqs.Store(0)
	s.blobBytes.Store(0)
	s.blobServer.Store(0)
}

func (s *shaper) counts() counts {
	return counts{Reqs: s.reqs.Load(), Bytes: s.bytes.Load(), BlobReqs: s.blobReqs.Load(), BlobBytes: s.blobBytes.Load(),
		BlobServer: time.Duration(s.blobServer.Load())}
}

// timedTransport sums the registry's time to response headers of blob
// GETs.
type timedTransport struct {
	s     *shaper
	inner http.RoundTripper
}

func (t *timedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := t.inner.RoundTrip(r)
	if isBlobGet(r) {
		t.s.blobServer.Add(int64(time.Since(start)))
	}
	return resp, err
}

func isBlobGet(r *http.Request) bool {
	return r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/")
}

// pacedBody releases a response body at bw bytes per second: the k-th byte
// leaves no earlier than start + k/bw, start being the first read. Sleeping
// to an absolute schedule makes timer overshoot self-correcting.
type pacedBody struct {
	rc    io.ReadCloser
	s     *shaper
	bw    int64
	blob  bool
	start time.Time
	n     int64
}

func (b *pacedBody) Read(p []byte) (int, error) {
	if len(p) > maxWrite {
		p = p[:maxWrite]
	}
	if b.start.IsZero() {
		b.start = time.Now()
	}
	n, err := b.rc.Read(p)
	if n > 0 {
		b.n += int64(n)
		b.s.bytes.Add(int64(n))
		if b.blob {
			b.s.blobBytes.Add(int64(n))
		}
		var due time.Time
		if b.bw > 0 {
			due = b.start.Add(time.Duration(float64(b.n) / float64(b.bw) * float64(time.Second)))
		}
		if link := b.s.reserve(n); link.After(due) {
			due = link
		}
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
	}
	return n, err
}

func (b *pacedBody) Close() error { return b.rc.Close() }

// parseBandwidth parses a rate such as "25MB" (per second; decimal units
// K, M, G with or without B; binary KiB, MiB, GiB), a plain number of
// bytes per second, or "0"/"off" for no cap.
func parseBandwidth(s string) (int64, error) {
	t := strings.TrimSuffix(strings.TrimSpace(s), "/s")
	if t == "off" || t == "0" {
		return 0, nil
	}
	units := []struct {
		suffix string
		mult   float64
	}{
		{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
		{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9},
		{"K", 1e3}, {"M", 1e6}, {"G", 1e9}, {"B", 1},
	}
	mult := 1.0
	for _, u := range units {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSuffix(t, u.suffix), u.mult
			break
		}
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(t), 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("invalid bandwidth %q: want e.g. 25MB, 100MiB, 0 for no cap", s)
	}
	return int64(v * mult), nil
}
