package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"go.podman.io/storage/pkg/chunked/compressor"
)

// W1 and W2 on zstd:chunked layers (issue 12): the same content as the
// eStargz layers of W1 and W2, compressed by containers/storage's
// zstd:chunked compressor (as podman pushes it), so that one run shows
// zstd:chunked next to eStargz and next to a whole-layer download.
const (
	wOneLargeZstd   = "W1-zstd"
	wSmallFilesZstd = "W2-zstd"
	// mediaTypeLayerZstd is the OCI media type of zstd:chunked layers.
	mediaTypeLayerZstd = "application/vnd.oci.image.layer.v1.tar+zstd"
	// targetZstdTime is how much slower than eStargz zstd:chunked may be.
	targetZstdTime = 1.2
)

// zstdGroup is the layers of W1-zstd and W2-zstd: "big" and "many" as
// zstd:chunked.
var zstdGroup = &group{
	name: "zstd",
	specs: []layerSpec{
		{name: "big-zstd", about: specs[0].about + ", as zstd:chunked", trees: specs[0].trees},
		{name: "many-zstd", about: specs[1].about + ", as zstd:chunked", trees: specs[1].trees},
	},
	buildLayer: buildZstdLayer,
}

// baseWorkload is the workload whose files a zstd workload fetches.
func baseWorkload(name string) string {
	return strings.TrimSuffix(name, "-zstd")
}

// zstdWorkloads are W1-zstd and W2-zstd, when their layers were built.
func (b *bench) zstdWorkloads() []*workload {
	if b.zst == nil {
		return nil
	}
	return []*workload{
		{name: wOneLargeZstd, layer: b.zst.Layer("big-zstd")},
		{name: wSmallFilesZstd, layer: b.zst.Layer("many-zstd")},
	}
}

// buildZstdLayer writes the tar of sp and compresses it with
// containers/storage's zstd:chunked compressor, keeping the annotations
// it gives for the layer descriptor.
func buildZstdLayer(dir, goroot string, sp layerSpec) (*Layer, error) {
	tf, err := os.CreateTemp(dir, "tar-")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tf.Name())
	defer tf.Close()
	tw, size, err := writeSpecTar(tf, goroot, sp)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "blobs"), 0o755); err != nil {
		return nil, err
	}
	out, err := os.CreateTemp(dir, "blob-")
	if err != nil {
		return nil, err
	}
	defer os.Remove(out.Name())
	annotations := map[string]string{}
	h, diff := sha256.New(), sha256.New()
	zw, err := compressor.ZstdCompressor(io.MultiWriter(out, h), annotations, nil)
	if err == nil {
		_, err = io.Copy(zw, io.TeeReader(io.NewSectionReader(tf, 0, size), diff))
		if cerr := zw.Close(); err == nil {
			err = cerr
		}
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("compressing zstd:chunked: %w", err)
	}
	fi, err := os.Stat(out.Name())
	if err != nil {
		return nil, err
	}
	l := &Layer{
		Name: sp.name, About: sp.about,
		Digest: "sha256:" + hex.EncodeToString(h.Sum(nil)), Size: fi.Size(),
		DiffID:           "sha256:" + hex.EncodeToString(diff.Sum(nil)),
		UncompressedSize: size, Files: tw.files,
		MediaType: mediaTypeLayerZstd, Annotations: annotations,
	}
	if err := os.Rename(out.Name(), blobPath(dir, l.Digest)); err != nil {
		return nil, fmt.Errorf("storing blob: %w", err)
	}
	return l, nil
}

// decompressor returns the tar stream of a layer blob for the baseline:
// zstd when it starts with a zstd frame (the TOC and footer of zstd:chunked
// are skippable frames), else gzip. A layer pulled by digest has no media
// type to tell.
func decompressor(r *bufio.Reader) (io.Reader, error) {
	if magic, err := r.Peek(4); err == nil && bytes.Equal(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}) {
		zr, err := zstd.NewReader(r)
		if err != nil {
			return nil, err
		}
		return zr.IOReadCloser(), nil
	}
	return gzip.NewReader(r)
}

// zstdTargets judges the zstd:chunked targets of issue 12: bytes within
// 1.05x of the needed frames and TOC, and time within 1.2x of the same
// files fetched from eStargz, at each RTT.
func (b *bench) zstdTargets(rows []*row) []verdict {
	var out []verdict
	for _, w := range []string{wOneLargeZstd, wSmallFilesZstd} {
		var bytesParts, timeParts []string
		bytesMet, timeMet, bytesAny, timeAny := true, true, false, false
		for _, rtt := range b.cfg.rtts {
			r := b.find(rows, w, rtt, "sg-fetch")
			if r == nil {
				continue
			}
			m := median(r.samples)
			x := float64(m.c.BlobBytes) / float64(r.w.needed)
			bytesAny, bytesMet = true, bytesMet && x <= targetBytesRatio
			bytesParts = append(bytesParts, fmt.Sprintf("%s: %.3fx", rtt, x))
			if e := b.find(rows, baseWorkload(w), rtt, "sg-fetch"); e != nil {
				y := float64(m.wall) / float64(median(e.samples).wall)
				timeAny, timeMet = true, timeMet && y <= targetZstdTime
				timeParts = append(timeParts, fmt.Sprintf("%s: %.2fx (%s vs %s)", rtt, y, m.wall.Round(time.Millisecond), median(e.samples).wall.Round(time.Millisecond)))
			}
		}
		out = append(out,
			judge(w+" bytes <= 1.05 x needed", bytesAny, bytesMet, strings.Join(bytesParts, ", ")),
			judge(w+" time <= 1.2 x eStargz ("+baseWorkload(w)+")", timeAny, timeMet, strings.Join(timeParts, ", ")))
	}
	return out
}

// spanKind names the compressed spans of layer l in the report.
func spanKind(l *Layer) string {
	if l != nil && l.MediaType == mediaTypeLayerZstd {
		return "zstd frames"
	}
	return "gzip members"
}
