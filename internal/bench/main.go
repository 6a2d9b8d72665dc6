// Command bench measures sg-fetch against a full-layer pull (download the
// whole blob, gunzip, untar: what `crane export` and `skopeo copy` do), side
// by side, through a link-shaping proxy in front of the real distribution
// registry. See BENCHMARKS.md.
//
//	go run ./internal/bench                 # full run: 0 ms and 20 ms RTT, 25 MB/s per connection, 100 MB/s in all, 3 runs
//	go run ./internal/bench -quick          # 0 ms only, one run
//	go run ./internal/bench -only W1,W2 -rtt 50ms -bw 10MB -runs 5
//	go run ./internal/bench -only W4        # a 3-layer image with whiteouts, flattened
//
// It builds sg-fetch and sg-ls, builds (once, cached under the temp dir)
// three eStargz layers from the Go toolchain's own files, and the three
// layers of an image whose upper layers delete and replace files, pushes
// them to a registry on a loopback port, and runs every workload and mode
// as a separate process so that its peak RSS can be read. Every run's
// output is checked against the sha256 of the source files (W4: against
// the baseline's unpacked tree).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "baseline":
			if err = baseline(ctx, os.Args[2:]); err != nil {
				fmt.Fprintf(os.Stderr, "bench baseline: error: %v\n", err)
				os.Exit(1)
			}
			return
		case "rangefloor":
			if err = rangeFloor(ctx, os.Args[2:]); err != nil {
				fmt.Fprintf(os.Stderr, "bench rangefloor: error: %v\n", err)
				os.Exit(1)
			}
			return
		case "oras-pull":
			if err = orasPull(ctx, os.Args[2:]); err != nil {
				fmt.Fprintf(os.Stderr, "bench oras-pull: error: %v\n", err)
				os.Exit(1)
			}
			return
		case "measure":
			code, err := measure(os.Args[2:])
			if err != nil {
				fmt.Fprintf(os.Stderr, "bench measure: error: %v\n", err)
			}
			os.Exit(code)
		}
	}
	if err = run(ctx, os.Args[1:]); err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(os.Stderr, "bench: error: %v\n", err)
		os.Exit(1)
	}
}

// config is what the flags ask for.
type config struct {
	quick     bool
	rtts      []time.Duration
	bw        int64
	bwText    string
	total     int64
	totalText string
	runs      int
	only      map[string]bool
	extraJobs []int
	outBase   string
	cacheDir  string
	verbose   bool
	serve     bool
	maxNoise  float64
	retries   int
}

const usage = `Usage: go run ./internal/bench [options]

Benchmarks sg-fetch (default -j, -j 1) against a full-layer pull (one
stream: download + gunzip + untar) through a link-shaping proxy in front
of the distribution registry, and prints a table and the issue's targets.

Workloads: W1 (one large file of the big layer), W2 (100 scattered small
files of the many-files layer), W3 (the whole big layer), W3-small (the
whole small layer), W4 (a three-layer image with whiteouts and
replacements, flattened and fetched whole: sg-fetch IMAGE / against
pulling and unpacking every layer in order), W5 (one 256 MiB blob of an
oras-pushed artifact: sg-fetch against oras pull); W1-zstd and W2-zstd
(W1 and W2 on the same content as zstd:chunked, written by
containers/storage); W3-many (the whole many-files layer) and WG (a 250
MB plain gzip layer: early stop, the seek index, whole layer against one
stream) when named in -only.

Options:
`

func parseFlags(args []string) (*config, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	quick := fs.Bool("quick", false, "reduced set: 0 ms RTT only, one run (unless -rtt or -runs are given)")
	rtt := fs.String("rtt", "0ms,20ms", "comma-separated round-trip times added per request")
	bw := fs.String("bw", "25MB", "bandwidth cap per connection, per second (25MB, 100MiB; 0 for none)")
	total := fs.String("total-bw", "100MB", "bandwidth cap of all connections together, per second (the link; 0 for none)")
	runs := fs.Int("runs", 3, "runs per workload, RTT and mode; the table shows medians")
	only := fs.String("only", "", "comma-separated workloads to run (W1,W2,W3,W3-small,W4,W5,W1-stdout,W6-diff,W1-zstd,W2-zstd; W7-tag; W3-many and WG only when named); default all but W3-many and WG")
	extra := fs.String("extra-j", "", "comma-separated extra sg-fetch -j values to measure besides the default and 1")
	out := fs.String("out", defaultOut(), "directory under which each run's output directory is created; /dev/shm (tmpfs) when writable, so that the disk is not what is measured")
	cache := fs.String("cache", filepath.Join(os.TempDir(), "stargz-get-bench"), "layer cache directory")
	verbose := fs.Bool("v", false, "print every run")
	maxNoise := fs.Float64("max-noise", 0.25, "repeat a run when other processes kept more than this many cores busy on average during it")
	retries := fs.Int("retries", 4, "how often a noisy run is repeated before its least noisy try is kept (and marked !)")
	serve := fs.Bool("serve", false, "set up (layers, registry, proxy, entry files), print how to reach them, and wait for Ctrl-C instead of running")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() != 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	c := &config{quick: *quick, runs: *runs, outBase: *out, cacheDir: *cache, verbose: *verbose, bwText: *bw, totalText: *total, serve: *serve, maxNoise: *maxNoise, retries: *retries}
	if c.quick {
		if !set["rtt"] {
			*rtt = "0ms"
		}
		if !set["runs"] {
			c.runs = 1
		}
	}
	if c.runs < 1 {
		return nil, fmt.Errorf("-runs must be at least 1, got %d", c.runs)
	}
	for _, s := range strings.Split(*rtt, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil || d < 0 {
			return nil, fmt.Errorf("-rtt: invalid duration %q", s)
		}
		c.rtts = append(c.rtts, d)
	}
	var err error
	if c.bw, err = parseBandwidth(*bw); err != nil {
		return nil, fmt.Errorf("-bw: %w", err)
	}
	if c.total, err = parseBandwidth(*total); err != nil {
		return nil, fmt.Errorf("-total-bw: %w", err)
	}
	if *only != "" {
		c.only = map[string]bool{}
		for _, w := range strings.Split(*only, ",") {
			w = strings.TrimSpace(w)
			if !knownWorkload(w) {
				return nil, fmt.Errorf("-only: unknown workload %q (want W1, W2, W3, W3-small, W3-many, W4, W5, W1-stdout, W6-diff, W1-zstd, W2-zstd, WG)", w)
			}
			c.only[w] = true
		}
	}
	if *extra != "" {
		for _, s := range strings.Split(*extra, ",") {
			j, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil || j < 1 {
				return nil, fmt.Errorf("-extra-j: invalid job count %q", s)
			}
			c.extraJobs = append(c.extraJobs, j)
		}
	}
	return c, nil
}

// defaultOut is /dev/shm when it is a writable directory (a tmpfs on
// Linux), else the temp dir.
func defaultOut() string {
	const shm = "/dev/shm"
	if d, err := os.MkdirTemp(shm, "stargz-get-bench-probe-"); err == nil {
		os.Remove(d)
		return shm
	}
	return os.TempDir()
}
