package testenv

import (
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// plainBig is a plain gzip layer (archive/tar + compress/gzip at the
// default level, as docker writes layers) of about 30 MB: GOROOT's
// src/bufio first, then the toolchain binaries of pkg/tool, then src/net,
// so that a file early in it is far from its end.
func (b *builder) plainBig() (*Image, error) {
	t, err := b.newTar()
	if err != nil {
		return nil, err
	}
	defer t.discard()
	if err := t.addGoTree("src/bufio"); err != nil {
		return nil, err
	}
	tools := filepath.Join(b.goroot, "pkg", "tool", runtime.GOOS+"_"+runtime.GOARCH)
	for _, n := range []string{"compile", "link", "vet", "fix", "cover", "asm", "cgo"} {
		if err := t.addHostFile(GoPrefix+"/pkg/tool/"+n, filepath.Join(tools, n)); err != nil {
			return nil, err
		}
	}
	if err := t.addGoTree("src/net"); err != nil {
		return nil, err
	}
	if err := t.addHardlink(GoPrefix+"/bin/hardlinked", GoPrefix+"/src/net/net.go"); err != nil {
		return nil, err
	}
	if err := t.addSymlink(GoPrefix+"/link-to-net", "src/net"); err != nil {
		return nil, err
	}
	l, err := b.compressTar(t, func(w io.Writer) (io.WriteCloser, error) { return gzip.NewWriter(w), nil })
	if err != nil {
		return nil, err
	}
	l.MediaType, l.Format = MediaTypeLayerGzip, FormatGzip
	return &Image{Name: "fixtures/plainbig", Tag: "v1", Platform: "linux/amd64", Layers: []*Layer{l}}, nil
}

// craneAppend is a layer made the way "crane append" makes one: the tar
// handed to go-containerregistry's tarball.LayerFromOpener, compressed by
// it, appended to an image with mutate.Append.
func (b *builder) craneAppend() (*Image, error) {
	t, err := b.newTar()
	if err != nil {
		return nil, err
	}
	defer t.discard()
	if err := t.addGoTree("src/encoding"); err != nil {
		return nil, err
	}
	if err := t.close(); err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return os.Open(t.path) })
	if err != nil {
		return nil, fmt.Errorf("crane-style layer: %w", err)
	}
	img, err := mutate.Append(empty.Image, mutate.Addendum{Layer: layer})
	if err != nil {
		return nil, fmt.Errorf("appending layer: %w", err)
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, err
	}
	rc, err := layers[0].Compressed()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	l, err := b.writeBlob(rc)
	if err != nil {
		return nil, err
	}
	mt, err := layers[0].MediaType()
	if err != nil {
		return nil, err
	}
	l.DiffID, l.UncompressedSize = t.digest(), t.size
	l.MediaType, l.Format, l.Files = string(mt), FormatGzip, t.files
	return &Image{Name: "fixtures/craneappend", Tag: "v1", Platform: "linux/amd64", Layers: []*Layer{l}}, nil
}

// compressTar closes t and writes it through the compressor zw makes as
// a blob.
func (b *builder) compressTar(t *tarFile, zw func(io.Writer) (io.WriteCloser, error)) (*Layer, error) {
	if err := t.close(); err != nil {
		return nil, err
	}
	src, err := os.Open(t.path)
	if err != nil {
		return nil, fmt.Errorf("opening tar: %w", err)
	}
	defer src.Close()
	pr, pw := io.Pipe()
	go func() {
		w, err := zw(pw)
		if err == nil {
			_, err = io.Copy(w, src)
			if cerr := w.Close(); err == nil {
				err = cerr
			}
		}
		pw.CloseWithError(err)
	}()
	l, err := b.writeBlob(pr)
	if err != nil {
		return nil, err
	}
	l.DiffID, l.UncompressedSize, l.Files = t.digest(), t.size, t.files
	return l, nil
}
