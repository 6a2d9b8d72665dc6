package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/stargz-get/stargz-get/internal/testenv"
)

// Workload names.
const (
	wOneLarge   = "W1"
	wSmallFiles = "W2"
	wWhole      = "W3"
	wWholeSmall = "W3-small"
	// wWholeMany is the many-files layer whole; run only when named in
	// -only, to show how peak RSS grows with the number of entries.
	wWholeMany = "W3-many"
	// wFlatten is the W4 image flattened and fetched whole (issue 6).
	wFlatten = "W4"
)

func knownWorkload(w string) bool {
	switch w {
	case wOneLarge, wSmallFiles, wWhole, wWholeSmall, wWholeMany, wFlatten, wArtifact, wStdout, wDiff, wOneLargeZstd, wSmallFilesZstd, wGzip, wTag:
		return true
	}
	return false
}

// w4Repo is the repository of the W4 image.
const w4Repo = "bench/w4"

// w2Files and w2MaxSize define W2: that many regular files of the many
// layer, each smaller than w2MaxSize, picked evenly spread in layer order.
const (
	w2Files   = 100
	w2MaxSize = 64 << 10
)

// workload is one thing to fetch.
type workload struct {
	name  string
	what  string
	layer *Layer // the layer of a single-layer workload (W1-W3)
	// For W4: the image's repository and layers, base first, and what is
	// known about its flattened view.
	repo   string
	layers []*Layer
	flat   *flatInfo
	// entriesPath holds the sg-ls lines to feed sg-fetch, naming the
	// image through the proxy.
	entriesPath string
	nEntries    int
	// check are the regular files whose sha256 every run must reproduce.
	check []File
	// needed is, for partial fetches, the compressed bytes of the gzip
	// members holding the wanted files plus footer and TOC; 0 otherwise.
	needed  int64
	members int
	// mergeExtra is, for W2, the unwanted bytes gap merging alone would
	// download to bring the requests down to a quarter of the files.
	mergeExtra int64
}

// imageLayers are the layers of the workload's image, base first.
func (w *workload) imageLayers() []*Layer {
	if w.layers != nil {
		return w.layers
	}
	return []*Layer{w.layer}
}

// full is what the baseline downloads: every layer blob of the image.
func (w *workload) full() int64 {
	var n int64
	for _, l := range w.imageLayers() {
		n += l.Size
	}
	return n
}

// mode is one way of running a workload.
type mode struct {
	name     string
	jobs     int // sg-fetch -j; 0 means its default
	baseline bool
	// args runs sg-fetch IMAGE BLOB PATH... with the workload's files
	// as arguments instead of entries on stdin (W2 only).
	args bool
	// noCache runs sg-fetch --no-cache (W3 only, see w_cache.go).
	noCache bool
	// floor downloads the layer's bytes only (W3 only, see floor.go).
	floor bool
}

// modeArgs names the args mode.
const modeArgs = "sg-fetch IMAGE 0 PATH..."

// sample is one run's measurement.
type sample struct {
	wall time.Duration
	c    counts
	rss  int64 // bytes; -1 when unknown
	cpu  time.Duration
	// noise is how many cores other processes kept busy on average
	// during the run (see noise.go).
	noise float64
	// env is the CPU time the registry and the proxy (this process) spent
	// during the run, on the same cores as the measured process.
	env time.Duration
}

// row collects the samples of one workload, RTT and mode.
type row struct {
	w       *workload
	rtt     time.Duration
	m       mode
	samples []sample
}

// bench holds what the runs share.
type bench struct {
	cfg     *config
	work    string // temp dir of this run
	bin     string // sg-fetch, sg-ls
	self    string // this binary, for the baseline subcommand
	set     *Set   // the layers of W1-W3; nil when none of them runs
	w4      *Set   // the layers of W4; nil when it does not run
	zst     *Set   // the zstd:chunked layers of W1-zstd, W2-zstd (w_zstd.go)
	tags    *Set   // the two tags of W7 (w_cache.go)
	reg     *testenv.Registry
	proxy   *shaper
	lsCost  map[string]counts // sg-ls through the proxy, per layer
	floor   int64             // RSS floor of a measured process
	regPID  int               // the registry's process, for noise.go
	load    []string          // load average at start and end
	retried int               // runs repeated because of noise
	timings []string
}

func run(ctx context.Context, args []string) error {
	cfg, err := parseFlags(args)
	if err != nil {
		return err
	}
	b := &bench{cfg: cfg, lsCost: map[string]counts{}}
	total := time.Now()

	work, err := os.MkdirTemp("", "stargz-get-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	defer os.RemoveAll(childCaches)
	b.work = work
	if b.self, err = os.Executable(); err != nil {
		return err
	}
	if b.floor, err = b.rssFloor(ctx); err != nil {
		return err
	}

	t := time.Now()
	say("building sg-fetch and sg-ls")
	if b.bin, err = buildTools(ctx, work); err != nil {
		return err
	}
	b.timing("build tools", t)

	t = time.Now()
	say("building the benchmark layers (cached in %s after the first run)", cfg.cacheDir)
	cached := true
	for _, g := range []struct {
		set   **Set
		group *group
		names []string
	}{
		{&b.set, mainGroup, []string{wOneLarge, wSmallFiles, wWhole, wWholeSmall, wWholeMany, wStdout}},
		{&b.w4, w4Group, []string{wFlatten, wDiff}},
		{&b.zst, zstdGroup, []string{wOneLargeZstd, wSmallFilesZstd}},
		{&b.tags, tagGroup, []string{wTag}},
	} {
		if !slices.ContainsFunc(g.names, b.wants) {
			continue
		}
		if *g.set, err = buildLayers(cfg.cacheDir, g.group, say); err != nil {
			return err
		}
		cached = cached && (*g.set).cached
		for _, l := range (*g.set).Layers {
			if _, err := l.readTOC(ctx); err != nil {
				return err
			}
		}
	}
	if cached {
		b.timing("layers (cached)", t)
	} else {
		b.timing("build layers", t)
	}

	t = time.Now()
	say("starting the distribution registry %s", testenv.RegistryVersion)
	if b.reg, err = testenv.StartRegistry(testenv.RegistryOptions{}); err != nil {
		return err
	}
	defer b.reg.Close()
	b.regPID = childNamed("registry")
	if b.proxy, err = startShaper(b.reg.Host); err != nil {
		return err
	}
	defer b.proxy.Close()
	if b.wants(wArtifact) {
		if err := b.runArtifact(ctx); err != nil {
			return err
		}
	}
	workloads := b.selected()
	if len(workloads) == 0 && !b.wants(wGzip) { // W7-tag alone (w_cache.go), or nothing
		tagRows, err := b.runTag(ctx)
		b.reportTag(os.Stdout, tagRows)
		return err
	}
	pushed := map[*Layer]bool{}
	for _, w := range workloads {
		switch {
		case w.layers != nil && !pushed[w.layers[0]]:
			say("pushing image %s (%d layers, %s)", w.repo, len(w.layers), mib(w.full()))
			if err := pushImage(ctx, b.reg.Host, w.repo, w.layers); err != nil {
				return err
			}
			for _, l := range w.layers {
				pushed[l] = true
			}
		case w.layers == nil && !pushed[w.layer]:
			say("pushing layer %s (%s)", w.layer.Name, mib(w.layer.Size))
			if err := w.layer.push(ctx, b.reg.Host); err != nil {
				return err
			}
			pushed[w.layer] = true
		}
	}
	b.timing("start registry + push", t)
	if b.wants(wGzip) {
		if err := b.runGzip(ctx); err != nil {
			return err
		}
		if len(workloads) == 0 {
			tagRows, err := b.runTag(ctx)
			b.reportTag(os.Stdout, tagRows)
			return err
		}
	}

	t = time.Now()
	for _, w := range workloads {
		if err := b.prepare(ctx, w); err != nil {
			return fmt.Errorf("preparing %s: %w", w.name, err)
		}
	}
	for _, w := range workloads {
		for i, l := range w.imageLayers() {
			if _, ok := b.lsCost[l.Name]; ok {
				continue
			}
			ref, blob := b.proxyRef(l), "0"
			if w.layers != nil {
				ref, blob = b.proxyImageRef(w.repo), fmt.Sprint(i)
			}
			c, err := b.lsCost1(ctx, ref, blob)
			if err != nil {
				return err
			}
			b.lsCost[l.Name] = c
		}
		if w.flat != nil {
			c, err := b.lsCost1(ctx, "--flatten", b.proxyImageRef(w.repo))
			if err != nil {
				return err
			}
			w.flat.lsFlat = c
		}
	}
	b.timing("prepare entries", t)
	if cfg.serve {
		return b.serveOnly(ctx, workloads)
	}

	modes := []mode{{name: "sg-fetch"}, {name: "sg-fetch -j 1", jobs: 1}}
	for _, j := range cfg.extraJobs {
		modes = append(modes, mode{name: fmt.Sprintf("sg-fetch -j %d", j), jobs: j})
	}
	modes = append(modes, mode{name: modeNoCache, noCache: true}, mode{name: modeArgs, args: true}, mode{name: modeFloor, floor: true}, mode{name: "baseline", baseline: true})

	t = time.Now()
	b.load = append(b.load, loadAvg())
	var rows []*row
	for _, rtt := range cfg.rtts {
		for _, w := range workloads {
			var rs []*row
			for _, m := range modes {
				if m.args && w.name != wSmallFiles || (m.noCache || m.floor) && w.name != wWhole {
					continue
				}
				rs = append(rs, &row{w: w, rtt: rtt, m: m})
			}
			// Interleave modes so that drift hits them alike.
			for i := 0; i < cfg.runs; i++ {
				for _, r := range rs {
					s, err := b.runQuiet(ctx, r)
					if err != nil {
						return fmt.Errorf("%s, RTT %s, %s: %w", w.name, rtt, r.m.name, err)
					}
					r.samples = append(r.samples, s)
					if cfg.verbose {
						say("%s rtt=%s %s run %d: %s (CPU %s, other processes %.2f cores), %d blob bytes, %d blob requests (registry %s to headers in all), %d requests, RSS %s",
							w.name, rtt, r.m.name, i+1, s.wall.Round(time.Millisecond), s.cpu.Round(time.Millisecond), s.noise, s.c.BlobBytes, s.c.BlobReqs,
							s.c.BlobServer.Round(time.Millisecond), s.c.Reqs, mib(s.rss))
					}
				}
			}
			rows = append(rows, rs...)
			say("%s at RTT %s done", w.name, rtt)
		}
	}
	beyond, err := b.runBeyond(ctx)
	if err != nil {
		return err
	}
	tagRows, err := b.runTag(ctx)
	if err != nil {
		return err
	}
	b.load = append(b.load, loadAvg())
	b.timing("runs", t)
	b.timing("total", total)
	b.report(os.Stdout, workloads, rows)
	b.reportBeyond(os.Stdout, beyond)
	b.reportTag(os.Stdout, tagRows)
	return nil
}

// serveOnly prints how to reach the registry, the proxy and the entry
// files, and waits for ctx to end, for profiling the tools by hand.
func (b *bench) serveOnly(ctx context.Context, workloads []*workload) error {
	rtt := time.Duration(0)
	if len(b.cfg.rtts) > 0 {
		rtt = b.cfg.rtts[0]
	}
	b.proxy.set(rtt, b.cfg.bw, b.cfg.total)
	fmt.Printf("registry: %s\nproxy:    %s (RTT %s, %s per connection, %s in all)\nbin:      %s\n", b.reg.Host, b.proxy.Host, rtt, b.cfg.bwText, b.cfg.totalText, b.bin)
	for _, w := range workloads {
		if w.layers != nil {
			fmt.Printf("%-9s sg-fetch -o DIR %s /   (or < %s; %d entries; baseline: bench baseline -image %s DIR)\n", w.name, b.proxyImageRef(w.repo), w.entriesPath, w.nEntries, b.proxyImageRef(w.repo))
			continue
		}
		fmt.Printf("%-9s sg-fetch -o DIR < %s   (%d entries; baseline ref %s/%s@%s)\n", w.name, w.entriesPath, w.nEntries, b.proxy.Host, w.layer.repo(), w.layer.Digest)
	}
	fmt.Println("waiting for Ctrl-C")
	<-ctx.Done()
	return nil
}

func (b *bench) timing(what string, since time.Time) {
	b.timings = append(b.timings, fmt.Sprintf("%s %.1fs", what, time.Since(since).Seconds()))
}

func say(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

// buildTools builds sg-fetch and sg-ls from the module this is run in.
func buildTools(ctx context.Context, work string) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(out)) == "" || strings.TrimSpace(string(out)) == os.DevNull {
		return "", fmt.Errorf("finding the module root (run from the repository): %v", err)
	}
	bin := filepath.Join(work, "bin")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin+string(filepath.Separator), "./cmd/sg-fetch", "./cmd/sg-ls")
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(out)))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building the tools: %w", err)
	}
	return bin, nil
}

// wants reports whether the flags ask for workload w: the ones named in
// -only, or all but W3-many.
func (b *bench) wants(w string) bool {
	return (b.cfg.only == nil && w != wWholeMany && w != wGzip) || b.cfg.only[w]
}

// selected returns the workloads the flags ask for, without entries yet.
func (b *bench) selected() []*workload {
	var all []*workload
	if b.set != nil {
		big, many, small := b.set.Layer("big"), b.set.Layer("many"), b.set.Layer("small")
		all = append(all,
			&workload{name: wOneLarge, layer: big},
			&workload{name: wSmallFiles, layer: many},
			&workload{name: wWhole, layer: big},
			&workload{name: wWholeSmall, layer: small},
			&workload{name: wWholeMany, layer: many},
		)
	}
	if b.w4 != nil {
		all = append(all, &workload{name: wFlatten, repo: w4Repo, layers: b.w4.Layers, flat: &flatInfo{}})
	}
	all = append(all, b.zstdWorkloads()...)
	var ws []*workload
	for _, w := range all {
		if b.wants(w.name) {
			ws = append(ws, w)
		}
	}
	return ws
}

func (b *bench) registryRef(l *Layer) string { return b.reg.Host + "/" + l.repo() + ":v1" }
func (b *bench) proxyRef(l *Layer) string    { return b.proxy.Host + "/" + l.repo() + ":v1" }

func (b *bench) registryImageRef(repo string) string { return b.reg.Host + "/" + repo + ":v1" }
func (b *bench) proxyImageRef(repo string) string    { return b.proxy.Host + "/" + repo + ":v1" }

// prepare lists the workload's layer with sg-ls straight from the registry
// (untimed), picks the wanted entries and points them at the proxy.
func (b *bench) prepare(ctx context.Context, w *workload) error {
	if w.flat != nil {
		return b.prepareFlat(ctx, w)
	}
	l := w.layer
	out, err := b.sgls(ctx, b.registryRef(l), "0")
	if err != nil {
		return err
	}
	var want map[string]bool // nil: every entry
	regs := l.Regular()
	switch baseWorkload(w.name) {
	case wOneLarge:
		big := regs[0]
		for _, f := range regs {
			if f.Size > big.Size {
				big = f
			}
		}
		w.check = []File{big}
		w.what = fmt.Sprintf("one file, %s (%s), of layer %s", big.Name, mib(big.Size), l.Name)
	case wSmallFiles:
		var cand []File
		for _, f := range regs {
			if f.Size > 0 && f.Size < w2MaxSize {
				cand = append(cand, f)
			}
		}
		if len(cand) < w2Files {
			return fmt.Errorf("layer %s has only %d files under %d bytes", l.Name, len(cand), w2MaxSize)
		}
		// Evenly spread; a file whose contents were already picked (the
		// layer holds GOROOT/src twice) is replaced by the next one, so
		// that the 100 files are 100 distinct downloads.
		var sum int64
		picked := map[string]bool{}
		for i := 0; i < w2Files; i++ {
			j := (2*i + 1) * len(cand) / (2 * w2Files)
			for j < len(cand)-1 && picked[cand[j].Digest] {
				j++
			}
			f := cand[j]
			picked[f.Digest] = true
			w.check = append(w.check, f)
			sum += f.Size
		}
		if len(picked) != w2Files {
			return fmt.Errorf("layer %s: could not pick %d files with distinct contents", l.Name, w2Files)
		}
		w.what = fmt.Sprintf("%d files under %d KiB (spread evenly, about one in %d; %s in all) of the %d regular files of layer %s",
			w2Files, w2MaxSize>>10, len(cand)/w2Files, mib(sum), len(regs), l.Name)
	default:
		w.check = regs
		w.what = fmt.Sprintf("the whole layer %s: %d entries, %d regular files, %s", l.Name, len(l.Files), len(regs), mib(l.UncompressedSize))
	}
	if base := baseWorkload(w.name); base == wOneLarge || base == wSmallFiles {
		want = map[string]bool{}
		var names []string
		for _, f := range w.check {
			want[f.Name] = true
			names = append(names, f.Name)
		}
		if w.needed, w.members, err = l.needed(ctx, names); err != nil {
			return err
		}
		if base == wSmallFiles {
			if w.mergeExtra, err = l.mergeCost(ctx, names, int(targetW2ReqShare*float64(len(names)))); err != nil {
				return err
			}
		}
	}
	if _, err := b.writeEntries(w, out, b.proxyRef(l), want); err != nil {
		return err
	}
	if want != nil && w.nEntries != len(want) {
		return fmt.Errorf("sg-ls listed %d of the %d wanted files", w.nEntries, len(want))
	}
	return nil
}

// sgls runs sg-ls with args (untimed) and returns its output.
func (b *bench) sgls(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(b.bin, "sg-ls"), args...)
	cmd.Env = childEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("sg-ls %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out, nil
}

// lsEntry is what the benchmark reads of an sg-ls line.
type lsEntry struct {
	Name  string `json:"name"`
	Layer string `json:"layer"`
	Type  string `json:"type"`
}

// writeEntries writes the entries of sg-ls output out that are in want
// (nil: all) to the workload's entries file, naming ref (the image through
// the proxy), and returns them.
func (b *bench) writeEntries(w *workload, out []byte, ref string, want map[string]bool) ([]lsEntry, error) {
	refJSON, _ := json.Marshal(ref)
	var buf bytes.Buffer
	var ents []lsEntry
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e map[string]json.RawMessage
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return nil, fmt.Errorf("sg-ls output: %w", err)
		}
		var le lsEntry
		if err := json.Unmarshal(sc.Bytes(), &le); err != nil || le.Name == "" {
			return nil, fmt.Errorf("sg-ls output without name: %s", sc.Bytes())
		}
		if want != nil && !want[le.Name] {
			continue
		}
		e["ref"] = refJSON
		line, err := json.Marshal(e)
		if err != nil {
			return nil, err
		}
		buf.Write(line)
		buf.WriteByte('\n')
		ents = append(ents, le)
		w.nEntries++
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	w.entriesPath = filepath.Join(b.work, w.name+".ndjson")
	return ents, os.WriteFile(w.entriesPath, buf.Bytes(), 0o644)
}

// lsCost1 runs sg-ls with args through the proxy with no added RTT, to
// count what listing costs.
func (b *bench) lsCost1(ctx context.Context, args ...string) (counts, error) {
	b.proxy.set(0, b.cfg.bw, b.cfg.total)
	cmd := exec.CommandContext(ctx, filepath.Join(b.bin, "sg-ls"), args...)
	cmd.Env = childEnv()
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	if err := cmd.Run(); err != nil {
		return counts{}, fmt.Errorf("sg-ls %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return b.proxy.counts(), nil
}

// runQuiet runs r once, repeating the run while other processes were
// busy during it (up to -retries times), and keeps the least noisy try.
func (b *bench) runQuiet(ctx context.Context, r *row) (sample, error) {
	var best sample
	for try := 0; ; try++ {
		s, err := b.runOnce(ctx, r)
		if err != nil {
			return s, err
		}
		if try == 0 || s.noise < best.noise {
			best = s
		}
		if s.noise <= b.cfg.maxNoise || try >= b.cfg.retries {
			return best, nil
		}
		b.retried++
		if b.cfg.verbose {
			say("%s rtt=%s %s: other processes kept %.2f cores busy; repeating", r.w.name, r.rtt, r.m.name, s.noise)
		}
		select {
		case <-time.After(2 * time.Second):
		case <-ctx.Done():
			return s, ctx.Err()
		}
	}
}

// runOnce runs one mode of one workload as a process (under the measure
// subcommand, see measure.go) and checks its output.
func (b *bench) runOnce(ctx context.Context, r *row) (sample, error) {
	out, err := os.MkdirTemp(b.cfg.outBase, "stargz-get-bench-out-")
	if err != nil {
		return sample{}, err
	}
	defer os.RemoveAll(out)
	result := filepath.Join(b.work, "measured.json")
	args := []string{"measure", result}
	var stdin io.Reader
	switch {
	case r.m.floor:
		url := "http://" + b.proxy.Host + "/v2/" + r.w.layer.repo() + "/blobs/" + r.w.layer.Digest
		args = append(args, b.self, "rangefloor", url, fmt.Sprint(r.w.layer.Size), fmt.Sprint(floorJobs))
	case r.m.baseline && r.w.layers != nil:
		args = append(args, b.self, "baseline", "-image", b.proxyImageRef(r.w.repo), out)
	case r.m.baseline:
		ref := b.proxy.Host + "/" + r.w.layer.repo() + "@" + r.w.layer.Digest
		args = append(args, b.self, "baseline", ref, out)
	case r.w.layers != nil:
		// The image's flattened view, whole: sg-fetch reads the layers'
		// TOCs and flattens them itself.
		args = append(args, filepath.Join(b.bin, "sg-fetch"), "-o", out, "--progress", "never")
		if r.m.jobs > 0 {
			args = append(args, "-j", fmt.Sprint(r.m.jobs))
		}
		args = append(args, b.proxyImageRef(r.w.repo), "/")
	case r.m.args:
		args = append(args, filepath.Join(b.bin, "sg-fetch"), "-o", out, "--progress", "never", b.proxyRef(r.w.layer), "0")
		for _, f := range r.w.check {
			args = append(args, f.Name)
		}
	default:
		args = append(args, filepath.Join(b.bin, "sg-fetch"), "-o", out, "--progress", "never")
		if r.m.noCache {
			args = append(args, "--no-cache")
		}
		if r.m.jobs > 0 {
			args = append(args, "-j", fmt.Sprint(r.m.jobs))
		}
		f, err := os.Open(r.w.entriesPath)
		if err != nil {
			return sample{}, err
		}
		defer f.Close()
		stdin = f
	}
	cmd := exec.CommandContext(ctx, b.self, args...)
	cmd.Env = childEnv()
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	b.proxy.set(r.rtt, b.cfg.bw, b.cfg.total)
	before := takeSnap(b.regPID)
	err = cmd.Run()
	after := takeSnap(b.regPID)
	s := sample{c: b.proxy.counts()}
	if ps := cmd.ProcessState; ps != nil {
		_, s.noise = foreign(before, after, ps.UserTime()+ps.SystemTime())
	}
	s.env = (after.self - before.self) + (after.registry - before.registry)
	if err != nil {
		return s, fmt.Errorf("%w\n%s", err, tail(stderr.String(), 2000))
	}
	m, err := readMeasured(result)
	if err != nil {
		return s, err
	}
	s.wall, s.rss, s.cpu = time.Duration(m.WallNs), m.MaxRSS, time.Duration(m.CPUNs)
	if r.m.floor {
		return s, nil // nothing written to check
	}
	if !r.m.baseline {
		if err := checkResults(stdout.Bytes(), r.w.nEntries); err != nil {
			return s, err
		}
	}
	if err := verifyFiles(out, r.w.check); err != nil {
		return s, fmt.Errorf("output differs from the source files: %w", err)
	}
	if r.w.flat != nil {
		got, err := readTree(out)
		if err != nil {
			return s, err
		}
		if err := diffTrees(r.w.flat.ref, got, "the baseline's unpacked tree", r.m.name+"'s tree"); err != nil {
			return s, err
		}
	}
	return s, nil
}

func readMeasured(path string) (measured, error) {
	var m measured
	b, err := os.ReadFile(path)
	if err != nil {
		return m, fmt.Errorf("reading measurement: %w", err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("reading measurement: %w", err)
	}
	return m, os.Remove(path)
}

// rssFloor is the peak RSS the measure subcommand reports for /bin/true:
// the least any measured process can read.
func (b *bench) rssFloor(ctx context.Context) (int64, error) {
	result := filepath.Join(b.work, "measured.json")
	cmd := exec.CommandContext(ctx, b.self, "measure", result, "true")
	if out, err := cmd.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("measuring the RSS floor: %w\n%s", err, out)
	}
	m, err := readMeasured(result)
	return m.MaxRSS, err
}

// checkResults wants one "fetched" result per entry.
func checkResults(out []byte, n int) error {
	got := 0
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var r struct{ Name, Status, Error string }
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return fmt.Errorf("sg-fetch result line %d: %w", got+1, err)
		}
		if r.Status != "fetched" {
			return fmt.Errorf("sg-fetch: %s: %s: %s", r.Name, r.Status, r.Error)
		}
		got++
	}
	if got != n {
		return fmt.Errorf("sg-fetch printed %d results for %d entries", got, n)
	}
	return sc.Err()
}

// verifyFiles checks size and sha256 of every file under dir.
func verifyFiles(dir string, files []File) error {
	const workers = 4
	var (
		mu    sync.Mutex
		first error
		wg    sync.WaitGroup
	)
	ch := make(chan File)
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 256<<10)
			for f := range ch {
				if err := verifyFile(dir, f, buf); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for _, f := range files {
		ch <- f
	}
	close(ch)
	wg.Wait()
	return first
}

func verifyFile(dir string, f File, buf []byte) error {
	fh, err := os.Open(filepath.Join(dir, filepath.FromSlash(f.Name)))
	if err != nil {
		return err
	}
	defer fh.Close()
	h := sha256.New()
	n, err := io.CopyBuffer(h, fh, buf)
	if err != nil {
		return err
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); n != f.Size || got != f.Digest {
		return fmt.Errorf("%s: %d bytes, %s; want %d bytes, %s", f.Name, n, got, f.Size, f.Digest)
	}
	return nil
}

// childEnv is our environment without SG_* variables, so that a user's
// SG_JOBS does not change what is measured, and with an empty cache
// directory (see freshChildCache).
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SG_") {
			env = append(env, kv)
		}
	}
	return append(env, "SG_CACHE_DIR="+freshChildCache())
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// median of the samples, metric by metric.
func median(ss []sample) sample {
	pick := func(f func(sample) int64) int64 {
		v := make([]int64, len(ss))
		for i, s := range ss {
			v[i] = f(s)
		}
		sort.Slice(v, func(i, j int) bool { return v[i] < v[j] })
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return sample{
		wall: time.Duration(pick(func(s sample) int64 { return int64(s.wall) })),
		c: counts{
			Reqs:       pick(func(s sample) int64 { return s.c.Reqs }),
			Bytes:      pick(func(s sample) int64 { return s.c.Bytes }),
			BlobReqs:   pick(func(s sample) int64 { return s.c.BlobReqs }),
			BlobBytes:  pick(func(s sample) int64 { return s.c.BlobBytes }),
			BlobServer: time.Duration(pick(func(s sample) int64 { return int64(s.c.BlobServer) })),
		},
		rss:   pick(func(s sample) int64 { return s.rss }),
		cpu:   time.Duration(pick(func(s sample) int64 { return int64(s.cpu) })),
		noise: float64(pick(func(s sample) int64 { return int64(s.noise * 1000) })) / 1000,
		env:   time.Duration(pick(func(s sample) int64 { return int64(s.env) })),
	}
}
