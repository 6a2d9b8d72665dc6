package main

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"

	"github.com/stargz-get/stargz-get/internal/testenv"
	"github.com/stargz-get/stargz-get/pkg/toc"
)

// layersVersion is part of the layer cache key; bump it whenever the
// content, layout or build options of the benchmark layers change.
const layersVersion = "1"

const (
	// chunkSize is estargz's default chunk size (what converters write):
	// files larger than 4 MiB span several gzip members.
	chunkSize = 4 << 20
	// buildParallelism pins estargz.Build's worker count, which decides
	// where its parallel sub-blobs start, so that the same GOROOT gives the
	// same blobs on any machine (as internal/testenv does).
	buildParallelism = 4
	// mediaTypeLayer is the OCI media type of the layers; eStargz layers
	// are valid gzip tar layers.
	mediaTypeLayer = "application/vnd.oci.image.layer.v1.tar+gzip"
)

// modTime is the modification time of every tar entry, fixed so that the
// layers are reproducible.
var modTime = time.Date(2024, time.January, 2, 3, 4, 5, 0, time.UTC)

// tree is a directory of GOROOT put into a layer under a prefix.
type tree struct {
	src    string // relative to GOROOT, slash-separated; "" is GOROOT itself
	prefix string // name of src in the layer
}

// layerSpec says what goes into one benchmark layer: trees, then ops.
type layerSpec struct {
	name  string
	about string
	trees []tree
	ops   []op
}

// op is one step of building a layer of the W4 image (see w4.go).
type op struct {
	kind string // opTree, opFile, opWhiteout, opOpaque, opSymlink, opHardlink, opDir
	name string // name in the layer (for opOpaque, the directory)
	src  string // GOROOT-relative source, slash-separated (opTree, opFile)
	mode int64  // opFile: 0 means 0644, or 0755 when the source is executable
	link string // opSymlink, opHardlink: the target
}

const (
	opTree     = "tree"
	opFile     = "file"
	opWhiteout = "whiteout" // name is the deleted path; the entry is DIR/.wh.BASE
	opOpaque   = "opaque"
	opSymlink  = "symlink"
	opHardlink = "hardlink"
	opDir      = "dir"
)

// group is a set of layers built and cached together: the single-layer
// images of W1-W3, or the layers of the W4 image.
type group struct {
	name  string
	specs []layerSpec
	// plan, when set, fills in the specs' ops from GOROOT; it runs only
	// when the group is built, so version must change whenever it does.
	plan    func(goroot string) ([]layerSpec, error)
	version string
	// buildLayer builds one layer; nil means buildLayer (eStargz).
	buildLayer func(dir, goroot string, sp layerSpec) (*Layer, error)
}

// mainGroup is the layers of W1-W3.
var mainGroup = &group{name: "main", specs: specs}

// specs are the benchmark layers. All content is real files of the Go
// toolchain (`go env GOROOT`), so the layers are the same on every machine
// with the same Go version and need nothing but Go.
var specs = []layerSpec{
	{
		name:  "big",
		about: "the whole GOROOT under usr/local/go: compiler and tool binaries, the go command, sources, tests",
		trees: []tree{{"", "usr/local/go"}},
	},
	{
		name:  "many",
		about: "GOROOT/src twice, under usr/local/go/src and usr/src/go-copy/src: many small real text files",
		trees: []tree{{"src", "usr/local/go/src"}, {"src", "usr/src/go-copy/src"}},
	},
	{
		name:  "small",
		about: "GOROOT/src under usr/local/go/src: the second whole-layer size",
		trees: []tree{{"src", "usr/local/go/src"}},
	},
}

// File is the ground truth of one tar entry.
type File struct {
	Name   string `json:"name"`
	Type   string `json:"type"` // "reg", "dir", "symlink" or "hardlink"
	Size   int64  `json:"size,omitempty"`
	Digest string `json:"digest,omitempty"`
	Mode   int64  `json:"mode,omitempty"` // permission bits (not recorded in sets built before W4)
	Link   string `json:"link,omitempty"` // symlink or hardlink target
}

// Layer is one built benchmark layer.
type Layer struct {
	Name             string  `json:"name"`
	About            string  `json:"about"`
	Digest           string  `json:"digest"`
	Size             int64   `json:"size"`
	DiffID           string  `json:"diffID"`
	TOCDigest        string  `json:"tocDigest"`
	UncompressedSize int64   `json:"uncompressedSize"`
	BuildSeconds     float64 `json:"buildSeconds"`
	Files            []File  `json:"files"`
	// MediaType and Annotations, when set, are the layer descriptor's
	// (zstd:chunked layers); otherwise gzip and the eStargz annotations.
	MediaType   string            `json:"mediaType,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`

	blobPath string
	toc      *toc.TOC      // read by readTOC
	tocTime  time.Duration // what toc.Read took on the local blob (CPU only)
}

// Regular returns the layer's regular files.
func (l *Layer) Regular() []File {
	var fs []File
	for _, f := range l.Files {
		if f.Type == "reg" {
			fs = append(fs, f)
		}
	}
	return fs
}

// Set is the built layers with the key of their inputs.
type Set struct {
	Key    string   `json:"key"`
	GoRoot string   `json:"goRoot"`
	Layers []*Layer `json:"layers"`

	dir    string
	cached bool
}

// Layer returns the layer named name.
func (s *Set) Layer(name string) *Layer {
	for _, l := range s.Layers {
		if l.Name == name {
			return l
		}
	}
	return nil
}

const setJSON = "layers.json"

// buildLayers builds the layers of g into cacheDir, or reuses a complete
// set built there before from the same inputs. A set is built in a
// temporary directory and renamed into place, so a set that is present is
// complete.
func buildLayers(cacheDir string, g *group, logf func(string, ...any)) (*Set, error) {
	goroot, err := testenv.GoRoot()
	if err != nil {
		return nil, err
	}
	key := g.key(goroot)
	var s *Set
	built := false
	_, err = testenv.CachedSet(cacheDir, key,
		func(dir string) (err error) {
			s, err = loadSet(dir, key, len(g.specs))
			return err
		},
		func(dir string) error {
			built = true
			return g.build(dir, goroot, key, logf)
		})
	if err != nil {
		return nil, err
	}
	s.cached = !built
	return s, nil
}

// build writes the layers of g and their set file into dir.
func (g *group) build(dir, goroot, key string, logf func(string, ...any)) error {
	sps := g.specs
	if g.plan != nil {
		var err error
		if sps, err = g.plan(goroot); err != nil {
			return fmt.Errorf("planning the %s layers: %w", g.name, err)
		}
		if len(sps) != len(g.specs) {
			return fmt.Errorf("planning the %s layers: %d layers, want %d", g.name, len(sps), len(g.specs))
		}
	}
	s := &Set{Key: key, GoRoot: goroot, dir: dir}
	build := buildLayer
	if g.buildLayer != nil {
		build = g.buildLayer
	}
	for _, sp := range sps {
		start := time.Now()
		l, err := build(dir, goroot, sp)
		if err != nil {
			return fmt.Errorf("building layer %s: %w", sp.name, err)
		}
		l.BuildSeconds = time.Since(start).Seconds()
		logf("built layer %s: %d entries, %s uncompressed, %s compressed, in %.1fs",
			l.Name, len(l.Files), mib(l.UncompressedSize), mib(l.Size), l.BuildSeconds)
		s.Layers = append(s.Layers, l)
	}
	js, err := json.Marshal(s)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, setJSON), js, 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", setJSON, err)
	}
	return nil
}

// key names a build's inputs: the layer version, the Go version, the
// GOROOT and the specs (for a planned group, its version).
func (g *group) key(goroot string) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n%s\n%d %d\n", layersVersion, runtime.Version(), goroot, chunkSize, buildParallelism)
	for _, sp := range g.specs {
		fmt.Fprintf(h, "%s %v\n", sp.name, sp.trees)
	}
	if g.plan != nil {
		fmt.Fprintf(h, "group %s version %s\n", g.name, g.version)
	}
	return hex.EncodeToString(h.Sum(nil)[:6])
}

func loadSet(dir, key string, n int) (*Set, error) {
	b, err := os.ReadFile(filepath.Join(dir, setJSON))
	if err != nil {
		return nil, err
	}
	var s Set
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", setJSON, err)
	}
	if s.Key != key || len(s.Layers) != n {
		return nil, fmt.Errorf("%s: not a layer set for key %s", dir, key)
	}
	s.dir = dir
	for _, l := range s.Layers {
		l.blobPath = blobPath(dir, l.Digest)
		fi, err := os.Stat(l.blobPath)
		if err != nil {
			return nil, err
		}
		if fi.Size() != l.Size {
			return nil, fmt.Errorf("%s: size %d, want %d", l.blobPath, fi.Size(), l.Size)
		}
	}
	return &s, nil
}

func blobPath(dir, digest string) string {
	return filepath.Join(dir, "blobs", strings.Replace(digest, ":", "-", 1))
}

// buildLayer writes the tar of sp, converts it with estargz.Build and
// stores the blob under dir/blobs.
func buildLayer(dir, goroot string, sp layerSpec) (*Layer, error) {
	return buildLayerWith(dir, sp, func(tf *os.File) (*tarWriter, int64, error) {
		return writeSpecTar(tf, goroot, sp)
	})
}

// buildLayerWith is buildLayer with the tar written by writeTar.
func buildLayerWith(dir string, sp layerSpec, writeTar func(tf *os.File) (*tarWriter, int64, error)) (*Layer, error) {
	tf, err := os.CreateTemp(dir, "tar-")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tf.Name())
	defer tf.Close()
	tw, size, err := writeTar(tf)
	if err != nil {
		return nil, err
	}
	blob, err := estargz.Build(io.NewSectionReader(tf, 0, size),
		estargz.WithChunkSize(chunkSize),
		estargz.WithParallelism(buildParallelism),
		estargz.WithCompressionLevel(gzip.DefaultCompression),
		estargz.WithContext(context.Background()),
	)
	if err != nil {
		return nil, fmt.Errorf("building eStargz: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "blobs"), 0o755); err != nil {
		blob.Close()
		return nil, err
	}
	out, err := os.CreateTemp(dir, "blob-")
	if err != nil {
		blob.Close()
		return nil, err
	}
	defer os.Remove(out.Name())
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(out, h), blob)
	if cerr := blob.Close(); err == nil {
		err = cerr
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("writing blob: %w", err)
	}
	usize, err := blob.UncompressedSize()
	if err != nil {
		return nil, err
	}
	l := &Layer{
		Name: sp.name, About: sp.about,
		Digest: "sha256:" + hex.EncodeToString(h.Sum(nil)), Size: n,
		DiffID: blob.DiffID().String(), TOCDigest: blob.TOCDigest().String(),
		UncompressedSize: usize, Files: tw.files,
	}
	if err := os.Rename(out.Name(), blobPath(dir, l.Digest)); err != nil {
		return nil, fmt.Errorf("storing blob: %w", err)
	}
	return l, nil
}

// writeSpecTar writes the tar of sp to tf and returns its writer (with
// the ground truth) and size.
func writeSpecTar(tf *os.File, goroot string, sp layerSpec) (*tarWriter, int64, error) {
	tw := &tarWriter{tw: tar.NewWriter(tf), seen: map[string]bool{}}
	for _, t := range sp.trees {
		if err := tw.addTree(filepath.Join(goroot, filepath.FromSlash(t.src)), t.prefix); err != nil {
			return nil, 0, err
		}
	}
	for _, o := range sp.ops {
		if err := tw.apply(goroot, o); err != nil {
			return nil, 0, fmt.Errorf("%s %s: %w", o.kind, o.name, err)
		}
	}
	if err := tw.tw.Close(); err != nil {
		return nil, 0, fmt.Errorf("finishing tar: %w", err)
	}
	size, err := tf.Seek(0, io.SeekCurrent)
	if err != nil {
		return nil, 0, err
	}
	return tw, size, nil
}

// tarWriter writes a tar and records the ground truth of its entries.
// Parent directories get entries before their first child.
type tarWriter struct {
	tw    *tar.Writer
	files []File
	seen  map[string]bool
}

func (t *tarWriter) header(name string, typ byte, mode int64) *tar.Header {
	return &tar.Header{Name: name, Typeflag: typ, Mode: mode, ModTime: modTime, Uname: "root", Gname: "root"}
}

func (t *tarWriter) addDir(name string) error {
	if t.seen[name] {
		return nil
	}
	if dir := path.Dir(name); dir != "." {
		if err := t.addDir(dir); err != nil {
			return err
		}
	}
	if err := t.tw.WriteHeader(t.header(name+"/", tar.TypeDir, 0o755)); err != nil {
		return fmt.Errorf("writing tar entry %s: %w", name, err)
	}
	t.seen[name] = true
	t.files = append(t.files, File{Name: name, Type: "dir", Mode: 0o755})
	return nil
}

// addFile adds the regular file src as name. Modes are normalized to 0644,
// or 0755 when any execute bit is set.
func (t *tarWriter) addFile(name, src string, fi fs.FileInfo) error {
	return t.addFileMode(name, src, fi, normMode(fi))
}

// normMode is 0644, or 0755 when any execute bit of fi is set.
func normMode(fi fs.FileInfo) int64 {
	if fi.Mode().Perm()&0o111 != 0 {
		return 0o755
	}
	return 0o644
}

// addFileMode adds the regular file src as name with the given mode.
func (t *tarWriter) addFileMode(name, src string, fi fs.FileInfo, mode int64) error {
	if err := t.addDir(path.Dir(name)); err != nil {
		return err
	}
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	h := t.header(name, tar.TypeReg, mode)
	h.Size = fi.Size()
	if err := t.tw.WriteHeader(h); err != nil {
		return fmt.Errorf("writing tar entry %s: %w", name, err)
	}
	d := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(t.tw, d), f, fi.Size()); err != nil {
		return fmt.Errorf("writing tar entry %s: %w", name, err)
	}
	t.seen[name] = true
	t.files = append(t.files, File{Name: name, Type: "reg", Size: fi.Size(), Digest: "sha256:" + hex.EncodeToString(d.Sum(nil)), Mode: mode})
	return nil
}

// emptyDigest is the sha256 of no bytes.
const emptyDigest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// addEmpty adds an empty regular file (a whiteout).
func (t *tarWriter) addEmpty(name string) error {
	if err := t.addDir(path.Dir(name)); err != nil {
		return err
	}
	if err := t.tw.WriteHeader(t.header(name, tar.TypeReg, 0o644)); err != nil {
		return fmt.Errorf("writing tar entry %s: %w", name, err)
	}
	t.files = append(t.files, File{Name: name, Type: "reg", Digest: emptyDigest, Mode: 0o644})
	return nil
}

// addLink adds a symlink (typ tar.TypeSymlink) or hardlink (tar.TypeLink)
// name pointing at target.
func (t *tarWriter) addLink(name, target string, typ byte) error {
	if err := t.addDir(path.Dir(name)); err != nil {
		return err
	}
	mode, kind := int64(0o777), "symlink"
	if typ == tar.TypeLink {
		mode, kind = 0o644, "hardlink"
	}
	h := t.header(name, typ, mode)
	h.Linkname = target
	if err := t.tw.WriteHeader(h); err != nil {
		return fmt.Errorf("writing tar entry %s: %w", name, err)
	}
	t.files = append(t.files, File{Name: name, Type: kind, Link: target})
	return nil
}

// apply performs one op of a W4 layer.
func (t *tarWriter) apply(goroot string, o op) error {
	src := filepath.Join(goroot, filepath.FromSlash(o.src))
	switch o.kind {
	case opTree:
		return t.addTree(src, o.name)
	case opFile:
		fi, err := os.Stat(src)
		if err != nil {
			return err
		}
		mode := o.mode
		if mode == 0 {
			mode = normMode(fi)
		}
		return t.addFileMode(o.name, src, fi, mode)
	case opWhiteout:
		return t.addEmpty(path.Join(path.Dir(o.name), whiteoutPrefix+path.Base(o.name)))
	case opOpaque:
		return t.addEmpty(path.Join(o.name, opaqueWhiteout))
	case opSymlink:
		return t.addLink(o.name, o.link, tar.TypeSymlink)
	case opHardlink:
		return t.addLink(o.name, o.link, tar.TypeLink)
	case opDir:
		return t.addDir(o.name)
	}
	return fmt.Errorf("unknown op %q", o.kind)
}

// addTree adds root recursively under prefix, in lexical order. Only
// directories and regular files are taken (GOROOT has nothing else).
func (t *tarWriter) addTree(root, prefix string) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("walking %s: %w", root, err)
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		name := prefix
		if rel != "." {
			name = prefix + "/" + filepath.ToSlash(rel)
		}
		switch {
		case d.IsDir():
			return t.addDir(name)
		case d.Type().IsRegular():
			fi, err := d.Info()
			if err != nil {
				return err
			}
			return t.addFile(name, p, fi)
		}
		return nil
	})
}

// fileRange reads ranges of a local blob, for toc.Read.
type fileRange struct {
	f    *os.File
	size int64
}

func (r fileRange) ReadRange(_ context.Context, off, n int64) (io.ReadCloser, error) {
	return io.NopCloser(io.NewSectionReader(r.f, off, n)), nil
}

func (r fileRange) Size() int64 { return r.size }

// readTOC parses the layer's TOC from the local blob with pkg/toc, the
// reader the tools use.
func (l *Layer) readTOC(ctx context.Context) (*toc.TOC, error) {
	if l.toc != nil {
		return l.toc, nil
	}
	f, err := os.Open(l.blobPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	start := time.Now()
	t, err := toc.Read(ctx, fileRange{f, l.Size}, toc.Options{})
	if err != nil {
		return nil, fmt.Errorf("reading TOC of layer %s: %w", l.Name, err)
	}
	l.toc, l.tocTime = t, time.Since(start)
	return t, nil
}

// needed is what an ideal lazy fetch of names moves: the compressed bytes
// of the distinct gzip members holding their chunks, plus footer and TOC
// (blob size minus the TOC's offset). It returns the total and the number
// of distinct members.
func (l *Layer) needed(ctx context.Context, names []string) (int64, int, error) {
	t, err := l.readTOC(ctx)
	if err != nil {
		return 0, 0, err
	}
	members := map[int64]int64{}
	for _, n := range names {
		e, ok := t.Lookup(n)
		if !ok {
			return 0, 0, fmt.Errorf("%s is not in the TOC of layer %s", n, l.Name)
		}
		for _, c := range e.Chunks {
			members[c.Offset] = c.End - c.Offset
		}
	}
	total := l.Size - t.Offset
	for _, n := range members {
		total += n
	}
	return total, len(members), nil
}

// mergeCost is what gap merging alone would cost to carry the gzip
// members of names in at most maxReqs range requests: the unwanted bytes
// between members that would have to be downloaded (the smallest gaps are
// merged first).
func (l *Layer) mergeCost(ctx context.Context, names []string, maxReqs int) (int64, error) {
	t, err := l.readTOC(ctx)
	if err != nil {
		return 0, err
	}
	ends := map[int64]int64{}
	for _, n := range names {
		e, ok := t.Lookup(n)
		if !ok {
			return 0, fmt.Errorf("%s is not in the TOC of layer %s", n, l.Name)
		}
		for _, c := range e.Chunks {
			ends[c.Offset] = c.End
		}
	}
	starts := make([]int64, 0, len(ends))
	for o := range ends {
		starts = append(starts, o)
	}
	slices.Sort(starts)
	var gaps []int64
	for i := 1; i < len(starts); i++ {
		gaps = append(gaps, max(0, starts[i]-ends[starts[i-1]]))
	}
	slices.Sort(gaps)
	var extra int64
	for i := 0; i < len(starts)-maxReqs && i < len(gaps); i++ {
		extra += gaps[i]
	}
	return extra, nil
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
