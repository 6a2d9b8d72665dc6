package imagefs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/stargz-get/stargz-get/internal/source"
	"github.com/stargz-get/stargz-get/pkg/cache"
	"github.com/stargz-get/stargz-get/pkg/fetch"
	"github.com/stargz-get/stargz-get/pkg/registry"
	"github.com/stargz-get/stargz-get/pkg/toc"
	"github.com/stargz-get/stargz-get/pkg/wire"
)

// DefaultReadAhead is how many chunks after the one a sequential read
// ends in are fetched in the background: one keeps a streaming reader
// busy without downloading much it may never read (4 MiB chunks).
const DefaultReadAhead = 1

// maxLinks bounds the symlinks followed resolving one name, as Linux does.
const maxLinks = 40

// Option configures Open.
type Option func(*options) error

type options struct {
	client    *registry.Client
	regOpts   []registry.Option
	platform  string
	layer     string
	readAhead int
	fetch     fetch.Options
}

// WithClient uses c to talk to the registry, instead of a client made
// from WithRegistryOptions.
func WithClient(c *registry.Client) Option {
	return func(o *options) error { o.client = c; return nil }
}

// WithRegistryOptions configures the registry client Open makes
// (credentials, plain HTTP, transport, ...). By default it is
// registry.New() with the docker config keychain.
func WithRegistryOptions(opts ...registry.Option) Option {
	return func(o *options) error { o.regOpts = append(o.regOpts, opts...); return nil }
}

// WithPlatform picks the platform of a multi-platform image, as
// "os/arch[/variant]"; by default the one the registry package picks
// (linux/amd64 unless there is only one).
func WithPlatform(p string) Option {
	return func(o *options) error {
		if _, err := registry.ParsePlatform(p); err != nil {
			return fmt.Errorf("platform %q: %w", p, err)
		}
		o.platform = p
		return nil
	}
}

// WithLayer shows one layer's files instead of the flattened image: spec
// is a 0-based index, a digest or a unique digest prefix, as sg-ls takes.
// Whiteout files are then shown as they are in the layer.
func WithLayer(spec string) Option {
	return func(o *options) error { o.layer = spec; return nil }
}

// WithJobs sets how many range requests ReadFile runs at once (default
// fetch.DefaultJobs).
func WithJobs(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return fmt.Errorf("jobs must be at least 1, got %d", n)
		}
		o.fetch.Jobs = n
		return nil
	}
}

// WithReadAhead sets how many chunks past a sequential read are fetched
// ahead (default DefaultReadAhead; 0 turns read-ahead off).
func WithReadAhead(n int) Option {
	return func(o *options) error {
		if n < 0 || n > 16 {
			return fmt.Errorf("read-ahead must be 0 to 16 chunks, got %d", n)
		}
		o.readAhead = n
		return nil
	}
}

// WithChunkSource reads chunks through src (for example a cache in front
// of fetch.RemoteChunks) instead of straight from the registry.
func WithChunkSource(src fetch.ChunkSource) Option {
	return func(o *options) error { o.fetch.Chunks = src; return nil }
}

// WithCache reads the chunks c holds from it (each checked against its TOC
// digest) and keeps the chunks read from the registry in it, as sg-fetch
// does (see fetch.CachedChunks); by default nothing is cached. It has no
// effect with WithChunkSource.
func WithCache(c *cache.Cache) Option {
	return func(o *options) error { o.fetch.Cache = c; return nil }
}

// WithLogf receives retry notes and what was read, for debugging.
func WithLogf(logf func(format string, args ...any)) Option {
	return func(o *options) error { o.fetch.Logf = logf; return nil }
}

// FS is an image's files. It is safe for concurrent use.
type FS struct {
	ctx    context.Context
	src    *source.Source
	nodes  map[string]*node
	opts   fetch.Options
	chunks fetch.ChunkSource
	ahead  int
	// Ref and Manifest name the image read.
	Ref, Manifest string
}

// node is one name of the file system.
type node struct {
	name     string // full path, "." for the root
	entry    *toc.Entry
	layer    *fetch.Layer
	children []string // base names, sorted (directories)
}

// Open reads the image ref names (its manifest and its layers' TOCs) and
// returns its flattened file system. ctx bounds Open and every read made
// later through the FS: cancel it to stop them. Every layer must be
// eStargz (or legacy stargz); otherwise the error names the layer.
func Open(ctx context.Context, ref string, opts ...Option) (*FS, error) {
	o := options{readAhead: DefaultReadAhead}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	client := o.client
	if client == nil {
		var err error
		if client, err = registry.New(o.regOpts...); err != nil {
			return nil, err
		}
	}
	platform := registry.DefaultPlatform
	if o.platform != "" {
		platform, _ = registry.ParsePlatform(o.platform)
	}
	src := &source.Source{Client: client, Platform: platform, Logf: o.fetch.Logf}
	img, err := src.Image(ctx, ref, "")
	if err != nil {
		return nil, err
	}
	var entries []source.FlatEntry
	if o.layer != "" {
		l, err := source.FindLayer(img, o.layer)
		if err != nil {
			return nil, err
		}
		format, err := src.Format(ctx, img, l)
		if err != nil {
			return nil, err
		}
		rec := source.Record(img, l, format)
		layer, err := src.Open(ctx, img.Ref.Context(), rec)
		if err != nil {
			return nil, err
		}
		for _, e := range layer.TOC.Entries {
			if !toc.Landmark(e.Name) {
				entries = append(entries, source.FlatEntry{Rec: rec, Layer: layer, Entry: e})
			}
		}
	} else {
		recs, err := src.ImageRecords(ctx, img)
		if err != nil {
			return nil, err
		}
		if entries, err = src.Flatten(ctx, recs); err != nil {
			return nil, err
		}
	}
	fsys := &FS{ctx: ctx, src: src, opts: o.fetch, ahead: o.readAhead, Ref: img.Ref.Name(), Manifest: img.Manifest.String()}
	fsys.chunks = o.fetch.Chunks
	if fsys.chunks == nil {
		fsys.chunks = fetch.CachedChunks(o.fetch.Cache, fetch.RemoteChunks(o.fetch), o.fetch.Logf)
	}
	fsys.build(entries)
	return fsys, nil
}

// Close releases what Open holds.
func (f *FS) Close() error {
	if c, ok := f.chunks.(io.Closer); ok && f.opts.Chunks == nil {
		c.Close() // the chunks kept in the cache (WithCache)
	}
	return f.src.Close()
}

// build makes the tree of names, with directories for parents the TOCs
// do not list.
func (f *FS) build(entries []source.FlatEntry) {
	f.nodes = map[string]*node{".": {name: "."}}
	var add func(name string) *node
	add = func(name string) *node {
		if n, ok := f.nodes[name]; ok {
			return n
		}
		n := &node{name: name}
		f.nodes[name] = n
		parent := add(path.Dir(name))
		parent.children = append(parent.children, path.Base(name))
		return n
	}
	for _, fe := range entries {
		if fe.Entry.Name == "" || !fs.ValidPath(fe.Entry.Name) {
			continue
		}
		n := add(fe.Entry.Name)
		n.entry, n.layer = fe.Entry, fe.Layer
	}
	for _, n := range f.nodes {
		slices.Sort(n.children)
		n.children = slices.Compact(n.children)
		if n.entry != nil && n.entry.Type != wire.TypeDir && len(n.children) > 0 {
			// A TOC listing files below a non-directory: the directory wins.
			n.entry = nil
		}
	}
}

// errLoop is a chain of symlinks too long to follow.
var errLoop = errors.New("too many levels of symbolic links")

// lookup resolves name, following symlinks in every component, and the
// last one too when follow is set.
func (f *FS) lookup(op, name string, follow bool) (*node, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: op, Path: name, Err: fs.ErrInvalid}
	}
	links := 0
	cur := "."
	rest := strings.Split(name, "/")
	if name == "." {
		rest = nil
	}
	for len(rest) > 0 {
		part := rest[0]
		rest = rest[1:]
		next := path.Join(cur, part)
		n, ok := f.nodes[next]
		if !ok {
			return nil, &fs.PathError{Op: op, Path: name, Err: fs.ErrNotExist}
		}
		if n.entry != nil && n.entry.Type == wire.TypeSymlink && (len(rest) > 0 || follow) {
			if links++; links > maxLinks {
				return nil, &fs.PathError{Op: op, Path: name, Err: errLoop}
			}
			target := n.entry.LinkName
			if !path.IsAbs(target) {
				target = path.Join("/", cur, target)
			}
			// Rooted at the image's root: ".." stops there.
			target = strings.TrimPrefix(path.Clean("/"+target), "/")
			var parts []string
			if target != "" {
				parts = strings.Split(target, "/")
			}
			rest = append(parts, rest...)
			cur = "."
			continue
		}
		if len(rest) > 0 && !n.isDir() {
			return nil, &fs.PathError{Op: op, Path: name, Err: fs.ErrNotExist}
		}
		cur = next
	}
	return f.nodes[cur], nil
}

func (n *node) isDir() bool { return n.entry == nil || n.entry.Type == wire.TypeDir }

// Open opens name, following symlinks.
func (f *FS) Open(name string) (fs.File, error) {
	n, err := f.lookup("open", name, true)
	if err != nil {
		return nil, err
	}
	info := f.info(n, path.Base(name))
	if n.isDir() {
		return &dir{fsys: f, n: n, info: info}, nil
	}
	return f.newFile(n, info)
}

// Stat returns the FileInfo of name, following symlinks.
func (f *FS) Stat(name string) (fs.FileInfo, error) {
	n, err := f.lookup("stat", name, true)
	if err != nil {
		return nil, err
	}
	return f.info(n, path.Base(name)), nil
}

// Lstat returns the FileInfo of name, not following a symlink at the end.
func (f *FS) Lstat(name string) (fs.FileInfo, error) {
	n, err := f.lookup("lstat", name, false)
	if err != nil {
		return nil, err
	}
	return f.info(n, path.Base(name)), nil
}

// ReadLink returns the target of the symlink name, as the TOC records it.
func (f *FS) ReadLink(name string) (string, error) {
	n, err := f.lookup("readlink", name, false)
	if err != nil {
		return "", err
	}
	if n.entry == nil || n.entry.Type != wire.TypeSymlink {
		return "", &fs.PathError{Op: "readlink", Path: name, Err: fs.ErrInvalid}
	}
	return n.entry.LinkName, nil
}

// ReadDir lists the directory name (following symlinks to it), sorted by
// name; symlinks in it are listed as symlinks.
func (f *FS) ReadDir(name string) ([]fs.DirEntry, error) {
	n, err := f.lookup("readdir", name, true)
	if err != nil {
		return nil, err
	}
	if !n.isDir() {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: errors.New("not a directory")}
	}
	out := make([]fs.DirEntry, len(n.children))
	for i, c := range n.children {
		out[i] = fs.FileInfoToDirEntry(f.info(f.nodes[path.Join(n.name, c)], c))
	}
	return out, nil
}

// ReadFile reads the whole file name, downloading its chunks in parallel.
func (f *FS) ReadFile(name string) ([]byte, error) {
	n, err := f.lookup("readfile", name, true)
	if err != nil {
		return nil, err
	}
	if n.isDir() {
		return nil, &fs.PathError{Op: "readfile", Path: name, Err: errors.New("is a directory")}
	}
	e, err := contents(n)
	if err != nil {
		return nil, &fs.PathError{Op: "readfile", Path: name, Err: err}
	}
	buf := &fixedBuffer{b: make([]byte, 0, e.Size)}
	opts := f.opts
	opts.Chunks = f.chunks
	if err := fetch.Contents(f.ctx, []fetch.File{{Layer: n.layer, Entry: e}}, opts, func(int) error { return nil }, buf); err != nil {
		return nil, &fs.PathError{Op: "readfile", Path: name, Err: err}
	}
	return buf.b, nil
}

// fixedBuffer collects bytes in a slice of the right capacity.
type fixedBuffer struct{ b []byte }

func (w *fixedBuffer) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

// contents returns the entry holding n's contents: n's own, its
// hardlink's target, or an empty stand-in for entries without contents.
func contents(n *node) (*toc.Entry, error) {
	e := n.entry
	if e.Type == wire.TypeHardlink {
		return n.layer.TOC.Source(e)
	}
	if e.Type != wire.TypeReg {
		return &toc.Entry{TOCEntry: e.TOCEntry, Name: e.Name}, nil // fifos and devices read as empty
	}
	if n.layer.TOC.Full {
		return nil, fmt.Errorf("layer of %s is not eStargz: its contents cannot be read lazily", e.Name)
	}
	return e, nil
}

// info describes n under the name base.
func (f *FS) info(n *node, base string) *fileInfo {
	if n.name == "." {
		base = "."
	}
	fi := &fileInfo{name: base, entry: n.entry, mode: fs.ModeDir | 0o755}
	e := n.entry
	if e == nil {
		return fi
	}
	fi.mode = fs.FileMode(e.Mode & 0o777)
	if e.Mode&0o4000 != 0 {
		fi.mode |= fs.ModeSetuid
	}
	if e.Mode&0o2000 != 0 {
		fi.mode |= fs.ModeSetgid
	}
	if e.Mode&0o1000 != 0 {
		fi.mode |= fs.ModeSticky
	}
	switch e.Type {
	case wire.TypeDir:
		fi.mode |= fs.ModeDir
	case wire.TypeSymlink:
		fi.mode |= fs.ModeSymlink
		fi.size = int64(len(e.LinkName))
	case wire.TypeChar:
		fi.mode |= fs.ModeDevice | fs.ModeCharDevice
	case wire.TypeBlock:
		fi.mode |= fs.ModeDevice
	case wire.TypeFifo:
		fi.mode |= fs.ModeNamedPipe
	case wire.TypeReg:
		fi.size = e.Size
	case wire.TypeHardlink:
		if src, err := n.layer.TOC.Source(e); err == nil {
			fi.size = src.Size
		}
	}
	fi.modTime = e.ModTime()
	return fi
}

// fileInfo is an entry's fs.FileInfo; Sys returns its *toc.Entry (nil for
// a directory the TOCs imply but do not list).
type fileInfo struct {
	name    string
	size    int64
	mode    fs.FileMode
	modTime time.Time
	entry   *toc.Entry
}

func (i *fileInfo) Name() string       { return i.name }
func (i *fileInfo) Size() int64        { return i.size }
func (i *fileInfo) Mode() fs.FileMode  { return i.mode }
func (i *fileInfo) ModTime() time.Time { return i.modTime }
func (i *fileInfo) IsDir() bool        { return i.mode.IsDir() }
func (i *fileInfo) Sys() any           { return i.entry }
