package main

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

// The chunk cache (issue 15):
//
//	W7-tag  two tags of one image, the second with every tenth file of
//	        GOROOT/src changed (a line appended): sg-fetch IMAGE:v2 / with
//	        an empty cache (a fresh fetch) against the same after
//	        IMAGE:v1 / was fetched with the cache (not measured): bytes and
//	        time.
//
// Every measured child process gets an empty cache directory of its own
// (childEnv, see freshChildCache), so that no workload reads chunks an
// earlier run kept: W1-W6 measure fresh fetches with the cache on, as
// users run them by default, and W3 has a --no-cache row beside them for
// what keeping the chunks costs.
const wTag = "W7-tag"

// tagChangedEvery is how W7's second tag changes files: every
// tagChangedEvery-th regular file, in lexical order.
const tagChangedEvery = 10

// modeNoCache names W3's row without the cache.
const modeNoCache = "sg-fetch --no-cache"

// tagRepo is the repository of W7's image.
const tagRepo = "bench/tags"

// tagSpecs are W7's two layers.
var tagSpecs = []layerSpec{
	{name: "tags-v1", about: "GOROOT/src under usr/local/go/src", trees: []tree{{"src", "usr/local/go/src"}}},
	{name: "tags-v2", about: "the same, every tenth file with a line appended", trees: []tree{{"src", "usr/local/go/src"}}},
}

// tagGroup builds them; its version is part of the cache key (bump it
// when buildTagLayer changes).
var tagGroup = &group{
	name:       "tags",
	specs:      tagSpecs,
	plan:       func(string) ([]layerSpec, error) { return tagSpecs, nil },
	version:    "1",
	buildLayer: buildTagLayer,
}

// buildTagLayer builds a W7 layer: v1 as buildLayer does, v2 from the
// same tree with every tagChangedEvery-th regular file changed.
func buildTagLayer(dir, goroot string, sp layerSpec) (*Layer, error) {
	if sp.name != "tags-v2" {
		return buildLayer(dir, goroot, sp)
	}
	return buildLayerWith(dir, sp, func(tf *os.File) (*tarWriter, int64, error) {
		tw := &tarWriter{tw: tar.NewWriter(tf), seen: map[string]bool{}}
		src := filepath.Join(goroot, "src")
		n := 0
		err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, err := filepath.Rel(src, p)
			if err != nil {
				return err
			}
			name := "usr/local/go/src"
			if rel != "." {
				name += "/" + filepath.ToSlash(rel)
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			switch {
			case d.IsDir():
				return tw.addDir(name)
			case !fi.Mode().IsRegular():
				return nil
			}
			if n++; n%tagChangedEvery != 0 {
				return tw.addFile(name, p, fi)
			}
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return tw.addData(name, normMode(fi), append(data, "\n// changed in tag v2\n"...))
		})
		if err != nil {
			return nil, 0, err
		}
		if err := tw.tw.Close(); err != nil {
			return nil, 0, fmt.Errorf("finishing tar: %w", err)
		}
		size, err := tf.Seek(0, io.SeekCurrent)
		return tw, size, err
	})
}

// addData adds a regular file holding data.
func (t *tarWriter) addData(name string, mode int64, data []byte) error {
	if err := t.addDir(path.Dir(name)); err != nil {
		return err
	}
	h := t.header(name, tar.TypeReg, mode)
	h.Size = int64(len(data))
	if err := t.tw.WriteHeader(h); err != nil {
		return fmt.Errorf("writing tar entry %s: %w", name, err)
	}
	if _, err := t.tw.Write(data); err != nil {
		return fmt.Errorf("writing tar entry %s: %w", name, err)
	}
	sum := sha256.Sum256(data)
	t.seen[name] = true
	t.files = append(t.files, File{Name: name, Type: "reg", Size: h.Size, Digest: "sha256:" + hex.EncodeToString(sum[:]), Mode: mode})
	return nil
}

// tagRow is one row of the W7 table.
type tagRow struct {
	mode    string
	rtt     time.Duration
	samples []sample
}

// runTag measures W7 when the flags ask for it.
func (b *bench) runTag(ctx context.Context) ([]*tagRow, error) {
	if !b.wants(wTag) || b.tags == nil {
		return nil, nil
	}
	v1, v2 := b.tags.Layer("tags-v1"), b.tags.Layer("tags-v2")
	if err := pushTagged(ctx, b.reg.Host, tagRepo, "v1", []*Layer{v1}); err != nil {
		return nil, err
	}
	if err := pushTagged(ctx, b.reg.Host, tagRepo, "v2", []*Layer{v2}); err != nil {
		return nil, err
	}
	refV1, refV2 := b.proxy.Host+"/"+tagRepo+":v1", b.proxy.Host+"/"+tagRepo+":v2"
	var rows []*tagRow
	for _, rtt := range b.cfg.rtts {
		fresh := &tagRow{mode: "v2, empty cache", rtt: rtt}
		warm := &tagRow{mode: "v2 after v1, same cache", rtt: rtt}
		for i := 0; i < b.cfg.runs; i++ {
			s, err := b.tagFetch(ctx, rtt, refV2, v2, "")
			if err != nil {
				return nil, fmt.Errorf("%s, RTT %s, fresh: %w", wTag, rtt, err)
			}
			fresh.samples = append(fresh.samples, s)
			if s, err = b.tagFetch(ctx, rtt, refV2, v2, refV1); err != nil {
				return nil, fmt.Errorf("%s, RTT %s, after v1: %w", wTag, rtt, err)
			}
			warm.samples = append(warm.samples, s)
		}
		rows = append(rows, fresh, warm)
		say("%s at RTT %s done", wTag, rtt)
	}
	return rows, nil
}

// tagFetch fetches ref whole with a cache of its own, after filling the
// cache by fetching first (not measured) when first is set, and checks
// the files.
func (b *bench) tagFetch(ctx context.Context, rtt time.Duration, ref string, l *Layer, first string) (sample, error) {
	cache, err := os.MkdirTemp(b.work, "tag-cache-")
	if err != nil {
		return sample{}, err
	}
	defer os.RemoveAll(cache)
	out, err := os.MkdirTemp(b.cfg.outBase, "stargz-get-bench-out-")
	if err != nil {
		return sample{}, err
	}
	defer os.RemoveAll(out)
	sgfetch := filepath.Join(b.bin, "sg-fetch")
	if first != "" {
		if _, _, err := b.measured(ctx, rtt, io.Discard, sgfetch, "--progress", "never", "--cache-dir", cache, "-o", filepath.Join(out, "first"), first, "/"); err != nil {
			return sample{}, err
		}
		if err := os.RemoveAll(filepath.Join(out, "first")); err != nil {
			return sample{}, err
		}
	}
	// The earlier fetch's cache writes on disk, as they are when the next
	// tag comes minutes later: otherwise the measured run's renames wait
	// for their writeback (ext4 orders metadata after data).
	syscall.Sync()
	s, _, err := b.measured(ctx, rtt, io.Discard, sgfetch, "--progress", "never", "--cache-dir", cache, "-o", filepath.Join(out, "v2"), ref, "/")
	if err != nil {
		return s, err
	}
	if b.cfg.verbose {
		say("%s rtt=%s primed=%v: %s (CPU %s, other processes %.2f cores), %d blob bytes, %d blob requests (registry %s to headers in all), RSS %s",
			wTag, rtt, first != "", s.wall.Round(time.Millisecond), s.cpu.Round(time.Millisecond), s.noise, s.c.BlobBytes, s.c.BlobReqs, s.c.BlobServer.Round(time.Millisecond), mib(s.rss))
	}
	return s, verifyFiles(filepath.Join(out, "v2"), l.Regular())
}

// reportTag prints the W7 table.
func (b *bench) reportTag(w io.Writer, rows []*tagRow) {
	if len(rows) == 0 {
		return
	}
	fmt.Fprintln(w, "\nissue 15: a second tag through the chunk cache (W7: GOROOT/src, 10% of files changed)")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "RTT\tmode\twall\tCPU\tpeak RSS\tblob bytes\tblob req\tcompared\t")
	var verdicts []string
	for i, r := range rows {
		m := median(r.samples)
		cmp := "-"
		if i%2 == 1 {
			f := median(rows[i-1].samples)
			bytesRatio := float64(m.c.BlobBytes) / float64(f.c.BlobBytes)
			wallRatio := float64(m.wall) / float64(f.wall)
			cmp = fmt.Sprintf("%.3fx the bytes, %.2fx the wall of a fresh fetch", bytesRatio, wallRatio)
			verdicts = append(verdicts, fmt.Sprintf("%s RTT %s: %s (10%% of files changed)", wTag, r.rtt, cmp))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.2fs\t%s\t%s\t%d\t%s\t\n", r.rtt, r.mode, wall(r.samples), m.cpu.Seconds(), mib(m.rss), mb(m.c.BlobBytes), m.c.BlobReqs, cmp)
	}
	tw.Flush()
	fmt.Fprintf(w, "\n%s\n", strings.Join(verdicts, "\n"))
}

// childCaches holds the cache directory each child process gets (see
// freshChildCache); run removes it at the end.
var childCaches = filepath.Join(os.TempDir(), fmt.Sprintf("stargz-get-bench-sgcache-%d", os.Getpid()))

// freshChildCache empties the one cache directory of the child processes
// and returns it: each measured sg-fetch starts with an empty cache, as a
// first fetch does, and keeps what it fetched there until the next one.
func freshChildCache() string {
	_ = os.RemoveAll(childCaches)
	return childCaches
}
