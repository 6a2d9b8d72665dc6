package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content/file"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/stargz-get/stargz-get/internal/testenv"
)

// wArtifact is issue 17's workload: one big blob pushed as an OCI artifact
// by oras-go (as `oras push` does), fetched by sg-fetch (parallel ranged
// segments) and by `oras pull` (oras-go's Copy into a file store: one GET
// streamed through sha256 into the file), in the same run.
const wArtifact = "W5"

// artifactBlobSize is W5's blob: over 256 MiB, not a multiple of any
// segment size.
const artifactBlobSize = 256<<20 + 4321

const (
	artifactRepo  = "bench/artifact"
	artifactTag   = "v1"
	artifactTitle = "model.bin"
)

// artifactBlob writes (once, into the cache) the W5 blob: ChaCha8 output,
// incompressible and the same on every machine. It returns its path and
// digest.
func artifactBlob(cacheDir string) (string, string, error) {
	p := filepath.Join(cacheDir, "w5-artifact.bin")
	dp := p + ".sha256"
	if fi, err := os.Stat(p); err == nil && fi.Size() == artifactBlobSize {
		if d, err := os.ReadFile(dp); err == nil {
			return p, strings.TrimSpace(string(d)), nil
		}
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", "", err
	}
	tmp, err := os.CreateTemp(cacheDir, "w5-*.tmp")
	if err != nil {
		return "", "", err
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(tmp, h), rand.NewChaCha8([32]byte{'w', '5'}), artifactBlobSize); err != nil {
		tmp.Close()
		return "", "", err
	}
	if err := tmp.Close(); err != nil {
		return "", "", err
	}
	d := "sha256:" + hex.EncodeToString(h.Sum(nil))
	if err := os.Rename(tmp.Name(), p); err != nil {
		return "", "", err
	}
	return p, d, os.WriteFile(dp, []byte(d+"\n"), 0o644)
}

// artifactSample is one W5 run.
type artifactSample struct {
	wall              time.Duration
	rss               int64
	blobBytes, blobRq int64
}

// runArtifact runs W5: pushes the artifact, then times sg-fetch and the
// oras pull baseline through the shaper, interleaved, and prints a table.
func (b *bench) runArtifact(ctx context.Context) error {
	path, dgst, err := artifactBlob(b.cfg.cacheDir)
	if err != nil {
		return fmt.Errorf("building the W5 blob: %w", err)
	}
	say("pushing artifact %s (%s) with oras-go", artifactRepo, mib(artifactBlobSize))
	art := &testenv.Artifact{Name: artifactRepo, Tag: artifactTag, ArtifactType: "application/vnd.stargz-get.bench.model",
		Files: []testenv.ArtifactFile{{Title: artifactTitle, MediaType: "application/vnd.oci.image.layer.v1.tar", Digest: dgst, Size: artifactBlobSize, Path: path}}}
	if err := art.Push(ctx, b.reg.Host); err != nil {
		return err
	}
	ref := b.proxy.Host + "/" + artifactRepo + ":" + artifactTag
	modes := []string{"sg-fetch", "oras pull"}
	type key struct {
		rtt  time.Duration
		mode string
	}
	samples := map[key][]artifactSample{}
	for _, rtt := range b.cfg.rtts {
		for i := 0; i < b.cfg.runs; i++ {
			for _, m := range modes {
				s, err := b.artifactOnce(ctx, m, ref, rtt, dgst)
				if err != nil {
					return fmt.Errorf("%s, RTT %s, %s: %w", wArtifact, rtt, m, err)
				}
				if b.cfg.verbose {
					say("%s rtt=%s %s run %d: %s, %d blob bytes in %d requests, RSS %s", wArtifact, rtt, m, i+1, s.wall.Round(time.Millisecond), s.blobBytes, s.blobRq, mib(s.rss))
				}
				samples[key{rtt, m}] = append(samples[key{rtt, m}], s)
			}
		}
		say("%s at RTT %s done", wArtifact, rtt)
	}
	fmt.Printf("\n%s: one %s blob of an oras-pushed artifact, %s per connection, medians of %d runs\n\n", wArtifact, mib(artifactBlobSize), b.cfg.bwText, b.cfg.runs)
	fmt.Println("| RTT | mode | wall | speedup | blob MiB | bytes vs blob | blob GETs | peak RSS |")
	fmt.Println("|---:|---|---:|---:|---:|---:|---:|---:|")
	for _, rtt := range b.cfg.rtts {
		base := medianArtifact(samples[key{rtt, "oras pull"}])
		for _, m := range modes {
			s := medianArtifact(samples[key{rtt, m}])
			fmt.Printf("| %s | %s | %.2f s | %.2fx | %.1f | %.3fx | %d | %s |\n", rtt, m, s.wall.Seconds(),
				base.wall.Seconds()/s.wall.Seconds(), float64(s.blobBytes)/(1<<20), float64(s.blobBytes)/artifactBlobSize, s.blobRq, mib(s.rss))
		}
	}
	return nil
}

// artifactOnce runs one mode once under the measure subcommand and checks
// the file it wrote.
func (b *bench) artifactOnce(ctx context.Context, mode, ref string, rtt time.Duration, dgst string) (artifactSample, error) {
	out, err := os.MkdirTemp(b.cfg.outBase, "stargz-get-bench-out-")
	if err != nil {
		return artifactSample{}, err
	}
	defer os.RemoveAll(out)
	result := filepath.Join(b.work, "measured.json")
	args := []string{"measure", result}
	if mode == "oras pull" {
		args = append(args, b.self, "oras-pull", ref, out)
	} else {
		args = append(args, filepath.Join(b.bin, "sg-fetch"), "-o", out, "--progress", "never", ref)
	}
	cmd := exec.CommandContext(ctx, b.self, args...)
	cmd.Env = childEnv()
	var stderr strings.Builder
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	b.proxy.set(rtt, b.cfg.bw, b.cfg.total)
	if err := cmd.Run(); err != nil {
		return artifactSample{}, fmt.Errorf("%w\n%s", err, tail(stderr.String(), 2000))
	}
	c := b.proxy.counts()
	m, err := readMeasured(result)
	if err != nil {
		return artifactSample{}, err
	}
	if err := verifyFile(out, File{Name: artifactTitle, Size: artifactBlobSize, Digest: dgst}, make([]byte, 1<<20)); err != nil {
		return artifactSample{}, fmt.Errorf("output differs from the blob: %w", err)
	}
	return artifactSample{wall: time.Duration(m.WallNs), rss: m.MaxRSS, blobBytes: c.BlobBytes, blobRq: c.BlobReqs}, nil
}

func medianArtifact(ss []artifactSample) artifactSample {
	pick := func(f func(artifactSample) int64) int64 {
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
	return artifactSample{
		wall:      time.Duration(pick(func(s artifactSample) int64 { return int64(s.wall) })),
		rss:       pick(func(s artifactSample) int64 { return s.rss }),
		blobBytes: pick(func(s artifactSample) int64 { return s.blobBytes }),
		blobRq:    pick(func(s artifactSample) int64 { return s.blobRq }),
	}
}

// orasPull is the hidden subcommand "bench oras-pull HOST/REPO:TAG DIR":
// what `oras pull` does, with oras-go's Copy into a file store (each
// titled layer one GET, streamed through its digest check into
// DIR/<title>).
func orasPull(ctx context.Context, args []string) error {
	if len(args) != 2 {
		return fmt.Errorf("usage: bench oras-pull HOST/REPO:TAG DIR")
	}
	i := strings.LastIndex(args[0], ":")
	if i < strings.Index(args[0], "/") {
		return fmt.Errorf("pulling %s: want HOST/REPO:TAG", args[0])
	}
	repoRef, tag := args[0][:i], args[0][i+1:]
	repo, err := remote.NewRepository(repoRef)
	if err != nil {
		return err
	}
	repo.PlainHTTP = true
	fs, err := file.New(args[1])
	if err != nil {
		return err
	}
	defer fs.Close()
	if _, err := oras.Copy(ctx, repo, tag, fs, tag, oras.DefaultCopyOptions); err != nil {
		return fmt.Errorf("pulling %s: %w", args[0], err)
	}
	return nil
}
