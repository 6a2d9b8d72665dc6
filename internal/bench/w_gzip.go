package main

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	kgzip "github.com/klauspost/compress/gzip"
)

// wGzip is the plain gzip workload (issue 14), run only when named in
// -only: a ~250 MB plain gzip layer (archive/tar + compress/gzip, as
// docker writes layers) of GOROOT four times over, with a small file
// first. Each copy's regular files end with a line naming the copy, so no
// file of the layer has the contents of another: a whole fetch downloads
// and inflates every byte, as of a layer of 66,813 distinct files. It
// measures one file early in the layer (early stop) against downloading
// the layer whole; the same file from the cached seek index;
// the whole layer streamed in parallel segments (sg-ls, which also
// builds the index) against a single-stream download; the whole layer
// fetched from the cached index (sg-fetch IMAGE BLOB /); and the blob
// inflated alone, the floor of any read that streams it.
const wGzip = "WG"

// wGzipVersion is part of the layer's cache key.
const wGzipVersion = "3"

// wGzipCopies is how many times GOROOT goes into the layer.
const wGzipCopies = 4

// wGzipEarly is the file at the start of the layer; wGzipLate one near
// its end.
const (
	wGzipEarly = "etc/go-version"
	wGzipLate  = "copy4/go/VERSION"
)

// gzipLayer builds the workload's layer into cacheDir, or loads it.
func gzipLayer(cacheDir, goroot string) (*Layer, error) {
	key := sha256.Sum256([]byte(fmt.Sprintf("%s\n%d\n%s\n%s", wGzipVersion, wGzipCopies, runtime.Version(), goroot)))
	dir := filepath.Join(cacheDir, "gzip-"+hex.EncodeToString(key[:6]))
	meta := filepath.Join(dir, "layer.json")
	if b, err := os.ReadFile(meta); err == nil {
		var l Layer
		if err := json.Unmarshal(b, &l); err == nil {
			l.blobPath = filepath.Join(dir, "blob")
			if fi, err := os.Stat(l.blobPath); err == nil && fi.Size() == l.Size {
				return &l, nil
			}
		}
	}
	say("building the %s layer: GOROOT %d times, plain gzip (once; cached in %s)", wGzip, wGzipCopies, dir)
	start := time.Now()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(dir, "blob-")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	zh, th := sha256.New(), sha256.New()
	zcount := &countWriter{w: io.MultiWriter(f, zh)}
	zw := gzip.NewWriter(zcount)
	tcount := &countWriter{w: io.MultiWriter(zw, th)}
	tw := tar.NewWriter(tcount)
	add := func(name, src string, fi fs.FileInfo, suffix []byte) error {
		h, err := tar.FileInfoHeader(fi, "")
		if err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			h.Size += int64(len(suffix))
		}
		h.Name, h.ModTime, h.Uname, h.Gname, h.Uid, h.Gid = name, modTime, "root", "root", 0, 0
		if fi.Mode()&fs.ModeSymlink != 0 {
			if h.Linkname, err = os.Readlink(src); err != nil {
				return err
			}
		}
		if fi.IsDir() {
			h.Name += "/"
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return nil
		}
		r, err := os.Open(src)
		if err != nil {
			return err
		}
		defer r.Close()
		if _, err = io.Copy(tw, r); err != nil {
			return err
		}
		_, err = tw.Write(suffix)
		return err
	}
	version := filepath.Join(goroot, "VERSION")
	fi, err := os.Stat(version)
	if err != nil {
		return nil, err
	}
	if err := add(wGzipEarly, version, fi, nil); err != nil {
		return nil, err
	}
	for i := 1; i <= wGzipCopies; i++ {
		err := filepath.WalkDir(goroot, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(goroot, p)
			fi, err := d.Info()
			if err != nil {
				return err
			}
			return add(filepath.ToSlash(filepath.Join(fmt.Sprintf("copy%d/go", i), rel)), p, fi, fmt.Appendf(nil, "\n# copy %d\n", i))
		})
		if err != nil {
			return nil, fmt.Errorf("adding GOROOT: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	l := &Layer{
		Name:   "wgzip",
		About:  fmt.Sprintf("GOROOT %d times as a plain gzip layer, each copy's files distinct, %s first", wGzipCopies, wGzipEarly),
		Digest: "sha256:" + hex.EncodeToString(zh.Sum(nil)), Size: zcount.n,
		DiffID: "sha256:" + hex.EncodeToString(th.Sum(nil)), UncompressedSize: tcount.n,
		BuildSeconds: time.Since(start).Seconds(),
	}
	l.blobPath = filepath.Join(dir, "blob")
	if err := os.Rename(f.Name(), l.blobPath); err != nil {
		return nil, err
	}
	b, err := json.Marshal(l)
	if err != nil {
		return nil, err
	}
	return l, os.WriteFile(meta, b, 0o644)
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	k, err := c.w.Write(p)
	c.n += int64(k)
	return k, err
}

// gzipCase is one measured command of the workload.
type gzipCase struct {
	name string
	wall time.Duration
	c    counts
	rss  int64
}

// runGzip runs the workload at each RTT and prints its table.
func (b *bench) runGzip(ctx context.Context) error {
	goroot, err := exec.CommandContext(ctx, "go", "env", "GOROOT").Output()
	if err != nil {
		return err
	}
	l, err := gzipLayer(b.cfg.cacheDir, strings.TrimSpace(string(goroot)))
	if err != nil {
		return fmt.Errorf("building the %s layer: %w", wGzip, err)
	}
	say("pushing layer %s (%s)", l.Name, mib(l.Size))
	if err := l.push(ctx, b.reg.Host); err != nil {
		return err
	}
	ref := b.proxyRef(l)
	fmt.Printf("\n### %s: a plain gzip layer of %s (%s uncompressed): %s\n\n", wGzip, mib(l.Size), mib(l.UncompressedSize), l.About)
	fmt.Println("| RTT | case | wall | blob bytes | blob requests | peak RSS |")
	fmt.Println("|---|---|---|---|---|---|")
	for _, rtt := range b.cfg.rtts {
		b.proxy.set(rtt, b.cfg.bw, b.cfg.total)
		cache := filepath.Join(b.work, fmt.Sprintf("wgzip-cache-%s", rtt))
		out := func(n string) string { return filepath.Join(b.work, fmt.Sprintf("wgzip-%s-%s", rtt, n)) }
		var cases []gzipCase
		run := func(name string, fn func() (int64, error)) error {
			before := b.proxy.counts()
			start := time.Now()
			rss, err := fn()
			if err != nil {
				return fmt.Errorf("%s, RTT %s, %s: %w", wGzip, rtt, name, err)
			}
			c := b.proxy.counts()
			c.Reqs, c.BlobReqs, c.BlobBytes = c.Reqs-before.Reqs, c.BlobReqs-before.BlobReqs, c.BlobBytes-before.BlobBytes
			cases = append(cases, gzipCase{name: name, wall: time.Since(start), c: c, rss: rss})
			return nil
		}
		steps := []struct {
			name string
			fn   func() (int64, error)
		}{
			{"single-stream download of the blob (one GET)", func() (int64, error) { return -1, b.download(ctx, l) }},
			{"sg-fetch, early file, no index (early stop)", func() (int64, error) {
				return b.tool(ctx, "sg-fetch", "--allow-full-layers", "--no-cache", "-o", out("early"), ref, "0", wGzipEarly)
			}},
			{"sg-fetch BLOB /, whole layer streamed once, no index", func() (int64, error) {
				dir, err := os.MkdirTemp(b.cfg.outBase, "stargz-get-bench-wgzip-")
				if err != nil {
					return 0, err
				}
				defer os.RemoveAll(dir)
				return b.tool(ctx, "sg-fetch", "--allow-full-layers", "--no-cache", "-o", filepath.Join(dir, "out"), ref, "0", "/")
			}},
			{"sg-ls, whole layer streamed, builds the index", func() (int64, error) {
				return b.tool(ctx, "sg-ls", "--allow-full-layers", "--cache-dir", cache, ref, "0")
			}},
			{"sg-ls again, from the cached index", func() (int64, error) {
				return b.tool(ctx, "sg-ls", "--cache-dir", cache, ref, "0")
			}},
			{"sg-fetch, early file, from the cached index", func() (int64, error) {
				return b.tool(ctx, "sg-fetch", "--cache-dir", cache, "-o", out("indexed"), ref, "0", wGzipEarly)
			}},
			{"sg-fetch, late file, from the cached index", func() (int64, error) {
				return b.tool(ctx, "sg-fetch", "--cache-dir", cache, "-o", out("late"), ref, "0", wGzipLate)
			}},
			{"sg-fetch BLOB /, whole layer from the cached index", func() (int64, error) {
				// Under -out (tmpfs), as the other whole-layer workloads,
				// so that the disk is not what is measured.
				dir, err := os.MkdirTemp(b.cfg.outBase, "stargz-get-bench-wgzip-")
				if err != nil {
					return 0, err
				}
				defer os.RemoveAll(dir)
				return b.tool(ctx, "sg-fetch", "--cache-dir", cache, "-o", filepath.Join(dir, "out"), ref, "0", "/")
			}},
			{gzipFloor, func() (int64, error) { return -1, inflateAlone(l.blobPath) }},
		}
		for _, s := range steps {
			if err := run(s.name, s.fn); err != nil {
				return err
			}
		}
		for _, c := range cases {
			rss := "-"
			if c.rss > 0 {
				rss = mib(c.rss)
			}
			fmt.Printf("| %s | %s | %.2f s | %s | %d | %s |\n", rtt, c.name, c.wall.Seconds(), mb(c.c.BlobBytes), c.c.BlobReqs, rss)
		}
		single, streamed, ls, whole, floor := cases[0], cases[2], cases[3], cases[7], cases[8]
		fmt.Printf("\nRTT %s: early stop moved %.3fx of the layer in %.2fx the time of a whole download; whole layer streamed %.2fx faster than one stream when listed, %.2fx when fetched (target >= 3.5x); fetched whole from the cached index (inflated from several checkpoints at once) %.2fx faster\n\n",
			rtt, float64(cases[1].c.BlobBytes)/float64(l.Size), cases[1].wall.Seconds()/single.wall.Seconds(), single.wall.Seconds()/ls.wall.Seconds(), single.wall.Seconds()/streamed.wall.Seconds(), single.wall.Seconds()/whole.wall.Seconds())
		fmt.Printf("Inflating the blob alone on one core takes %.2f s (%.2fx the one-stream download): no read that streams the layer once can take less, and 3.5x needs %.2f s.\n\n",
			floor.wall.Seconds(), single.wall.Seconds()/floor.wall.Seconds(), single.wall.Seconds()/3.5)
	}
	return nil
}

// gzipFloor names WG's row that inflates the blob with nothing else: no
// network, no tar, no hashing, no index; it is measured in the same run.
const gzipFloor = "floor: inflating the blob alone, one core (klauspost, from local disk)"

// inflateAlone inflates the gzip blob at path to nowhere with
// klauspost/compress, the inflater sg-ls and sg-fetch use; a gzip stream
// cannot be inflated on more than one core.
func inflateAlone(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	zr, err := kgzip.NewReader(bufio.NewReaderSize(f, 1<<20))
	if err != nil {
		return err
	}
	_, err = io.CopyBuffer(io.Discard, zr, make([]byte, 256<<10))
	return err
}

// download GETs the whole blob through the proxy on one connection, as
// docker and crane do.
func (b *bench) download(ctx context.Context, l *Layer) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+b.proxy.Host+"/v2/"+l.repo()+"/blobs/"+l.Digest, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET blob: %s", resp.Status)
	}
	h := sha256.New()
	if _, err := io.Copy(h, resp.Body); err != nil {
		return err
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != l.Digest {
		return fmt.Errorf("blob digest %s, want %s", got, l.Digest)
	}
	return nil
}

// tool runs one of the built tools (output discarded) and returns its
// peak RSS.
func (b *bench) tool(ctx context.Context, name string, args ...string) (int64, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(b.bin, name), args...)
	cmd.Env = childEnv()
	var stderr strings.Builder
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("%s: %w: %s", name, err, tail(stderr.String(), 500))
	}
	return maxRSS(cmd.ProcessState), nil
}
