package testenv

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/containerd/stargz-snapshotter/estargz/zstdchunked"
	"github.com/klauspost/compress/zstd"
	"go.podman.io/storage/pkg/chunked/compressor"
)

// Media type and formats of zstd fixture layers.
const (
	// MediaTypeLayerZstd is the OCI media type of zstd and zstd:chunked
	// layers.
	MediaTypeLayerZstd = "application/vnd.oci.image.layer.v1.tar+zstd"
	// FormatZstdChunked marks a zstd:chunked layer, written by
	// containers/storage's compressor or estargz's zstdchunked package.
	FormatZstdChunked = "zstd:chunked"
	// FormatZstd marks a plain zstd tar layer without TOC.
	FormatZstd = "zstd"
)

// SparseName is the sparse file of ZstdChunked: real bytes around long runs
// of zeros, which containers/storage stores as "zeros" chunks.
const SparseName = GoPrefix + "/sparse.bin"

// XattrName is a file of the zstd:chunked fixtures with the extended
// attribute user.stargz-get = "xattr value".
const XattrName = GoPrefix + "/xattr.txt"

// addXattrFile adds a regular file with extended attributes (PAX
// SCHILY.xattr records, as tar writes them).
func (t *tarFile) addXattrFile(name string, data []byte, xattrs map[string]string) error {
	if err := t.parents(name); err != nil {
		return err
	}
	h := t.header(name, tar.TypeReg, 0o644)
	h.Size = int64(len(data))
	h.PAXRecords = map[string]string{}
	for k, v := range xattrs {
		h.PAXRecords["SCHILY.xattr."+k] = v
	}
	if err := t.tw.WriteHeader(h); err != nil {
		return fmt.Errorf("writing tar entry %s: %w", name, err)
	}
	if _, err := t.tw.Write(data); err != nil {
		return fmt.Errorf("writing tar entry %s: %w", name, err)
	}
	t.seen[name] = true
	d := sha256.Sum256(data)
	t.files = append(t.files, File{Name: name, Type: "reg", Mode: 0o644, Size: int64(len(data)), Digest: "sha256:" + hex.EncodeToString(d[:])})
	return nil
}

// zstdChunkedTar is the content of the containers/storage fixture layer:
// real files of which several span more than one chunk (the compressor
// cuts chunks at rolling-checksum boundaries, about every 64 KiB), a
// binary, a sparse file, a hardlink, a symlink and a whiteout.
func (b *builder) zstdChunkedTar() (*tarFile, error) {
	t, err := b.newTar()
	if err != nil {
		return nil, err
	}
	err = func() error {
		for _, d := range []string{"src/bufio", "src/encoding/json", "src/strconv"} {
			if err := t.addGoTree(d); err != nil {
				return err
			}
		}
		if err := t.addGoFile("src/unicode/tables.go"); err != nil {
			return err
		}
		asm := filepath.Join(b.goroot, "pkg", "tool", runtime.GOOS+"_"+runtime.GOARCH, "asm")
		if err := t.addHostFile(GoPrefix+"/pkg/tool/asm", asm); err != nil {
			return err
		}
		head, err := os.ReadFile(filepath.Join(b.goroot, "src", "bufio", "bufio.go"))
		if err != nil {
			return err
		}
		var sparse bytes.Buffer
		sparse.Write(head)
		sparse.Write(make([]byte, 3<<20))
		sparse.Write(head)
		sparse.Write(make([]byte, 1<<20))
		if err := t.addBytes(SparseName, 0o644, sparse.Bytes()); err != nil {
			return err
		}
		if err := t.addSymlink(GoPrefix+"/link-to-json", "src/encoding/json"); err != nil {
			return err
		}
		if err := t.addHardlink(GoPrefix+"/bin/hardlinked", GoPrefix+"/src/strconv/quote.go"); err != nil {
			return err
		}
		if err := t.addXattrFile(XattrName, []byte("a file with an extended attribute\n"), map[string]string{"user.stargz-get": "xattr value"}); err != nil {
			return err
		}
		// A whiteout, as a layer on top of another deletes a file.
		return t.addBytes(GoPrefix+"/src/sort/.wh.sort.go", 0o644, nil)
	}()
	if err != nil {
		t.discard()
		return nil, err
	}
	return t, nil
}

// containersLayer closes t and compresses it with containers/storage's
// zstd:chunked compressor (what podman, buildah and skopeo use).
func (b *builder) containersLayer(t *tarFile) (*Layer, error) {
	annotations := map[string]string{}
	l, err := b.compressTar(t, func(w io.Writer) (io.WriteCloser, error) {
		return compressor.ZstdCompressor(w, annotations, nil)
	})
	if err != nil {
		return nil, fmt.Errorf("compressing zstd:chunked: %w", err)
	}
	l.MediaType, l.Format, l.Extra = MediaTypeLayerZstd, FormatZstdChunked, annotations
	return l, nil
}

// estargzZstdLayer closes t and converts it with estargz.Build and the
// zstdchunked compressor (what nerdctl --zstdchunked and ctr-remote use).
func (b *builder) estargzZstdLayer(t *tarFile) (*Layer, error) {
	if err := t.close(); err != nil {
		return nil, err
	}
	src, err := os.Open(t.path)
	if err != nil {
		return nil, fmt.Errorf("opening tar: %w", err)
	}
	defer src.Close()
	annotations := map[string]string{}
	blob, err := estargz.Build(io.NewSectionReader(src, 0, t.size),
		estargz.WithChunkSize(256<<10), estargz.WithParallelism(estargzParallelism),
		estargz.WithCompression(&zstdCompression{Compressor: &zstdchunked.Compressor{CompressionLevel: zstd.SpeedDefault, Metadata: annotations}}))
	if err != nil {
		return nil, fmt.Errorf("building eStargz zstd:chunked: %w", err)
	}
	l, err := b.writeBlob(blob)
	if cerr := blob.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	size, err := blob.UncompressedSize()
	if err != nil {
		return nil, err
	}
	l.DiffID, l.TOCDigest, l.UncompressedSize = blob.DiffID().String(), blob.TOCDigest().String(), size
	l.MediaType, l.Format, l.Files, l.Extra = MediaTypeLayerZstd, FormatZstdChunked, t.files, annotations
	return l, nil
}

// zstdCompression pairs estargz's zstdchunked compressor and decompressor.
type zstdCompression struct {
	*zstdchunked.Compressor
	zstdchunked.Decompressor
}

// plainZstdLayer closes t and compresses it as one zstd stream.
func (b *builder) plainZstdLayer(t *tarFile) (*Layer, error) {
	l, err := b.compressTar(t, func(w io.Writer) (io.WriteCloser, error) { return zstd.NewWriter(w) })
	if err != nil {
		return nil, err
	}
	l.MediaType, l.Format = MediaTypeLayerZstd, FormatZstd
	return l, nil
}

// zstdImages builds ZstdChunked, ZstdNoAnnotations, ZstdEStargz, PlainZstd
// and ZMixed.
func (b *builder) zstdImages(f *Fixtures) error {
	t, err := b.zstdChunkedTar()
	if err != nil {
		return err
	}
	l, err := b.containersLayer(t)
	t.discard()
	if err != nil {
		return fmt.Errorf("zstdchunked: %w", err)
	}
	f.ZstdChunked = &Image{Name: "fixtures/zstdchunked", Tag: "v1", Platform: "linux/amd64", Layers: []*Layer{l}}
	bare := *l
	bare.NoAnnotations = true
	f.ZstdNoAnnotations = &Image{Name: "fixtures/zstdchunked-bare", Tag: "v1", Platform: "linux/amd64", Layers: []*Layer{&bare}}

	if t, err = b.zstdChunkedTar(); err != nil {
		return err
	}
	el, err := b.estargzZstdLayer(t)
	t.discard()
	if err != nil {
		return fmt.Errorf("zstdestargz: %w", err)
	}
	f.ZstdEStargz = &Image{Name: "fixtures/zstdestargz", Tag: "v1", Platform: "linux/amd64", Layers: []*Layer{el}}

	if t, err = b.newTar(); err != nil {
		return err
	}
	if err = t.addGoTree("src/sort"); err != nil {
		t.discard()
		return err
	}
	pl, err := b.plainZstdLayer(t)
	t.discard()
	if err != nil {
		return fmt.Errorf("plainzstd: %w", err)
	}
	f.PlainZstd = &Image{Name: "fixtures/plainzstd", Tag: "v1", Platform: "linux/amd64", Layers: []*Layer{pl}}

	// An image mixing formats: eStargz (src/bufio), then zstd:chunked
	// deleting a file of it and adding src/bytes, then plain zstd.
	if t, err = b.newTar(); err != nil {
		return err
	}
	err = t.addGoTree("src/bytes")
	if err == nil {
		err = t.addBytes(GoPrefix+"/src/bufio/.wh.scan.go", 0o644, nil)
	}
	var zl *Layer
	if err == nil {
		zl, err = b.containersLayer(t)
	}
	t.discard()
	if err != nil {
		return fmt.Errorf("zmixed: %w", err)
	}
	f.ZMixed = &Image{Name: "fixtures/zmixed", Tag: "v1", Platform: "linux/amd64",
		Layers: []*Layer{f.Multi.Layers[0], zl, pl}}
	return nil
}

// zstdProxies starts FLIPZSTD and FLAKYZSTD (see ScriptRegistries) in front
// of the registry at anon.
func (s *ScriptRegistries) zstdProxies(fx *Fixtures, anon string) error {
	l := fx.ZstdChunked.Layers[0]
	var tocAt int64
	if _, err := fmt.Sscanf(l.Extra["io.github.containers.zstd-chunked.manifest-position"], "%d:", &tocAt); err != nil {
		return fmt.Errorf("zstd:chunked fixture has no manifest-position: %w", err)
	}
	// frames matches ranged reads of the layer that start before its TOC.
	frames := func(r *http.Request) bool {
		var a int64
		if !strings.HasSuffix(r.URL.Path, "/blobs/"+l.Digest) {
			return false
		}
		_, err := fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-", &a)
		return err == nil && a < tocAt-8
	}
	for _, p := range []struct {
		name string
		rule Rule
	}{
		{"FLIPZSTD", Rule{Match: MatchAll(MatchBlobs, frames), Fault: Fault{Flip: 300}}},
		{"FLAKYZSTD", Rule{Match: MatchAll(MatchBlobs, frames, bigRange), Times: 2, Fault: Fault{CutAfter: 100_000}}},
	} {
		fp, err := StartFaultProxy(anon)
		if err != nil {
			return err
		}
		s.closers = append(s.closers, fp.Close)
		fp.Add(p.rule)
		s.Vars = append(s.Vars, p.name+"="+fx.ZstdChunked.Ref(fp.Host))
	}
	return nil
}
