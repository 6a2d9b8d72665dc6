package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

// Targets from issue 13 (engine II), on the shaped link: 20 ms RTT,
// 25 MB/s per connection, 100 MB/s in all.
const (
	targetBytesRatio = 1.05 // W1, W2: bytes ≤ 1.05 × needed
	targetW1Speedup  = 3.0  // W1 vs baseline at 20 ms
	targetW2Speedup  = 5.0  // W2 vs baseline at 20 ms, stdin and args forms
	targetW2ReqShare = 0.25 // W2: blob requests ≤ a quarter of the files ("far fewer")
	targetW3Speedup  = 3.5  // W3 vs baseline at 20 ms
	targetRSS        = 100 << 20
)

func (b *bench) report(w io.Writer, workloads []*workload, rows []*row) {
	fmt.Fprintf(w, "\nstargz-get benchmark, %s\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(w, "machine: %d CPUs (%s), %s RAM, %s %s/%s\n", runtime.NumCPU(), cpuModel(), memTotal(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	bw := "no cap"
	if b.cfg.bw > 0 {
		bw = fmt.Sprintf("%.1f MB/s per connection", float64(b.cfg.bw)/1e6)
	}
	fmt.Fprintf(w, "link: %s; RTT added once per request; %d run(s) per cell, medians shown\n", bw, b.cfg.runs)
	fmt.Fprintf(w, "output: each run writes into a fresh directory under %s; peak RSS floor of a measured process: %s\n", b.cfg.outBase, mib(b.floor))
	fmt.Fprintf(w, "times: %s\n", strings.Join(b.timings, ", "))
	fmt.Fprintf(w, "load average (1 min) at start and end of the runs: %s; runs repeated because other processes were busy: %d\n\n", strings.Join(b.load, ", "), b.retried)

	fmt.Fprintln(w, "layers:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "layer\tentries\tregular files\tuncompressed\tblob\tfooter+TOC\ttoc.Read local\tsg-ls blob req\tsg-ls blob bytes\tbuild")
	seen := map[*Layer]bool{}
	for _, wl := range workloads {
		for _, l := range wl.imageLayers() {
			if seen[l] {
				continue
			}
			seen[l] = true
			c := b.lsCost[l.Name]
			fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t%dms\t%d\t%s\t%.1fs\n", l.Name, len(l.Files), len(l.Regular()),
				mib(l.UncompressedSize), mib(l.Size), kib(l.Size-l.toc.Offset), l.tocTime.Milliseconds(), c.BlobReqs, kib(c.BlobBytes), l.BuildSeconds)
		}
	}
	tw.Flush()
	fmt.Fprintln(w)
	for _, wl := range workloads {
		fmt.Fprintf(w, "%s: %s", wl.name, wl.what)
		if wl.flat != nil {
			c := wl.flat.lsFlat
			fmt.Fprintf(w, "\n    sg-ls --flatten: %d blob requests, %s\n    every run's output must equal the baseline's unpacked tree (names, types, modes, contents, link targets), checked first against a model of the layers\n", c.BlobReqs, kib(c.BlobBytes))
			continue
		}
		if wl.needed > 0 {
			fmt.Fprintf(w, "; needed %s (%d %s + footer/TOC)", mb(wl.needed), wl.members, spanKind(wl.layer))
		}
		if wl.mergeExtra > 0 {
			fmt.Fprintf(w, "; merging gaps down to %d requests would download %s more (%.1fx needed)",
				int(targetW2ReqShare*float64(len(wl.check))), mb(wl.mergeExtra), float64(wl.needed+wl.mergeExtra)/float64(wl.needed))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w)

	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "workload\tRTT\tmode\twall\tCPU\tpeak RSS\tblob bytes\tall bytes\tblob req\tall req\tsrv/req\tsrv CPU\tother\tspeed-up\tbytes/needed\tbytes/full\t")
	for _, r := range rows {
		m := median(r.samples)
		speed := "-"
		if base := b.find(rows, r.w.name, r.rtt, "baseline"); base != nil && !r.m.baseline {
			speed = fmt.Sprintf("%.1fx", float64(median(base.samples).wall)/float64(m.wall))
		}
		ratio := "-"
		if r.w.needed > 0 {
			ratio = fmt.Sprintf("%.3f", float64(m.c.BlobBytes)/float64(r.w.needed))
		} else {
			ratio = fmt.Sprintf("%.3f*", float64(m.c.BlobBytes)/float64(r.w.layer.Size))
		}
		srv := "-"
		if m.c.BlobReqs > 0 {
			srv = fmt.Sprintf("%.1fms", float64(m.c.BlobServer)/float64(m.c.BlobReqs)/1e6)
		}
		other := fmt.Sprintf("%.2f", m.noise)
		for _, s := range r.samples {
			if s.noise > b.cfg.maxNoise {
				other += "!"
				break
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.2fs\t%s\t%s\t%s\t%d\t%d\t%s\t%.2fs\t%s\t%s\t%s\t%.3f\t\n",
			r.w.name, r.rtt, r.m.name, wall(r.samples), m.cpu.Seconds(), mib(m.rss),
			mb(m.c.BlobBytes), mb(m.c.Bytes), m.c.BlobReqs, m.c.Reqs, srv, m.env.Seconds(), other, speed, ratio,
			float64(m.c.BlobBytes)/float64(r.w.full()))
	}
	tw.Flush()
	fmt.Fprintf(w, `
wall: median (min-max) of the runs; CPU: user+system seconds of the measured process; peak RSS:
its ru_maxrss (floor %s, see above). blob bytes/req: GETs of .../blobs/... through the proxy;
all: every request (ping, manifests) and response body. srv/req: the registry's mean time to
response headers per blob GET, not counting the added RTT; srv CPU: CPU seconds of registry +
proxy during the run, on the same cores. other: cores kept busy by processes outside the
benchmark (median; ! = a run stayed above %.2f after %d repeats). speed-up: baseline wall /
this wall, same workload and RTT. bytes/needed: blob bytes / (compressed bytes of the needed
gzip members + footer + TOC; for W4, of the visible regular files' members in the layer that
provides each + every layer's footer and TOC); * = / the whole blob. bytes/full: blob bytes /
all layer blobs of the workload's image (what the baseline downloads).
`, mib(b.floor), b.cfg.maxNoise, b.cfg.retries)

	fmt.Fprintln(w, "\ntargets (issue 3), judged on sg-fetch at its default -j; W4 (issue 6) has no numeric target:")
	for _, t := range b.targets(rows) {
		fmt.Fprintf(w, "  %-12s %s: %s\n", t.verdict, t.name, t.detail)
	}
}

// wall formats the median wall time, with the range when there are
// several runs.
func wall(ss []sample) string {
	m := median(ss).wall
	if len(ss) == 1 {
		return fmt.Sprintf("%.2fs", m.Seconds())
	}
	lo, hi := ss[0].wall, ss[0].wall
	for _, s := range ss {
		lo, hi = min(lo, s.wall), max(hi, s.wall)
	}
	return fmt.Sprintf("%.2fs (%.2f-%.2f)", m.Seconds(), lo.Seconds(), hi.Seconds())
}

func (b *bench) find(rows []*row, w string, rtt time.Duration, m string) *row {
	for _, r := range rows {
		if r.w.name == w && r.rtt == rtt && r.m.name == m {
			return r
		}
	}
	return nil
}

type verdict struct{ verdict, name, detail string }

// targets judges each target of the issue on the measured rows.
func (b *bench) targets(rows []*row) []verdict {
	var out []verdict
	speedup := func(w string, rtt time.Duration) (float64, bool) {
		r, base := b.find(rows, w, rtt, "sg-fetch"), b.find(rows, w, rtt, "baseline")
		if r == nil || base == nil {
			return 0, false
		}
		return float64(median(base.samples).wall) / float64(median(r.samples).wall), true
	}
	// eachRTT judges a target on every measured RTT.
	eachRTT := func(name, w string, ok func(r *row) (string, bool)) {
		var parts []string
		met, any := true, false
		for _, rtt := range b.cfg.rtts {
			r := b.find(rows, w, rtt, "sg-fetch")
			if r == nil {
				continue
			}
			s, good := ok(r)
			any = true
			met = met && good
			parts = append(parts, fmt.Sprintf("%s: %s", rtt, s))
		}
		out = append(out, judge(name, any, met, strings.Join(parts, ", ")))
	}
	bytesOK := func(r *row) (string, bool) {
		x := float64(median(r.samples).c.BlobBytes) / float64(r.w.needed)
		return fmt.Sprintf("%.3fx", x), x <= targetBytesRatio
	}
	eachRTT("W1 bytes <= 1.05 x needed", wOneLarge, bytesOK)
	eachRTT("W2 bytes <= 1.05 x needed", wSmallFiles, bytesOK)
	eachRTT("W2 requests << files (<= 1/4)", wSmallFiles, func(r *row) (string, bool) {
		n := median(r.samples).c.BlobReqs
		files := len(r.w.check)
		return fmt.Sprintf("%d blob requests for %d files", n, files), float64(n) <= targetW2ReqShare*float64(files)
	})
	at := func(name, w string, rtt time.Duration, target float64) {
		x, ok := speedup(w, rtt)
		detail := fmt.Sprintf("%.1fx", x)
		if w == wWhole {
			if y, ok := speedup(wWholeSmall, rtt); ok {
				detail += fmt.Sprintf(" (W3-small: %.1fx)", y)
			}
		}
		out = append(out, judge(name, ok, x >= target, detail))
	}
	at("W1 >= 3x faster than baseline at 20ms", wOneLarge, 20*time.Millisecond, targetW1Speedup)
	at("W2 >= 5x faster than baseline at 20ms (entries on stdin)", wSmallFiles, 20*time.Millisecond, targetW2Speedup)
	if r, base := b.find(rows, wSmallFiles, 20*time.Millisecond, modeArgs), b.find(rows, wSmallFiles, 20*time.Millisecond, "baseline"); r != nil && base != nil {
		x := float64(median(base.samples).wall) / float64(median(r.samples).wall)
		out = append(out, judge("W2 >= 5x faster than baseline at 20ms (100 PATH arguments)", true, x >= targetW2Speedup, fmt.Sprintf("%.1fx", x)))
	}
	at("W3 >= 3.5x faster than baseline at 20ms", wWhole, 20*time.Millisecond, targetW3Speedup)
	var parts []string
	met, any := true, false
	for _, w := range []string{wWhole, wWholeSmall, wWholeMany} {
		var peak int64 = -1
		var layer *Layer
		for _, r := range rows {
			if r.w.name == w && !r.m.baseline {
				layer = r.w.layer
				for _, s := range r.samples {
					peak = max(peak, s.rss)
				}
			}
		}
		if layer == nil {
			continue
		}
		any = true
		met = met && peak >= 0 && peak < targetRSS
		parts = append(parts, fmt.Sprintf("%s (%s layer): max %s", w, mib(layer.UncompressedSize), mib(peak)))
	}
	out = append(out, judge("whole-layer peak RSS < 100 MiB, any sg-fetch mode", any, met, strings.Join(parts, ", ")))
	out = append(out, b.flatInfo(rows)...)
	out = append(out, b.zstdTargets(rows)...)
	var ls []string
	for _, set := range []*Set{b.set, b.w4, b.zst} {
		if set == nil {
			continue
		}
		for _, l := range set.Layers {
			if c, ok := b.lsCost[l.Name]; ok {
				ls = append(ls, fmt.Sprintf("%s: %d (TOC %s)", l.Name, c.BlobReqs, kib(l.Size-l.toc.Offset)))
			}
		}
	}
	out = append(out, verdict{"(info)", "sg-ls blob requests per layer", strings.Join(ls, ", ")})
	return out
}

// flatInfo reports W4's ratios per RTT and mode: bytes against the full
// pull and against the visible content, speed-up, peak RSS.
func (b *bench) flatInfo(rows []*row) []verdict {
	var bytesFull, bytesVis, speed, rss []string
	measured := false
	for _, rtt := range b.cfg.rtts {
		base := b.find(rows, wFlatten, rtt, "baseline")
		for _, r := range rows {
			if r.w.name != wFlatten || r.rtt != rtt {
				continue
			}
			measured = true
			m := median(r.samples)
			var peak int64 = -1
			for _, s := range r.samples {
				peak = max(peak, s.rss)
			}
			rss = append(rss, fmt.Sprintf("%s %s: %s", rtt, r.m.name, mib(peak)))
			if r.m.baseline {
				continue
			}
			bytesFull = append(bytesFull, fmt.Sprintf("%s %s: %.3fx", rtt, r.m.name, float64(m.c.BlobBytes)/float64(r.w.full())))
			withDefaults := r.w.needed + r.w.flat.tailExtra + r.w.flat.gapExtra
			bytesVis = append(bytesVis, fmt.Sprintf("%s %s: %.3fx (%.3fx of visible + tail reads + merged gaps)", rtt, r.m.name,
				float64(m.c.BlobBytes)/float64(r.w.needed), float64(m.c.BlobBytes)/float64(withDefaults)))
			if base != nil {
				speed = append(speed, fmt.Sprintf("%s %s: %.1fx", rtt, r.m.name, float64(median(base.samples).wall)/float64(m.wall)))
			}
		}
	}
	if !measured {
		return []verdict{{"NOT MEASURED", "W4 flatten (issue 6)", "(workload not in this run)"}}
	}
	return []verdict{
		{"(info)", "W4 bytes vs full pull", strings.Join(bytesFull, ", ")},
		{"(info)", "W4 bytes vs visible content", strings.Join(bytesVis, ", ")},
		{"(info)", "W4 speed-up vs full pull", strings.Join(speed, ", ")},
		{"(info)", "W4 peak RSS (max of runs)", strings.Join(rss, ", ")},
		{"(info)", "W4 tree", "every run's output equals the baseline's unpacked tree"},
	}
}

func judge(name string, measured, met bool, detail string) verdict {
	switch {
	case !measured:
		return verdict{"NOT MEASURED", name, "(workload or RTT not in this run)"}
	case met:
		return verdict{"MET", name, detail}
	}
	return verdict{"NOT MET", name, detail}
}

func mb(n int64) string  { return fmt.Sprintf("%.2f MB", float64(n)/1e6) }
func kib(n int64) string { return fmt.Sprintf("%.0f KiB", float64(n)/(1<<10)) }

func cpuModel() string { return procField("/proc/cpuinfo", "model name") }

func memTotal() string {
	v := procField("/proc/meminfo", "MemTotal")
	var kb int64
	if _, err := fmt.Sscanf(v, "%d kB", &kb); err != nil {
		return "unknown"
	}
	return fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
}

func procField(file, key string) string {
	f, err := os.Open(file)
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}
