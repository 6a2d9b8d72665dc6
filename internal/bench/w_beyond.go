package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Issue 15's rows, measured after the other workloads and reported in a
// table of their own:
//
//	W1-stdout  sg-fetch -o - of W1's file (stdout into a file under -out,
//	           hashed after) against sg-fetch -o DIR of the same file
//	W6-diff    sg-ls --diff of two 3-layer images: W4, and W4 with its
//	           upper layers swapped (a different flattened view of the same
//	           three blobs); the bytes should be the three TOCs only
const (
	wStdout = "W1-stdout"
	wDiff   = "W6-diff"
)

// beyondRow is one row of the issue 15 table.
type beyondRow struct {
	workload, mode string
	rtt            time.Duration
	samples        []sample
	// ref is what the row is compared with: the wall time of the -o DIR
	// row for W1-stdout, the TOC bytes for W6-diff.
	refWall *beyondRow
	// tocBytes is the footers and TOCs of the three layers; listBytes
	// what sg-ls IMAGE N reads of the three (the tail read holding the
	// TOC, as toc.Read reads it).
	tocBytes, listBytes int64
}

// runBeyond measures the issue 15 rows the flags ask for.
func (b *bench) runBeyond(ctx context.Context) ([]*beyondRow, error) {
	var rows []*beyondRow
	if b.wants(wStdout) && b.set != nil {
		big := b.set.Layer("big")
		if err := big.push(ctx, b.reg.Host); err != nil {
			return nil, err
		}
		regs := big.Regular()
		file := regs[0]
		for _, f := range regs {
			if f.Size > file.Size {
				file = f
			}
		}
		ref := b.proxyRef(big)
		for _, rtt := range b.cfg.rtts {
			dir := &beyondRow{workload: wStdout, mode: "sg-fetch -o DIR", rtt: rtt}
			std := &beyondRow{workload: wStdout, mode: "sg-fetch -o -", rtt: rtt, refWall: dir}
			for i := 0; i < b.cfg.runs; i++ {
				s, err := b.runFile(ctx, rtt, ref, file, false)
				if err != nil {
					return nil, fmt.Errorf("%s, RTT %s, -o DIR: %w", wStdout, rtt, err)
				}
				dir.samples = append(dir.samples, s)
				if s, err = b.runFile(ctx, rtt, ref, file, true); err != nil {
					return nil, fmt.Errorf("%s, RTT %s, -o -: %w", wStdout, rtt, err)
				}
				std.samples = append(std.samples, s)
			}
			rows = append(rows, dir, std)
			say("%s at RTT %s done", wStdout, rtt)
		}
	}
	if b.wants(wDiff) && b.w4 != nil {
		ls := b.w4.Layers
		if len(ls) != 3 {
			return nil, fmt.Errorf("%s: W4 has %d layers, want 3", wDiff, len(ls))
		}
		if err := pushTagged(ctx, b.reg.Host, w4Repo, "v1", ls); err != nil {
			return nil, err
		}
		if err := pushTagged(ctx, b.reg.Host, w4Repo, "v2", []*Layer{ls[0], ls[2], ls[1]}); err != nil {
			return nil, err
		}
		var toc, list int64
		a, z := b.proxy.Host+"/"+w4Repo+":v1", b.proxy.Host+"/"+w4Repo+":v2"
		for i, l := range ls {
			toc += l.Size - l.toc.Offset
			c, err := b.lsCost1(ctx, a, fmt.Sprint(i))
			if err != nil {
				return nil, err
			}
			list += c.BlobBytes
		}
		for _, rtt := range b.cfg.rtts {
			r := &beyondRow{workload: wDiff, mode: "sg-ls --diff", rtt: rtt, tocBytes: toc, listBytes: list}
			for i := 0; i < b.cfg.runs; i++ {
				s, out, err := b.measured(ctx, rtt, nil, filepath.Join(b.bin, "sg-ls"), "--diff", a, z)
				if err != nil {
					return nil, fmt.Errorf("%s, RTT %s: %w", wDiff, rtt, err)
				}
				if n := bytes.Count(out, []byte("\n")); n == 0 {
					return nil, fmt.Errorf("%s: no differences listed", wDiff)
				}
				r.samples = append(r.samples, s)
			}
			rows = append(rows, r)
			say("%s at RTT %s done", wDiff, rtt)
		}
	}
	return rows, nil
}

// runFile fetches one file of the layer at ref, to stdout (into a file,
// hashed after) or into a directory, and checks it.
func (b *bench) runFile(ctx context.Context, rtt time.Duration, ref string, f File, stdout bool) (sample, error) {
	out, err := os.MkdirTemp(b.cfg.outBase, "stargz-get-bench-out-")
	if err != nil {
		return sample{}, err
	}
	defer os.RemoveAll(out)
	target := filepath.Join(out, filepath.FromSlash(f.Name))
	args := []string{filepath.Join(b.bin, "sg-fetch"), "--progress", "never", "-o", out, ref, "0", f.Name}
	var sink *os.File
	if stdout {
		args[4] = "-"
		target = filepath.Join(out, "stdout")
		if sink, err = os.Create(target); err != nil {
			return sample{}, err
		}
		defer sink.Close()
	}
	s, _, err := b.measured(ctx, rtt, sink, args...)
	if err != nil {
		return s, err
	}
	got, err := os.Open(target)
	if err != nil {
		return s, err
	}
	defer got.Close()
	h := sha256.New()
	if _, err := io.Copy(h, got); err != nil {
		return s, err
	}
	if d := "sha256:" + hex.EncodeToString(h.Sum(nil)); d != f.Digest {
		return s, fmt.Errorf("%s: digest %s, want %s", f.Name, d, f.Digest)
	}
	return s, nil
}

// measured runs a command under the measure subcommand through the
// shaped proxy, with its stdout into sink (or returned, when sink is nil).
func (b *bench) measured(ctx context.Context, rtt time.Duration, sink io.Writer, args ...string) (sample, []byte, error) {
	result := filepath.Join(b.work, "measured.json")
	cmd := exec.CommandContext(ctx, b.self, append([]string{"measure", result}, args...)...)
	cmd.Env = childEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if sink != nil {
		cmd.Stdout = sink
	}
	b.proxy.set(rtt, b.cfg.bw, b.cfg.total)
	before := takeSnap(b.regPID)
	err := cmd.Run()
	after := takeSnap(b.regPID)
	s := sample{c: b.proxy.counts()}
	if ps := cmd.ProcessState; ps != nil {
		_, s.noise = foreign(before, after, ps.UserTime()+ps.SystemTime())
	}
	s.env = (after.self - before.self) + (after.registry - before.registry)
	if err != nil {
		return s, nil, fmt.Errorf("%w\n%s", err, tail(stderr.String(), 2000))
	}
	m, err := readMeasured(result)
	if err != nil {
		return s, nil, err
	}
	s.wall, s.rss, s.cpu = time.Duration(m.WallNs), m.MaxRSS, time.Duration(m.CPUNs)
	return s, stdout.Bytes(), nil
}

// pushTagged pushes layers as repo:tag.
func pushTagged(ctx context.Context, host, repo, tag string, layers []*Layer) error {
	ref, err := name.ParseReference(host+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		return err
	}
	img, err := v1Image(layers)
	if err != nil {
		return fmt.Errorf("image %s: %w", ref, err)
	}
	if err := remote.Write(ref, img, remote.WithContext(ctx)); err != nil {
		return fmt.Errorf("pushing %s: %w", ref, err)
	}
	return nil
}

// reportBeyond prints the issue 15 table.
func (b *bench) reportBeyond(w io.Writer, rows []*beyondRow) {
	if len(rows) == 0 {
		return
	}
	fmt.Fprintln(w, "\nissue 15: file to stdout and remote diff")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "workload\tRTT\tmode\twall\tCPU\tpeak RSS\tblob bytes\tblob req\tcompared\t")
	var verdicts []string
	for _, r := range rows {
		m := median(r.samples)
		cmp := "-"
		switch {
		case r.refWall != nil:
			ratio := float64(m.wall) / float64(median(r.refWall.samples).wall)
			cmp = fmt.Sprintf("%.2fx the wall of -o DIR", ratio)
			verdicts = append(verdicts, fmt.Sprintf("%s RTT %s: %s (target within 1.2x): %s", r.workload, r.rtt, cmp, pass(ratio <= 1.2)))
		case r.tocBytes > 0:
			ratio := float64(m.c.BlobBytes) / float64(r.listBytes)
			cmp = fmt.Sprintf("%.3fx sg-ls of the 3 layers (%s; footers+TOCs alone %s)", ratio, kib(r.listBytes), kib(r.tocBytes))
			verdicts = append(verdicts, fmt.Sprintf("%s RTT %s: blob bytes %s (target: TOC reads only, each layer once): %s", r.workload, r.rtt, cmp, pass(ratio <= 1.0)))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.2fs\t%s\t%s\t%d\t%s\t\n", r.workload, r.rtt, r.mode, wall(r.samples), m.cpu.Seconds(), mib(m.rss), mb(m.c.BlobBytes), m.c.BlobReqs, cmp)
	}
	tw.Flush()
	fmt.Fprintf(w, "\n%s\n", strings.Join(verdicts, "\n"))
}

func pass(ok bool) string {
	if ok {
		return "PASS"
	}
	return "FAIL"
}
