package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// baseline is the hidden subcommand "bench baseline LAYER-REF DIR": what
// `crane export` and `skopeo copy` + untar do, one stream: download the
// whole layer blob (go-containerregistry remote.Layer, which verifies the
// blob digest), gunzip it (klauspost/compress, the decompressor sg-fetch
// uses, so the comparison is Go against Go) and untar every entry into
// DIR. LAYER-REF is REPO@sha256:... of the blob.
//
// "bench baseline -image IMAGE-REF DIR" does the same for every layer of
// the image, base first, one after another on one stream at a time, and
// applies the OCI whiteouts as it goes (what `crane export IMAGE | tar x`
// or a container runtime's unpack does).
func baseline(ctx context.Context, args []string) error {
	image := len(args) > 0 && args[0] == "-image"
	if image {
		args = args[1:]
	}
	if len(args) != 2 {
		return errors.New("usage: bench baseline HOST/REPO@sha256:BLOB DIR, or bench baseline -image HOST/REPO:TAG DIR")
	}
	if err := os.MkdirAll(args[1], 0o755); err != nil {
		return err
	}
	root, err := os.OpenRoot(args[1])
	if err != nil {
		return err
	}
	defer root.Close()
	u := newUnpacker(root)
	if !image {
		ref, err := name.NewDigest(args[0])
		if err != nil {
			return err
		}
		layer, err := remote.Layer(ref, remote.WithContext(ctx))
		if err != nil {
			return fmt.Errorf("opening layer %s: %w", ref, err)
		}
		return u.pull(ref.String(), layer)
	}
	ref, err := name.ParseReference(args[0])
	if err != nil {
		return err
	}
	p, err := remote.NewPuller(remote.WithContext(ctx))
	if err != nil {
		return err
	}
	desc, err := p.Get(ctx, ref)
	if err != nil {
		return fmt.Errorf("getting the manifest of %s: %w", ref, err)
	}
	m, err := v1.ParseManifest(bytes.NewReader(desc.Manifest))
	if err != nil {
		return fmt.Errorf("parsing the manifest of %s: %w", ref, err)
	}
	if len(m.Layers) == 0 {
		return fmt.Errorf("%s: not an image manifest with layers (%s)", ref, desc.MediaType)
	}
	for i, l := range m.Layers {
		lref := ref.Context().Digest(l.Digest.String())
		layer, err := p.Layer(ctx, lref)
		if err != nil {
			return fmt.Errorf("opening layer %d (%s): %w", i, lref, err)
		}
		if err := u.pull(lref.String(), layer); err != nil {
			return fmt.Errorf("layer %d: %w", i, err)
		}
	}
	return nil
}

// pull downloads, decompresses and unpacks one layer.
func (u *unpacker) pull(ref string, layer v1.Layer) error {
	rc, err := layer.Compressed()
	if err != nil {
		return fmt.Errorf("downloading %s: %w", ref, err)
	}
	defer rc.Close()
	zr, err := decompressor(bufio.NewReaderSize(rc, 1<<20))
	if err != nil {
		return fmt.Errorf("decompressing %s: %w", ref, err)
	}
	if err := u.layer(tar.NewReader(zr)); err != nil {
		return err
	}
	// Read the rest (TOC, footer) so the blob digest is verified.
	if _, err := io.Copy(io.Discard, zr); err != nil {
		return fmt.Errorf("decompressing %s: %w", ref, err)
	}
	if _, err := io.Copy(io.Discard, rc); err != nil {
		return fmt.Errorf("downloading %s: %w", ref, err)
	}
	return rc.Close()
}

// unpacker writes layers under root, like tar x: directories, regular
// files (mode and mtime), symlinks and hardlinks, an existing entry being
// replaced (a directory only by a non-directory). Whiteouts apply to what
// lower layers left: ".wh.NAME" deletes NAME, ".wh..wh..opq" empties its
// directory of everything this layer did not write. eStargz's own entries
// (the TOC, the prefetch landmarks) are not written.
type unpacker struct {
	root *os.Root
	buf  []byte
	// made are directories known to exist (reset when anything is
	// removed); written are the names the current layer wrote.
	made    map[string]bool
	written map[string]bool
}

func newUnpacker(root *os.Root) *unpacker {
	return &unpacker{root: root, buf: make([]byte, 256<<10)}
}

func (u *unpacker) mkdirAll(dir string) error {
	if dir == "" || u.made[dir] {
		return nil
	}
	if err := u.root.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	u.made[dir] = true
	return nil
}

// remove removes n and everything below it, so that a new entry can take
// its place.
func (u *unpacker) remove(n string) error {
	u.made = map[string]bool{}
	return u.root.RemoveAll(n)
}

// opaque removes everything below dir that the current layer did not
// write.
func (u *unpacker) opaque(dir string) error {
	d := dir
	if d == "" {
		d = "."
	}
	f, err := u.root.Open(d)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	ents, err := f.ReadDir(-1)
	f.Close()
	if err != nil {
		return err
	}
	for _, e := range ents {
		c := path.Join(dir, e.Name())
		switch {
		case !u.written[c]:
			if err := u.remove(c); err != nil {
				return err
			}
		case e.IsDir():
			if err := u.opaque(c); err != nil {
				return err
			}
		}
	}
	return nil
}

// create runs mk, and when its name exists already, removes that and runs
// mk again.
func (u *unpacker) create(n string, mk func() error) error {
	err := mk()
	if errors.Is(err, fs.ErrExist) {
		if err := u.remove(n); err != nil {
			return err
		}
		err = mk()
	}
	return err
}

// layer unpacks one layer's tar.
func (u *unpacker) layer(tr *tar.Reader) error {
	u.made = map[string]bool{"": true, ".": true}
	u.written = map[string]bool{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading tar: %w", err)
		}
		n := strings.TrimPrefix(path.Clean("/"+h.Name), "/")
		switch n {
		case "", estargz.TOCTarName, estargz.PrefetchLandmark, estargz.NoPrefetchLandmark:
			continue
		}
		dir, base := path.Split(n)
		dir = strings.TrimSuffix(dir, "/")
		if base == opaqueWhiteout {
			if err := u.opaque(dir); err != nil {
				return fmt.Errorf("opaque whiteout %s: %w", n, err)
			}
			continue
		}
		if strings.HasPrefix(base, whiteoutPrefix) {
			if t := path.Join(dir, strings.TrimPrefix(base, whiteoutPrefix)); !u.written[t] {
				if err := u.remove(t); err != nil {
					return fmt.Errorf("whiteout %s: %w", n, err)
				}
			}
			continue
		}
		if err := u.mkdirAll(dir); err != nil {
			return err
		}
		u.written[n] = true
		mode := os.FileMode(h.Mode) & 0o777
		switch h.Typeflag {
		case tar.TypeDir:
			if u.made[n] {
				continue
			}
			err := u.root.Mkdir(n, 0o755)
			if errors.Is(err, fs.ErrExist) {
				var fi fs.FileInfo
				if fi, err = u.root.Lstat(n); err == nil && !fi.IsDir() {
					if err = u.remove(n); err == nil {
						err = u.root.Mkdir(n, 0o755)
					}
				}
			}
			if err != nil {
				return err
			}
			u.made[n] = true
		case tar.TypeReg:
			var f *os.File
			err := u.create(n, func() (err error) {
				f, err = u.root.OpenFile(n, os.O_CREATE|os.O_WRONLY|os.O_EXCL, mode)
				return err
			})
			if err != nil {
				return err
			}
			_, err = io.CopyBuffer(f, tr, u.buf)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("writing %s: %w", n, err)
			}
			if err := u.root.Chtimes(n, h.ModTime, h.ModTime); err != nil {
				return err
			}
		case tar.TypeSymlink:
			if err := u.create(n, func() error { return u.root.Symlink(h.Linkname, n) }); err != nil {
				return err
			}
		case tar.TypeLink:
			target := strings.TrimPrefix(path.Clean("/"+h.Linkname), "/")
			if err := u.create(n, func() error { return u.root.Link(target, n) }); err != nil {
				return err
			}
		}
	}
}
