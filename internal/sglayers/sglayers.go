// Package sglayers is the sg-layers tool: image reference in, one layer
// record per layer out.
package sglayers

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/stargz-get/stargz-get/internal/cli"
	"github.com/stargz-get/stargz-get/internal/source"
	"github.com/stargz-get/stargz-get/pkg/registry"
	"github.com/stargz-get/stargz-get/pkg/toc"
	"github.com/stargz-get/stargz-get/pkg/wire"
)

const tool = "sg-layers"

const usage = `Usage: sg-layers [options] IMAGE...

Print one JSON record per layer of each IMAGE, in manifest order: its
digest, size, media type, and format (estargz, stargz, gzip, zstd,
zstd:chunked, tar, or blob for the files of an OCI artifact), with the
TOC digest of eStargz layers, and the title, annotations and artifactType
of artifact layers. The records feed sg-ls, and those of blobs sg-fetch.

IMAGE is a reference as docker and crane take it: "ubuntu" is
docker.io/library/ubuntu:latest; "host:5000/app:tag"; "app@sha256:...".

` + cli.CacheUsage + `
` + cli.RegistryUsage + `
Examples:
  sg-layers ghcr.io/stargz-containers/node:17.8.0-esgz
  sg-layers --platform linux/arm64 IMAGE | jq -r .digest
  sg-layers --platform all IMAGE | jq -r '"\(.platform) \(.digest)"'
  sg-layers IMAGE | sg-ls | grep '"name":"usr/bin/' | sg-fetch -o out

Exit status: 0 on success, 1 when an image could not be read, 2 on usage errors.
`

// Main runs sg-layers as a process.
func Main() int { return cli.Main(tool, Run) }

// Run is sg-layers without the process: testable in-process.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(tool, flag.ContinueOnError)
	var rf cli.RegistryFlags
	rf.Register(fs)
	var cf cli.CacheFlags
	cf.Register(fs)
	images, err := cli.Parse(fs, args, usage, stdout)
	if err != nil {
		return err
	}
	if len(images) == 0 {
		return cli.Usagef("missing IMAGE")
	}
	all := rf.TakeAllPlatforms()
	rf.Stdin = stdin // free for --password-stdin: sg-layers reads no records
	src, _, err := cli.NewSource(tool, stderr, &rf, toc.Options{})
	if err != nil {
		return err
	}
	src.Cache = cf.Open(tool, stderr)
	src.Warnf = cli.Warnf(tool, stderr)
	defer src.Close()
	enc := wire.NewEncoder(stdout)
	failed := 0
	for _, image := range images {
		if err := list(ctx, src, image, all, enc); err != nil {
			if errors.Is(err, context.Canceled) || cli.IsEPIPE(err) || len(images) == 1 {
				return cli.Hint(err)
			}
			fmt.Fprintf(stderr, "%s: error: %v\n", tool, err)
			failed++
		}
	}
	if failed > 0 {
		return cli.Failedf("%d of %d images could not be read", failed, len(images))
	}
	return nil
}

func list(ctx context.Context, src *source.Source, image string, all bool, enc *wire.Encoder) error {
	imgs, err := images(ctx, src, image, all)
	if err != nil {
		return err
	}
	for _, img := range imgs {
		for _, l := range img.Layers {
			format, err := src.Format(ctx, img, l)
			if err != nil {
				return err
			}
			rec := source.Record(img, l, format)
			rec.Indexed = src.Indexed(rec.Digest)
			if err := enc.Encode(rec); err != nil {
				return err
			}
		}
	}
	return nil
}

// images resolves image to the image for --platform, or with --platform
// all to every platform's image.
func images(ctx context.Context, src *source.Source, image string, all bool) ([]*registry.Image, error) {
	if !all {
		img, err := src.Image(ctx, image, "")
		if err != nil {
			return nil, err
		}
		return []*registry.Image{img}, nil
	}
	ref, err := src.Client.ParseReference(image)
	if err != nil {
		return nil, err
	}
	return src.Client.Images(ctx, ref)
}
