package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
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
	s.set(rtt, bw, 0)
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
	// Two bodies at once share a 10 MB/s link: 2 MB take 200 ms, not 100.
	s.set(0, 0, bw)
	start = time.Now()
	done := make(chan error)
	for range 2 {
		go func() {
			resp, err := http.Get("http://" + s.Host + "/v2/repo/blobs/sha256:00")
			if err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			done <- err
		}()
	}
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if took := time.Since(start); took < 190*time.Millisecond {
		t.Errorf("2 MB through a 10 MB/s link took %v, want at least 200 ms", took)
	}
	s.set(0, 0, 0)
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

// TestUnpackerMatchesModel unpacks three small layers with whiteouts, an
// opaque directory (its marker after the layer's own entries there), type
// changes, links and a mode change with the baseline's unpacker, and
// checks the tree against the model of the flattened layers.
func TestUnpackerMatchesModel(t *testing.T) {
	type ent struct {
		name, typ, body, link string
		mode                  int64
	}
	d := func(n string) ent { return ent{name: n, typ: "dir", mode: 0o755} }
	f := func(n, body string, mode int64) ent { return ent{name: n, typ: "reg", body: body, mode: mode} }
	wh := func(n string) ent { return ent{name: n, typ: "reg", mode: 0o644} }
	layers := [][]ent{
		{d("a"), f("a/x", "x0", 0o644), f("a/y", "y0", 0o644), d("a/sub"), f("a/sub/z", "z0", 0o644),
			d("b"), f("b/keep", "k0", 0o755), f("b/gone", "g0", 0o644), d("c"), f("c/in", "c0", 0o644),
			f("file-to-dir", "f0", 0o644), d("dir-to-file"), f("dir-to-file/q", "q0", 0o644), f("top", "t0", 0o644)},
		{d("a"), f("a/new", "n1", 0o644), d("a/sub"), f("a/sub/w", "w1", 0o644), wh("a/" + opaqueWhiteout),
			d("b"), wh("b/.wh.gone"), f("b/keep", "k1", 0o600), wh(".wh.c"),
			{name: "top", typ: "symlink", link: "a/new"}},
		{d("file-to-dir"), f("file-to-dir/in", "i2", 0o644), f("dir-to-file", "d2", 0o644),
			f("top", "t2", 0o644), {name: "hard", typ: "hardlink", link: "top"}, d("c"), f("c/back", "b2", 0o644)},
	}
	root, err := os.OpenRoot(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	u := newUnpacker(root)
	var model [][]File
	for _, l := range layers {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		var files []File
		for _, e := range l {
			h := &tar.Header{Name: e.name, Mode: e.mode, ModTime: modTime}
			file := File{Name: e.name, Type: e.typ, Mode: e.mode, Link: e.link}
			switch e.typ {
			case "dir":
				h.Typeflag, h.Name = tar.TypeDir, e.name+"/"
			case "reg":
				h.Typeflag, h.Size = tar.TypeReg, int64(len(e.body))
				sum := sha256.Sum256([]byte(e.body))
				file.Size, file.Digest = h.Size, "sha256:"+hex.EncodeToString(sum[:])
			case "symlink":
				h.Typeflag, h.Linkname = tar.TypeSymlink, e.link
			case "hardlink":
				h.Typeflag, h.Linkname = tar.TypeLink, e.link
			}
			if err := tw.WriteHeader(h); err != nil {
				t.Fatal(err)
			}
			if _, err := io.WriteString(tw, e.body); err != nil {
				t.Fatal(err)
			}
			files = append(files, file)
		}
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
		if err := u.layer(tar.NewReader(&buf)); err != nil {
			t.Fatal(err)
		}
		model = append(model, files)
	}
	want, err := modelTree(flattenModel(model))
	if err != nil {
		t.Fatal(err)
	}
	got, err := readTree(root.Name())
	if err != nil {
		t.Fatal(err)
	}
	if err := diffTrees(want, got, "model", "unpacked"); err != nil {
		t.Error(err)
	}
	// Spot checks that the model itself applies the rules.
	for _, n := range []string{"a/x", "a/sub/z", "b/gone", "c/in", "dir-to-file/q"} {
		if _, ok := want[n]; ok {
			t.Errorf("%s is visible; it is hidden by an upper layer", n)
		}
	}
	for n, typ := range map[string]byte{"a/new": 'f', "a/sub/w": 'f', "b/keep": 'f', "c/back": 'f', "file-to-dir": 'd', "dir-to-file": 'f', "top": 'f', "hard": 'f'} {
		if want[n].typ != typ {
			t.Errorf("%s: %v, want type %c", n, want[n], typ)
		}
	}
	if want["b/keep"].perm != 0o600 || want["hard"].digest != want["top"].digest {
		t.Errorf("b/keep %v, hard %v, top %v", want["b/keep"], want["hard"], want["top"])
	}
}
