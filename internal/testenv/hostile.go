package testenv

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"

	"github.com/containerd/stargz-snapshotter/estargz"
)

// HostileEntries names the entries of the Hostile fixture that must be
// refused, with a word the refusal must contain.
var HostileEntries = map[string]string{
	"../escape.txt":        "climbs out",
	"/abs.txt":             "absolute",
	"ok/../../climb.txt":   "climbs out",
	"evil":                 "outside the output directory",
	"evil/pwned.txt":       "symlink",
	"abslink/passwd":       "symlink",
	"ok/hl-missing":        "not in the layer",
	"ok/hl-out":            "climbs out",
	"ok/hl-abs":            "absolute",
	"ok/../ok/../../x.txt": "climbs out",
}

// hostile builds "fixtures/hostile:v1": one eStargz layer whose TOC holds
// entries that try to write outside the output directory, next to good
// ones (its Files). It is written with estargz's Writer, which keeps tar
// names as they are (estargz.Build would clean them).
func (b *builder) hostile() (*Image, error) {
	tb, files, err := b.hostileTar()
	if err != nil {
		return nil, err
	}
	var blob bytes.Buffer
	w := estargz.NewWriter(&blob)
	if err := w.AppendTar(bytes.NewReader(tb)); err != nil {
		return nil, fmt.Errorf("writing hostile eStargz: %w", err)
	}
	tocDigest, err := w.Close()
	if err != nil {
		return nil, fmt.Errorf("writing hostile eStargz: %w", err)
	}
	l, err := b.writeBlob(bytes.NewReader(blob.Bytes()))
	if err != nil {
		return nil, err
	}
	size, err := gunzipSize(blob.Bytes())
	if err != nil {
		return nil, err
	}
	l.DiffID, l.TOCDigest, l.UncompressedSize = w.DiffID(), tocDigest.String(), size
	l.MediaType, l.Format, l.Files = MediaTypeLayerGzip, FormatEStargz, files
	return &Image{Name: "fixtures/hostile", Tag: "v1", Platform: "linux/amd64", Layers: []*Layer{l}}, nil
}

// hostileGzip builds "fixtures/hostilegzip:v1": the tar of Hostile as a
// plain gzip layer.
func (b *builder) hostileGzip() (*Image, error) {
	tb, files, err := b.hostileTar()
	if err != nil {
		return nil, err
	}
	var blob bytes.Buffer
	zw := gzip.NewWriter(&blob)
	zw.Write(tb)
	if err := zw.Close(); err != nil {
		return nil, err
	}
	l, err := b.writeBlob(bytes.NewReader(blob.Bytes()))
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(tb)
	l.DiffID, l.UncompressedSize = "sha256:"+hex.EncodeToString(sum[:]), int64(len(tb))
	l.MediaType, l.Format, l.Files = MediaTypeLayerGzip, FormatGzip, files
	return &Image{Name: "fixtures/hostilegzip", Tag: "v1", Platform: "linux/amd64", Layers: []*Layer{l}}, nil
}

// hostileTar is the tar of the hostile fixtures and the entries of it that
// must come out right.
func (b *builder) hostileTar() ([]byte, []File, error) {
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	version, err := os.ReadFile(b.goroot + "/VERSION")
	if err != nil {
		return nil, nil, fmt.Errorf("reading VERSION: %w", err)
	}
	sum := sha256.Sum256(version)
	good := "sha256:" + hex.EncodeToString(sum[:])
	var files []File
	add := func(h *tar.Header, body []byte) error {
		h.ModTime, h.Format = ModTime, tar.FormatPAX
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(body))
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		_, err := tw.Write(body)
		return err
	}
	entries := []struct {
		h    *tar.Header
		body []byte
		ok   *File
	}{
		{&tar.Header{Name: "ok/", Typeflag: tar.TypeDir, Mode: 0o755}, nil, &File{Name: "ok", Type: "dir", Mode: 0o755}},
		{&tar.Header{Name: "ok/good.txt", Typeflag: tar.TypeReg, Mode: 0o644}, version, &File{Name: "ok/good.txt", Type: "reg", Mode: 0o644, Size: int64(len(version)), Digest: good}},
		// setuid and setgid are dropped unless asked to keep them.
		{&tar.Header{Name: "ok/suid", Typeflag: tar.TypeReg, Mode: 0o6755}, version, &File{Name: "ok/suid", Type: "reg", Mode: 0o755, Size: int64(len(version)), Digest: good}},
		{&tar.Header{Name: "ok/fifo", Typeflag: tar.TypeFifo, Mode: 0o644}, nil, nil},
		{&tar.Header{Name: "ok/null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3}, nil, nil},
		{&tar.Header{Name: "ok/rel-link", Typeflag: tar.TypeSymlink, Mode: 0o777, Linkname: "good.txt"}, nil, &File{Name: "ok/rel-link", Type: "symlink", Mode: 0o777, LinkName: "good.txt"}},
		{&tar.Header{Name: "../escape.txt", Typeflag: tar.TypeReg, Mode: 0o644}, []byte("escaped\n"), nil},
		{&tar.Header{Name: "/abs.txt", Typeflag: tar.TypeReg, Mode: 0o644}, []byte("absolute\n"), nil},
		{&tar.Header{Name: "ok/../../climb.txt", Typeflag: tar.TypeReg, Mode: 0o644}, []byte("climbed\n"), nil},
		{&tar.Header{Name: "ok/../ok/../../x.txt", Typeflag: tar.TypeReg, Mode: 0o644}, []byte("climbed\n"), nil},
		// A symlink out of the output directory, then a file through it.
		{&tar.Header{Name: "evil", Typeflag: tar.TypeSymlink, Linkname: "../canary"}, nil, nil},
		{&tar.Header{Name: "evil/pwned.txt", Typeflag: tar.TypeReg, Mode: 0o644}, []byte("pwned\n"), nil},
		// An absolute symlink is kept (it names a path of the image's own
		// root), but nothing is written through it.
		{&tar.Header{Name: "abslink", Typeflag: tar.TypeSymlink, Mode: 0o777, Linkname: "/etc"}, nil, &File{Name: "abslink", Type: "symlink", Mode: 0o777, LinkName: "/etc"}},
		{&tar.Header{Name: "abslink/passwd", Typeflag: tar.TypeReg, Mode: 0o644}, []byte("root::0:0::/:/bin/sh\n"), nil},
		{&tar.Header{Name: "ok/hl-missing", Typeflag: tar.TypeLink, Linkname: "no/such/file"}, nil, nil},
		{&tar.Header{Name: "ok/hl-out", Typeflag: tar.TypeLink, Linkname: "../canary/secret"}, nil, nil},
		{&tar.Header{Name: "ok/hl-abs", Typeflag: tar.TypeLink, Linkname: "/etc/passwd"}, nil, nil},
		{&tar.Header{Name: "ok/hl-good", Typeflag: tar.TypeLink, Mode: 0o644, Linkname: "ok/good.txt"}, nil, &File{Name: "ok/hl-good", Type: "hardlink", Mode: 0o644, LinkName: "ok/good.txt"}},
	}
	for _, e := range entries {
		if err := add(e.h, e.body); err != nil {
			return nil, nil, fmt.Errorf("writing hostile tar: %w", err)
		}
		if e.ok != nil {
			files = append(files, *e.ok)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, nil, err
	}
	return tb.Bytes(), files, nil
}

// unpinned builds "fixtures/unpinned:v1": an eStargz layer whose manifest
// lacks the TOC digest annotation, as some converters and registries that
// rewrite manifests leave it.
func (b *builder) unpinned() (*Image, error) {
	t, err := b.newTar()
	if err != nil {
		return nil, err
	}
	defer t.discard()
	if err := t.addGoTree("src/unicode/utf8"); err != nil {
		return nil, err
	}
	l, err := b.estargzLayer(t, nil, nil)
	if err != nil {
		return nil, err
	}
	l.NoAnnotations = true
	return &Image{Name: "fixtures/unpinned", Tag: "v1", Platform: "linux/amd64", Layers: []*Layer{l}}, nil
}

func gunzipSize(b []byte) (int64, error) {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return 0, err
	}
	return io.Copy(io.Discard, zr)
}
