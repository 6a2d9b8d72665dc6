package testenv

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
)

// fixturesVersion is part of the fixture cache key; bump it whenever the
// content or layout of the fixtures changes.
const fixturesVersion = "9"

// Media types and formats of fixture layers.
const (
	// MediaTypeLayerGzip is the OCI media type of every fixture layer;
	// eStargz layers are valid gzip tar layers.
	MediaTypeLayerGzip = "application/vnd.oci.image.layer.v1.tar+gzip"
	// FormatEStargz marks a layer built with estargz.Build.
	FormatEStargz = "estargz"
	// FormatGzip marks a plain gzip tar layer without TOC.
	FormatGzip = "gzip"
)

// ModTime is the modification time of every fixture tar entry, fixed so
// that builds are reproducible.
var ModTime = time.Date(2024, time.January, 2, 3, 4, 5, 0, time.UTC)

// GoPrefix is where the fixtures put files from GOROOT: GOROOT/src/net/net.go
// becomes "usr/local/go/src/net/net.go".
const GoPrefix = "usr/local/go"

// estargzChunkSize is the eStargz chunk size of the fixtures: estargz's
// default (Writer.ChunkSize zero means 4 MiB). Files larger than this, such
// as the compile binary in GoTree, span several chunks.
const estargzChunkSize = 4 << 20

// estargzParallelism pins estargz.Build's worker count, which decides where
// the parallel sub-blobs start, so that the same inputs give the same blob
// on any machine.
const estargzParallelism = 4

// File is the ground truth of one tar entry of a fixture layer.
type File struct {
	// Name is the entry's path without leading "./" or "/" and without
	// trailing "/", e.g. "usr/local/go/src/net/net.go".
	Name string `json:"name"`
	// Type is "reg", "dir", "symlink" or "hardlink", as in the eStargz TOC.
	Type string `json:"type"`
	// Mode holds the permission bits (tar header Mode & 07777).
	Mode int64 `json:"mode"`
	// Size is the content size of a regular file, zero otherwise.
	Size int64 `json:"size"`
	// LinkName is the target of a symlink (as written, relative or
	// absolute) or of a hardlink (the Name of an earlier entry).
	LinkName string `json:"linkName,omitempty"`
	// Digest is "sha256:<hex>" of a regular file's content, empty otherwise.
	Digest string `json:"digest,omitempty"`
}

// Layer is one fixture layer: a blob on disk and the entries of the tar it
// was built from.
type Layer struct {
	// BlobPath is the compressed blob's file.
	BlobPath string `json:"-"`
	// Digest is "sha256:<hex>" of the compressed blob, as in the manifest.
	Digest string `json:"digest"`
	// Size is the compressed blob's size in bytes.
	Size int64 `json:"size"`
	// DiffID is "sha256:<hex>" of the uncompressed tar (for eStargz
	// including the TOC entry, as the image config records it).
	DiffID string `json:"diffID"`
	// TOCDigest is the eStargz TOC digest, also in the layer's
	// "containerd.io/snapshot/stargz/toc.digest" annotation; empty for
	// plain gzip.
	TOCDigest string `json:"tocDigest,omitempty"`
	// MediaType is the layer's media type in the manifest.
	MediaType string `json:"mediaType"`
	// Format is FormatEStargz or FormatGzip.
	Format string `json:"format"`
	// UncompressedSize is the size of the uncompressed blob, also in the
	// "io.containers.estargz.uncompressed-size" annotation of eStargz layers.
	UncompressedSize int64 `json:"uncompressedSize"`
	// Files are the entries of the tar the layer was built from, in tar
	// order. estargz.Build reorders entries (prioritized files first) and
	// adds a landmark file, ".prefetch.landmark" when files were
	// prioritized and ".no.prefetch.landmark" otherwise; the landmarks are
	// not listed here.
	Files []File `json:"files"`
	// NoAnnotations leaves the eStargz annotations out of the manifest.
	NoAnnotations bool `json:"noAnnotations,omitempty"`
	// Extra are the annotations the writer of a zstd:chunked layer gave.
	Extra map[string]string `json:"extra,omitempty"`
}

// Annotations returns the annotations of the layer's manifest descriptor:
// the TOC digest and uncompressed size for eStargz, none for plain gzip.
func (l *Layer) Annotations() map[string]string {
	if l.Format == FormatZstdChunked && !l.NoAnnotations {
		a := map[string]string{}
		for k, v := range l.Extra {
			a[k] = v
		}
		if l.TOCDigest != "" {
			a[estargz.TOCJSONDigestAnnotation] = l.TOCDigest
		}
		return a
	}
	if l.Format != FormatEStargz || l.NoAnnotations {
		return nil
	}
	return map[string]string{
		estargz.TOCJSONDigestAnnotation:         l.TOCDigest,
		estargz.StoreUncompressedSizeAnnotation: strconv.FormatInt(l.UncompressedSize, 10),
	}
}

// Open opens the layer's compressed blob for reading.
func (l *Layer) Open() (*os.File, error) {
	f, err := os.Open(l.BlobPath)
	if err != nil {
		return nil, fmt.Errorf("opening layer blob: %w", err)
	}
	return f, nil
}

// Image is a fixture image: an OCI manifest with its config and layers.
type Image struct {
	// Name is the repository path, e.g. "fixtures/gotree".
	Name string `json:"name"`
	// Tag is the image's tag; empty for the platform images of an Index,
	// which are pushed by digest only.
	Tag string `json:"tag,omitempty"`
	// Platform is "os/arch" of the config, e.g. "linux/amd64".
	Platform string `json:"platform"`
	// Layers are the image's layers, base first.
	Layers []*Layer `json:"layers"`
	// Digest is the digest of the image manifest.
	Digest string `json:"digest"`
}

// Ref returns the image's reference on the registry at host:
// "HOST/NAME:TAG", or "HOST/NAME@DIGEST" when Tag is empty.
func (img *Image) Ref(host string) string {
	if img.Tag == "" {
		return host + "/" + img.Name + "@" + img.Digest
	}
	return host + "/" + img.Name + ":" + img.Tag
}

// Files returns the ground truth of all layers' entries, in layer order.
// Entries of later layers are appended after earlier ones; fixtures do not
// overwrite files across layers.
func (img *Image) Files() []File {
	var all []File
	for _, l := range img.Layers {
		all = append(all, l.Files...)
	}
	return all
}

// Index is a fixture image index (a multi-platform image).
type Index struct {
	// Name is the repository path, e.g. "fixtures/multiarch".
	Name string `json:"name"`
	// Tag is the index's tag.
	Tag string `json:"tag"`
	// Images are the platform images, in index order; their Name is the
	// index's and their Tag is empty.
	Images []*Image `json:"images"`
	// Digest is the digest of the index manifest.
	Digest string `json:"digest"`
}

// Ref returns the index's reference on the registry at host,
// "HOST/NAME:TAG".
func (ix *Index) Ref(host string) string {
	return host + "/" + ix.Name + ":" + ix.Tag
}

// Fixtures is the set of fixture images built by BuildFixtures.
type Fixtures struct {
	// Dir holds the blobs and fixtures.json.
	Dir string `json:"-"`
	// Key identifies the build inputs (fixture version, Go version,
	// GOROOT); a cached set is reused only when it matches.
	Key string `json:"key"`
	// GoRoot is the GOROOT the files were taken from.
	GoRoot string `json:"goRoot"`

	// GoTree is "fixtures/gotree:v1": one eStargz layer with GOROOT's
	// src/net, src/encoding, src/crypto, src/archive and src/compress
	// (with testdata), the compile binary as
	// "usr/local/go/pkg/tool/compile" (several chunks), and hand-made
	// entries: an empty file ("usr/local/go/empty"), an executable
	// ("usr/local/go/bin/hello.sh", 0755), a symlink
	// ("usr/local/go/link-to-net" -> "src/net"), a hardlink
	// ("usr/local/go/bin/hardlinked" -> "usr/local/go/src/net/net.go"), a
	// name with a space and a non-ASCII letter
	// ("usr/local/go/misc/name with space ü.txt") and a deep path
	// ("usr/local/go/deep/a/.../j/leaf.txt"). Prioritized files (so the
	// layer has ".prefetch.landmark"): "usr/local/go/VERSION" and
	// "usr/local/go/bin/hello.sh".
	GoTree *Image `json:"goTree"`
	// MinChunk is "fixtures/minchunk:v1": GOROOT/src/encoding built with
	// estargz.WithMinChunkSize(64 KiB), so small files share gzip members
	// and TOC entries have innerOffset.
	MinChunk *Image `json:"minChunk"`
	// Multi is "fixtures/multi:v1": three eStargz layers with src/bufio,
	// then src/bytes and src/strings, then src/sort.
	Multi *Image `json:"multi"`
	// Gzip is "fixtures/plaingzip:v1": one plain gzip tar layer (not
	// eStargz, no annotations) with src/bufio.
	Gzip *Image `json:"gzip"`
	// Index is "fixtures/multiarch:v1", an OCI index of a linux/amd64 and a
	// linux/arm64 image. Each has one eStargz layer with "platform.txt"
	// holding "linux/amd64\n" or "linux/arm64\n", plus real files:
	// src/unicode/utf8 for amd64, src/unicode/utf16 for arm64.
	Index *Index `json:"index"`
	// Hostile is "fixtures/hostile:v1": a layer whose TOC tries to write
	// outside the output directory (see HostileEntries); its Files are the
	// entries that must come out right.
	Hostile *Image `json:"hostile"`
	// Unpinned is "fixtures/unpinned:v1": an eStargz layer whose manifest
	// has no TOC digest annotation.
	Unpinned *Image `json:"unpinned"`
	// Layered is "fixtures/layered:v1": three layers whose upper layers
	// delete and replace files (whiteouts, an opaque directory, type
	// changes); its flattened view is what UnpackImage produces.
	Layered *Image `json:"layered"`
	// Mixed is "fixtures/mixed:v1": an eStargz layer, a plain gzip layer
	// and another eStargz layer (blobs shared with Multi and Gzip), as
	// images half converted to eStargz are.
	Mixed *Image `json:"mixed"`
	// ZstdChunked is "fixtures/zstdchunked:v1": one zstd:chunked layer
	// written by containers/storage's compressor (as podman pushes it)
	// with src/bufio, src/encoding/json, src/strconv,
	// src/unicode/tables.go, the asm binary as "usr/local/go/pkg/tool/asm"
	// (files of several chunks), SparseName (zeros chunks), a symlink
	// ("usr/local/go/link-to-json"), a hardlink
	// ("usr/local/go/bin/hardlinked" -> src/strconv/quote.go), a file with
	// an extended attribute (XattrName) and a whiteout
	// ("usr/local/go/src/sort/.wh.sort.go").
	ZstdChunked *Image `json:"zstdChunked"`
	// ZstdNoAnnotations is "fixtures/zstdchunked-bare:v1": the same blob
	// with its zstd:chunked annotations dropped.
	ZstdNoAnnotations *Image `json:"zstdNoAnnotations"`
	// ZstdEStargz is "fixtures/zstdestargz:v1": the same files written by
	// estargz.Build with its zstdchunked compressor (256 KiB chunks).
	ZstdEStargz *Image `json:"zstdEStargz"`
	// PlainZstd is "fixtures/plainzstd:v1": a plain tar+zstd layer (no
	// TOC) with src/sort.
	PlainZstd *Image `json:"plainZstd"`
	// ZMixed is "fixtures/zmixed:v1": Multi's first eStargz layer
	// (src/bufio), a zstd:chunked layer with src/bytes and a whiteout of
	// src/bufio/scan.go, and PlainZstd's layer.
	ZMixed *Image `json:"zMixed"`
	// PlainBig is "fixtures/plainbig:v1": a plain gzip layer of about
	// 30 MB: src/bufio, the toolchain binaries as
	// "usr/local/go/pkg/tool/NAME", src/net, a hardlink and a symlink.
	PlainBig *Image `json:"plainBig"`
	// CraneAppend is "fixtures/craneappend:v1": src/encoding as a layer
	// made by go-containerregistry's tarball and mutate.Append, as
	// "crane append" makes them.
	CraneAppend *Image `json:"craneAppend"`
	// HostileGzip is "fixtures/hostilegzip:v1": the tar of Hostile as a
	// plain gzip layer.
	HostileGzip *Image `json:"hostileGzip"`
}

// Images returns the single-platform images (GoTree, MinChunk, Multi,
// Gzip), not the Index.
func (f *Fixtures) Images() []*Image {
	return []*Image{f.GoTree, f.MinChunk, f.Multi, f.Gzip, f.Hostile, f.Unpinned, f.Layered, f.Mixed,
		f.ZstdChunked, f.ZstdNoAnnotations, f.ZstdEStargz, f.PlainZstd, f.ZMixed, f.PlainBig, f.CraneAppend, f.HostileGzip}
}

// Layers returns every layer of every fixture image, including those of
// the Index's platform images.
func (f *Fixtures) Layers() []*Layer {
	var ls []*Layer
	for _, img := range append(f.Images(), f.Index.Images...) {
		ls = append(ls, img.Layers...)
	}
	return ls
}

// BuildFixtures builds the fixture images into cacheDir, or reuses a
// complete set built there before from the same inputs (several test
// packages of one "go test ./..." then share one build). A good cacheDir is
// filepath.Join(os.TempDir(), "stargz-get-fixtures").
//
// A set is built in a temporary directory and renamed into place with its
// fixtures.json, so a set that is present is complete.
func BuildFixtures(cacheDir string) (*Fixtures, error) {
	goroot, err := GoRoot()
	if err != nil {
		return nil, err
	}
	key := fixturesKey(goroot)
	var f *Fixtures
	_, err = CachedSet(cacheDir, key,
		func(dir string) (err error) {
			f, err = loadFixtures(dir, key)
			return err
		},
		func(dir string) error {
			if _, err := buildFixtures(dir, goroot, key); err != nil {
				return fmt.Errorf("building fixtures: %w", err)
			}
			return nil
		})
	return f, err
}

// fixturesKey names a build's inputs.
func fixturesKey(goroot string) string {
	h := sha256.Sum256([]byte(fixturesVersion + "\n" + runtime.Version() + "\n" + goroot))
	return hex.EncodeToString(h[:6])
}

const fixturesJSON = "fixtures.json"

// loadFixtures reads a complete fixture set from dir.
func loadFixtures(dir, key string) (*Fixtures, error) {
	b, err := os.ReadFile(filepath.Join(dir, fixturesJSON))
	if err != nil {
		return nil, err
	}
	var f Fixtures
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", fixturesJSON, err)
	}
	if f.Key != key || f.GoTree == nil || f.MinChunk == nil || f.Multi == nil || f.Gzip == nil || f.Index == nil || f.Hostile == nil || f.Unpinned == nil || f.Layered == nil || f.Mixed == nil ||
		f.ZstdChunked == nil || f.ZstdNoAnnotations == nil || f.ZstdEStargz == nil || f.PlainZstd == nil || f.ZMixed == nil {
		return nil, fmt.Errorf("%s: not a fixture set for key %s", dir, key)
	}
	f.setDir(dir)
	for _, l := range f.Layers() {
		fi, err := os.Stat(l.BlobPath)
		if err != nil {
			return nil, err
		}
		if fi.Size() != l.Size {
			return nil, fmt.Errorf("%s: size %d, want %d", l.BlobPath, fi.Size(), l.Size)
		}
	}
	return &f, nil
}

// setDir points Dir and every layer's BlobPath into dir.
func (f *Fixtures) setDir(dir string) {
	f.Dir = dir
	for _, l := range f.Layers() {
		l.BlobPath = blobPath(dir, l.Digest)
	}
}

func blobPath(dir, digest string) string {
	return filepath.Join(dir, "blobs", strings.Replace(digest, ":", "-", 1))
}

// buildFixtures builds every fixture into dir and writes fixtures.json.
func buildFixtures(dir, goroot, key string) (*Fixtures, error) {
	if err := os.Mkdir(filepath.Join(dir, "blobs"), 0o755); err != nil {
		return nil, fmt.Errorf("creating blob dir: %w", err)
	}
	b := &builder{dir: dir, goroot: goroot}
	f := &Fixtures{Dir: dir, Key: key, GoRoot: goroot}
	var err error
	if f.GoTree, err = b.goTree(); err != nil {
		return nil, fmt.Errorf("gotree: %w", err)
	}
	if f.MinChunk, err = b.minChunk(); err != nil {
		return nil, fmt.Errorf("minchunk: %w", err)
	}
	if f.Multi, err = b.multi(); err != nil {
		return nil, fmt.Errorf("multi: %w", err)
	}
	if f.Gzip, err = b.plainGzip(); err != nil {
		return nil, fmt.Errorf("plaingzip: %w", err)
	}
	if f.Index, err = b.multiArch(); err != nil {
		return nil, fmt.Errorf("multiarch: %w", err)
	}
	if f.Hostile, err = b.hostile(); err != nil {
		return nil, fmt.Errorf("hostile: %w", err)
	}
	if f.Unpinned, err = b.unpinned(); err != nil {
		return nil, fmt.Errorf("unpinned: %w", err)
	}
	if f.Layered, err = b.layered(); err != nil {
		return nil, fmt.Errorf("layered: %w", err)
	}
	if f.PlainBig, err = b.plainBig(); err != nil {
		return nil, fmt.Errorf("plainbig: %w", err)
	}
	if f.CraneAppend, err = b.craneAppend(); err != nil {
		return nil, fmt.Errorf("craneappend: %w", err)
	}
	if f.HostileGzip, err = b.hostileGzip(); err != nil {
		return nil, fmt.Errorf("hostilegzip: %w", err)
	}
	f.Mixed = &Image{Name: "fixtures/mixed", Tag: "v1", Platform: "linux/amd64",
		Layers: []*Layer{f.Multi.Layers[0], f.Gzip.Layers[0], f.Multi.Layers[2]}}
	if err := b.zstdImages(f); err != nil {
		return nil, err
	}
	if err := setDigests(f); err != nil {
		return nil, err
	}
	js, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding %s: %w", fixturesJSON, err)
	}
	if err := os.WriteFile(filepath.Join(dir, fixturesJSON), js, 0o644); err != nil {
		return nil, fmt.Errorf("writing %s: %w", fixturesJSON, err)
	}
	return f, nil
}

// builder builds fixture layers into dir from files of goroot.
type builder struct {
	dir    string
	goroot string
}

func (b *builder) goTree() (*Image, error) {
	t, err := b.newTar()
	if err != nil {
		return nil, err
	}
	defer t.discard()
	if err := t.addGoFile("VERSION"); err != nil {
		return nil, err
	}
	for _, d := range []string{"src/net", "src/encoding", "src/crypto", "src/archive", "src/compress"} {
		if err := t.addGoTree(d); err != nil {
			return nil, err
		}
	}
	compile := filepath.Join(b.goroot, "pkg", "tool", runtime.GOOS+"_"+runtime.GOARCH, "compile")
	if err := t.addHostFile(GoPrefix+"/pkg/tool/compile", compile); err != nil {
		return nil, err
	}
	hand := []func() error{
		func() error { return t.addBytes(GoPrefix+"/empty", 0o644, nil) },
		func() error {
			return t.addBytes(GoPrefix+"/bin/hello.sh", 0o755, []byte("#!/bin/sh\necho hello from stargz-get\n"))
		},
		func() error { return t.addSymlink(GoPrefix+"/link-to-net", "src/net") },
		func() error { return t.addHardlink(GoPrefix+"/bin/hardlinked", GoPrefix+"/src/net/net.go") },
		func() error {
			return t.addBytes(GoPrefix+"/misc/name with space ü.txt", 0o644, []byte("a name with a space and a non-ASCII letter\n"))
		},
		func() error {
			return t.addBytes(GoPrefix+"/deep/a/b/c/d/e/f/g/h/i/j/leaf.txt", 0o600, []byte("deep leaf\n"))
		},
	}
	for _, add := range hand {
		if err := add(); err != nil {
			return nil, err
		}
	}
	l, err := b.estargzLayer(t,
		[]estargz.Option{estargz.WithPrioritizedFiles([]string{GoPrefix + "/VERSION", GoPrefix + "/bin/hello.sh"})},
		func(r *estargz.Reader) error {
			if _, ok := r.Lookup(estargz.PrefetchLandmark); !ok {
				return fmt.Errorf("no %s in TOC", estargz.PrefetchLandmark)
			}
			name := GoPrefix + "/pkg/tool/compile"
			e, ok := r.Lookup(name)
			if !ok {
				return fmt.Errorf("no %s in TOC", name)
			}
			chunks := 0
			for off := int64(0); off < e.Size; chunks++ {
				c, ok := r.ChunkEntryForOffset(name, off)
				if !ok {
					return fmt.Errorf("no chunk of %s at %d", name, off)
				}
				off = c.ChunkOffset + c.ChunkSize
			}
			if chunks <= 3 {
				return fmt.Errorf("%s has %d chunks, want more than 3", name, chunks)
			}
			return nil
		})
	if err != nil {
		return nil, err
	}
	return &Image{Name: "fixtures/gotree", Tag: "v1", Platform: "linux/amd64", Layers: []*Layer{l}}, nil
}

func (b *builder) minChunk() (*Image, error) {
	t, err := b.newTar()
	if err != nil {
		return nil, err
	}
	defer t.discard()
	if err := t.addGoTree("src/encoding"); err != nil {
		return nil, err
	}
	l, err := b.estargzLayer(t, []estargz.Option{estargz.WithMinChunkSize(64 << 10)}, func(r *estargz.Reader) error {
		for _, f := range t.files {
			if f.Type != "reg" {
				continue
			}
			if e, ok := r.Lookup(f.Name); ok && e.InnerOffset > 0 {
				return nil
			}
		}
		return errors.New("no TOC entry has innerOffset > 0")
	})
	if err != nil {
		return nil, err
	}
	return &Image{Name: "fixtures/minchunk", Tag: "v1", Platform: "linux/amd64", Layers: []*Layer{l}}, nil
}

func (b *builder) multi() (*Image, error) {
	img := &Image{Name: "fixtures/multi", Tag: "v1", Platform: "linux/amd64"}
	for _, dirs := range [][]string{{"src/bufio"}, {"src/bytes", "src/strings"}, {"src/sort"}} {
		t, err := b.newTar()
		if err != nil {
			return nil, err
		}
		for _, d := range dirs {
			if err := t.addGoTree(d); err != nil {
				t.discard()
				return nil, err
			}
		}
		l, err := b.estargzLayer(t, nil, nil)
		t.discard()
		if err != nil {
			return nil, err
		}
		img.Layers = append(img.Layers, l)
	}
	return img, nil
}

func (b *builder) plainGzip() (*Image, error) {
	t, err := b.newTar()
	if err != nil {
		return nil, err
	}
	defer t.discard()
	if err := t.addGoTree("src/bufio"); err != nil {
		return nil, err
	}
	l, err := b.compressTar(t, func(w io.Writer) (io.WriteCloser, error) { return gzip.NewWriter(w), nil })
	if err != nil {
		return nil, err
	}
	l.MediaType, l.Format = MediaTypeLayerGzip, FormatGzip
	return &Image{Name: "fixtures/plaingzip", Tag: "v1", Platform: "linux/amd64", Layers: []*Layer{l}}, nil
}

func (b *builder) multiArch() (*Index, error) {
	ix := &Index{Name: "fixtures/multiarch", Tag: "v1"}
	for _, p := range []struct{ platform, dir string }{
		{"linux/amd64", "src/unicode/utf8"},
		{"linux/arm64", "src/unicode/utf16"},
	} {
		t, err := b.newTar()
		if err != nil {
			return nil, err
		}
		err = t.addBytes("platform.txt", 0o644, []byte(p.platform+"\n"))
		if err == nil {
			err = t.addGoTree(p.dir)
		}
		var l *Layer
		if err == nil {
			l, err = b.estargzLayer(t, nil, nil)
		}
		t.discard()
		if err != nil {
			return nil, err
		}
		ix.Images = append(ix.Images, &Image{Name: ix.Name, Platform: p.platform, Layers: []*Layer{l}})
	}
	return ix, nil
}

// estargzLayer closes t, converts it with estargz.Build, stores the blob
// and checks its TOC against the ground truth, then runs check, if any.
func (b *builder) estargzLayer(t *tarFile, opts []estargz.Option, check func(*estargz.Reader) error) (*Layer, error) {
	if err := t.close(); err != nil {
		return nil, err
	}
	src, err := os.Open(t.path)
	if err != nil {
		return nil, fmt.Errorf("opening tar: %w", err)
	}
	defer src.Close()
	opts = append([]estargz.Option{
		estargz.WithChunkSize(estargzChunkSize),
		estargz.WithParallelism(estargzParallelism),
	}, opts...)
	blob, err := estargz.Build(io.NewSectionReader(src, 0, t.size), opts...)
	if err != nil {
		return nil, fmt.Errorf("building eStargz: %w", err)
	}
	l, err := b.writeBlob(blob)
	if cerr := blob.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("closing eStargz blob: %w", cerr)
	}
	if err != nil {
		return nil, err
	}
	size, err := blob.UncompressedSize()
	if err != nil {
		return nil, fmt.Errorf("eStargz blob size: %w", err)
	}
	l.DiffID, l.TOCDigest, l.UncompressedSize = blob.DiffID().String(), blob.TOCDigest().String(), size
	l.MediaType, l.Format, l.Files = MediaTypeLayerGzip, FormatEStargz, t.files
	if err := verifyEStargz(l, check); err != nil {
		return nil, fmt.Errorf("verifying eStargz layer: %w", err)
	}
	return l, nil
}

// verifyEStargz opens the layer's TOC with estargz.Open and compares it
// with the ground truth: same entries (besides landmarks), types, modes,
// sizes, link names and digests.
func verifyEStargz(l *Layer, check func(*estargz.Reader) error) error {
	f, err := l.Open()
	if err != nil {
		return err
	}
	defer f.Close()
	r, err := estargz.Open(io.NewSectionReader(f, 0, l.Size))
	if err != nil {
		return fmt.Errorf("opening TOC: %w", err)
	}
	if got := r.TOCDigest().String(); got != l.TOCDigest {
		return fmt.Errorf("TOC digest %s, Build said %s", got, l.TOCDigest)
	}
	byName := make(map[string]File, len(l.Files))
	for _, f := range l.Files {
		byName[f.Name] = f
	}
	for _, want := range l.Files {
		e, ok := r.Lookup(want.Name)
		if !ok {
			return fmt.Errorf("%s: not in TOC", want.Name)
		}
		got := File{Name: want.Name, Type: e.Type, Mode: e.Mode & 0o7777, Size: e.Size, LinkName: e.LinkName, Digest: e.Digest}
		if want.Type == "hardlink" {
			// Lookup resolves a hardlink to its target's entry.
			target, ok := byName[want.LinkName]
			if !ok || e.Name != want.LinkName || e.Digest != target.Digest {
				return fmt.Errorf("%s: hardlink resolves to %q, want %q", want.Name, e.Name, want.LinkName)
			}
			got = File{Name: want.Name, Type: "hardlink", Mode: e.Mode & 0o7777, LinkName: want.LinkName}
		}
		if got != want {
			return fmt.Errorf("TOC entry %+v, want %+v", got, want)
		}
	}
	if check != nil {
		return check(r)
	}
	return nil
}

// writeBlob copies r into a blob file named by its digest.
func (b *builder) writeBlob(r io.Reader) (*Layer, error) {
	tmp, err := os.CreateTemp(b.dir, "blob-")
	if err != nil {
		return nil, fmt.Errorf("creating blob: %w", err)
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), r)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("writing blob: %w", err)
	}
	l := &Layer{Digest: "sha256:" + hex.EncodeToString(h.Sum(nil)), Size: n}
	l.BlobPath = blobPath(b.dir, l.Digest)
	if err := os.Rename(tmp.Name(), l.BlobPath); err != nil {
		return nil, fmt.Errorf("storing blob: %w", err)
	}
	return l, nil
}

// tarFile writes an uncompressed tar to a temp file and records the ground
// truth of each entry. Parent directories get explicit entries (0755)
// before their first child.
type tarFile struct {
	goroot string
	path   string
	f      *os.File
	hash   hash.Hash // sha256 of the tar bytes
	tw     *tar.Writer
	files  []File
	seen   map[string]bool
	size   int64
}

func (b *builder) newTar() (*tarFile, error) {
	f, err := os.CreateTemp(b.dir, "tar-")
	if err != nil {
		return nil, fmt.Errorf("creating tar: %w", err)
	}
	h := sha256.New()
	return &tarFile{
		goroot: b.goroot,
		path:   f.Name(),
		f:      f,
		hash:   h,
		tw:     tar.NewWriter(io.MultiWriter(f, h)),
		seen:   map[string]bool{},
	}, nil
}

// close finishes the tar and records its size.
func (t *tarFile) close() error {
	if err := t.tw.Close(); err != nil {
		return fmt.Errorf("finishing tar: %w", err)
	}
	fi, err := t.f.Stat()
	if err != nil {
		return fmt.Errorf("finishing tar: %w", err)
	}
	t.size = fi.Size()
	if err := t.f.Close(); err != nil {
		return fmt.Errorf("finishing tar: %w", err)
	}
	return nil
}

// digest returns "sha256:<hex>" of the closed tar.
func (t *tarFile) digest() string { return "sha256:" + hex.EncodeToString(t.hash.Sum(nil)) }

// discard removes the temp file.
func (t *tarFile) discard() {
	t.f.Close()
	os.Remove(t.path)
}

func (t *tarFile) header(name string, typ byte, mode int64) *tar.Header {
	return &tar.Header{
		Name: name, Typeflag: typ, Mode: mode, ModTime: ModTime,
		Uid: 0, Gid: 0, Uname: "root", Gname: "root", Format: tar.FormatPAX,
	}
}

// parents adds entries for the missing parent directories of name.
func (t *tarFile) parents(name string) error {
	dir := path.Dir(name)
	if dir == "." || t.seen[dir] {
		return nil
	}
	return t.addDir(dir)
}

func (t *tarFile) addDir(name string) error {
	if err := t.parents(name); err != nil {
		return err
	}
	if t.seen[name] {
		return nil
	}
	h := t.header(name+"/", tar.TypeDir, 0o755)
	if err := t.tw.WriteHeader(h); err != nil {
		return fmt.Errorf("writing tar entry %s: %w", name, err)
	}
	t.seen[name] = true
	t.files = append(t.files, File{Name: name, Type: "dir", Mode: 0o755})
	return nil
}

// addReg adds a regular file with size bytes from r.
func (t *tarFile) addReg(name string, mode int64, size int64, r io.Reader) error {
	if err := t.parents(name); err != nil {
		return err
	}
	h := t.header(name, tar.TypeReg, mode)
	h.Size = size
	if err := t.tw.WriteHeader(h); err != nil {
		return fmt.Errorf("writing tar entry %s: %w", name, err)
	}
	d := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(t.tw, d), r, size); err != nil {
		return fmt.Errorf("writing tar entry %s: %w", name, err)
	}
	t.seen[name] = true
	t.files = append(t.files, File{Name: name, Type: "reg", Mode: mode, Size: size, Digest: "sha256:" + hex.EncodeToString(d.Sum(nil))})
	return nil
}

func (t *tarFile) addBytes(name string, mode int64, data []byte) error {
	return t.addReg(name, mode, int64(len(data)), strings.NewReader(string(data)))
}

// addHostFile adds the regular file at src as name. Modes are normalized
// to 0644, or 0755 when any execute bit is set, so that fixtures from a
// read-only GOROOT (a module-cache toolchain) can be written out again.
func (t *tarFile) addHostFile(name, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("adding file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("adding file: %w", err)
	}
	mode := int64(0o644)
	if fi.Mode().Perm()&0o111 != 0 {
		mode = 0o755
	}
	return t.addReg(name, mode, fi.Size(), f)
}

func (t *tarFile) addGoFile(rel string) error {
	return t.addHostFile(GoPrefix+"/"+rel, filepath.Join(t.goroot, filepath.FromSlash(rel)))
}

// addGoTree adds GOROOT/rel recursively as GoPrefix/rel, in lexical order.
// Only directories and regular files are taken.
func (t *tarFile) addGoTree(rel string) error {
	root := filepath.Join(t.goroot, filepath.FromSlash(rel))
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("walking GOROOT: %w", err)
		}
		r, err := filepath.Rel(t.goroot, p)
		if err != nil {
			return err
		}
		name := GoPrefix + "/" + filepath.ToSlash(r)
		switch {
		case d.IsDir():
			return t.addDir(name)
		case d.Type().IsRegular():
			return t.addHostFile(name, p)
		default:
			return nil
		}
	})
}

func (t *tarFile) addSymlink(name, target string) error {
	if err := t.parents(name); err != nil {
		return err
	}
	h := t.header(name, tar.TypeSymlink, 0o777)
	h.Linkname = target
	if err := t.tw.WriteHeader(h); err != nil {
		return fmt.Errorf("writing tar entry %s: %w", name, err)
	}
	t.seen[name] = true
	t.files = append(t.files, File{Name: name, Type: "symlink", Mode: 0o777, LinkName: target})
	return nil
}

// addHardlink adds name as a hard link to the earlier entry target. Its
// mode is the target's, as a hard link shares the target's inode.
func (t *tarFile) addHardlink(name, target string) error {
	var mode int64 = -1
	for _, f := range t.files {
		if f.Name == target && f.Type == "reg" {
			mode = f.Mode
		}
	}
	if mode < 0 {
		return fmt.Errorf("adding hardlink %s: no regular file %s before it", name, target)
	}
	if err := t.parents(name); err != nil {
		return err
	}
	h := t.header(name, tar.TypeLink, mode)
	h.Linkname = target
	if err := t.tw.WriteHeader(h); err != nil {
		return fmt.Errorf("writing tar entry %s: %w", name, err)
	}
	t.seen[name] = true
	t.files = append(t.files, File{Name: name, Type: "hardlink", Mode: mode, LinkName: target})
	return nil
}
