package main

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestShaper checks the link the benchmark's numbers rest on: the added
// round trip, the bandwidth cap and the counters.
func TestShaper(t *testing.T) {
	body := bytes.Repeat([]byte("x"), 1_000_000)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/blobs/") {
			w.Write(body)
			return
		}
		io.WriteString(w, "{}")
	}))
	defer up.Close()
	s, err := startShaper(strings.TrimPrefix(up.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const rtt, bw = 30 * time.Millisecond, 10_000_000 // 1 MB takes 100 ms
	s.set(rtt, bw)
	get := func(path string) int64 {
		resp, err := http.Get("http://" + s.Host + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		n, err := io.Copy(io.Discard, resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	start := time.Now()
	if n := get("/v2/repo/blobs/sha256:00"); n != int64(len(body)) {
		t.Fatalf("got %d bytes, want %d", n, len(body))
	}
	took := time.Since(start)
	if want := rtt + 100*time.Millisecond; took < want-10*time.Millisecond || took > want+80*time.Millisecond {
		t.Errorf("1 MB at 10 MB/s with 30 ms RTT took %v, want about %v", took, want)
	}
	get("/v2/")
	got := s.counts()
	got.BlobServer = 0
	want := counts{Reqs: 2, Bytes: int64(len(body)) + 2, BlobReqs: 1, BlobBytes: int64(len(body))}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("counts (-want +got):\n%s", diff)
	}
	s.set(0, 0)
	start = time.Now()
	get("/v2/repo/blobs/sha256:00")
	if took := time.Since(start); took > 60*time.Millisecond {
		t.Errorf("without RTT and cap, 1 MB took %v", took)
	}
	if got := s.counts(); got.BlobReqs != 1 {
		t.Errorf("counters not reset: %+v", got)
	}
}

func TestParseBandwidth(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		bad  bool
	}{
		{in: "25MB", want: 25_000_000},
		{in: "25MB/s", want: 25_000_000},
		{in: "100MiB", want: 100 << 20},
		{in: "1.5G", want: 1_500_000_000},
		{in: "512KiB", want: 512 << 10},
		{in: "1000", want: 1000},
		{in: "0", want: 0},
		{in: "off", want: 0},
		{in: "fast", bad: true},
		{in: "-1MB", bad: true},
	} {
		got, err := parseBandwidth(tc.in)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("parseBandwidth(%q) = %d, %v; want %d, error %v", tc.in, got, err, tc.want, tc.bad)
		}
	}
}

func TestMedian(t *testing.T) {
	ss := []sample{
		{wall: 3 * time.Second, rss: 30, c: counts{BlobReqs: 7}},
		{wall: 1 * time.Second, rss: 10, c: counts{BlobReqs: 9}},
		{wall: 2 * time.Second, rss: 50, c: counts{BlobReqs: 8}},
	}
	m := median(ss)
	if m.wall != 2*time.Second || m.rss != 30 || m.c.BlobReqs != 8 {
		t.Errorf("median = %+v", m)
	}
	if got := wall(ss); got != "2.00s (1.00-3.00)" {
		t.Errorf("wall = %q", got)
	}
}
