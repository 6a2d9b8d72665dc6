package testenv

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/containerd/stargz-snapshotter/estargz"
)

// layered builds "fixtures/layered:v1": three eStargz layers whose upper
// layers delete and replace what the lower ones have, as real images do,
// so that its flattened view differs from the union of its layers:
//
//	layer 0: src/bufio and src/bytes, etc/config, etc/remove-me, opaque/{a,b},
//	         link -> etc/config, dir-to-file/x, file-to-dir, same/one
//	layer 1: whites out etc/remove-me and the src/bytes directory, replaces
//	         etc/config, makes opaque/ opaque and adds opaque/c, turns
//	         dir-to-file into a file and file-to-dir into a directory,
//	         replaces the symlink with a file, adds same/two with the
//	         contents of same/one, and src/sort
//	layer 2: whites out etc/config, brings etc/remove-me back, adds a
//	         hardlink and src/strings/strings.go
func (b *builder) layered() (*Image, error) {
	img := &Image{Name: "fixtures/layered", Tag: "v1", Platform: "linux/amd64"}
	steps := []func(t *tarFile) error{
		func(t *tarFile) error {
			return all(
				func() error { return t.addGoTree("src/bufio") },
				func() error { return t.addGoTree("src/bytes") },
				func() error { return t.addBytes("etc/config", 0o644, []byte("base config\n")) },
				func() error { return t.addBytes("etc/remove-me", 0o644, []byte("deleted by layer 1\n")) },
				func() error { return t.addBytes("opaque/a", 0o644, []byte("hidden by the opaque whiteout\n")) },
				func() error { return t.addBytes("opaque/b", 0o600, []byte("hidden too\n")) },
				func() error { return t.addSymlink("link", "etc/config") },
				func() error { return t.addBytes("dir-to-file/x", 0o644, []byte("gone when the dir becomes a file\n")) },
				func() error { return t.addBytes("file-to-dir", 0o644, []byte("becomes a directory\n")) },
				func() error { return t.addHostFile("same/one", filepath.Join(t.goroot, "src", "bufio", "scan.go")) },
			)
		},
		func(t *tarFile) error {
			return all(
				func() error { return t.addBytes("etc/"+".wh.remove-me", 0o644, nil) },
				func() error { return t.addBytes(GoPrefix+"/src/.wh.bytes", 0o644, nil) },
				func() error { return t.addBytes("etc/config", 0o640, []byte("config from layer 1\n")) },
				func() error { return t.addBytes("opaque/.wh..wh..opq", 0o644, nil) },
				func() error { return t.addBytes("opaque/c", 0o644, []byte("the only file left in opaque/\n")) },
				func() error { return t.addBytes("dir-to-file", 0o755, []byte("was a directory\n")) },
				func() error { return t.addBytes("file-to-dir/y", 0o644, []byte("was a file\n")) },
				func() error { return t.addBytes("link", 0o644, []byte("was a symlink\n")) },
				func() error { return t.addHostFile("same/two", filepath.Join(t.goroot, "src", "bufio", "scan.go")) },
				func() error { return t.addGoTree("src/sort") },
			)
		},
		func(t *tarFile) error {
			return all(
				func() error { return t.addBytes("etc/.wh.config", 0o644, nil) },
				func() error { return t.addBytes("etc/remove-me", 0o600, []byte("back in layer 2\n")) },
				func() error { return t.addGoFile("src/strings/strings.go") },
				func() error { return t.addHardlink("strings-link", GoPrefix+"/src/strings/strings.go") },
			)
		},
	}
	for i, step := range steps {
		t, err := b.newTar()
		if err != nil {
			return nil, err
		}
		if err := step(t); err != nil {
			t.discard()
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		l, err := b.estargzLayer(t, nil, nil)
		t.discard()
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		img.Layers = append(img.Layers, l)
	}
	return img, nil
}

func all(fns ...func() error) error {
	for _, fn := range fns {
		if err := fn(); err != nil {
			return err
		}
	}
	return nil
}

// UnpackImage is the reference implementation of unpacking an image's
// layers in order, applying OCI whiteouts, with archive/tar into dir. Tests
// compare what the tools produce with its result. It trusts the fixture
// layers (no defence against hostile names) and skips eStargz metadata.
func UnpackImage(img *Image, dir string) error {
	for i, l := range img.Layers {
		if err := unpackLayer(l, dir); err != nil {
			return fmt.Errorf("unpacking layer %d of %s: %w", i, img.Name, err)
		}
	}
	return nil
}

func unpackLayer(l *Layer, dir string) error {
	f, err := l.Open()
	if err != nil {
		return err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return err
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		name := strings.TrimPrefix(path.Clean("/"+h.Name), "/")
		switch name {
		case "", estargz.TOCTarName, estargz.PrefetchLandmark, estargz.NoPrefetchLandmark:
			continue
		}
		p := filepath.Join(dir, filepath.FromSlash(name))
		parent, base := filepath.Split(p)
		switch {
		case base == ".wh..wh..opq":
			ents, err := os.ReadDir(parent)
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			for _, e := range ents {
				if err := os.RemoveAll(filepath.Join(parent, e.Name())); err != nil {
					return err
				}
			}
			continue
		case strings.HasPrefix(base, ".wh."):
			if err := os.RemoveAll(filepath.Join(parent, strings.TrimPrefix(base, ".wh."))); err != nil {
				return err
			}
			continue
		}
		if err := os.MkdirAll(parent, 0o755); err != nil {
			return err
		}
		if fi, err := os.Lstat(p); err == nil && !(fi.IsDir() && h.Typeflag == tar.TypeDir) {
			if err := os.RemoveAll(p); err != nil {
				return err
			}
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
			if err := os.Chmod(p, os.FileMode(h.Mode)&0o777); err != nil {
				return err
			}
		case tar.TypeReg:
			out, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode)&0o777)
			if err != nil {
				return err
			}
			_, err = io.Copy(out, tr)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
			if err := os.Chmod(p, os.FileMode(h.Mode)&0o777); err != nil {
				return err
			}
		case tar.TypeSymlink:
			if err := os.Symlink(h.Linkname, p); err != nil {
				return err
			}
		case tar.TypeLink:
			target := filepath.Join(dir, filepath.FromSlash(strings.TrimPrefix(path.Clean("/"+h.Linkname), "/")))
			if err := os.Link(target, p); err != nil {
				return err
			}
		}
	}
}

// CompareTrees compares the trees under want and got: the same names,
// types, permission bits, file contents and symlink targets. It returns one
// error listing the differences (up to 20), or nil.
func CompareTrees(want, got string) error {
	list := func(root string) (map[string]fs.FileInfo, error) {
		m := map[string]fs.FileInfo{}
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			if rel == "." {
				return nil
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			m[filepath.ToSlash(rel)] = fi
			return nil
		})
		return m, err
	}
	w, err := list(want)
	if err != nil {
		return err
	}
	g, err := list(got)
	if err != nil {
		return err
	}
	var bad []string
	for name, wi := range w {
		gi, ok := g[name]
		if !ok {
			bad = append(bad, name+": missing")
			continue
		}
		if wi.Mode().Type() != gi.Mode().Type() {
			bad = append(bad, fmt.Sprintf("%s: type %v, want %v", name, gi.Mode().Type(), wi.Mode().Type()))
			continue
		}
		if wi.Mode().Type() != fs.ModeSymlink && wi.Mode().Perm() != gi.Mode().Perm() {
			bad = append(bad, fmt.Sprintf("%s: mode %v, want %v", name, gi.Mode().Perm(), wi.Mode().Perm()))
		}
		switch {
		case wi.Mode().IsRegular():
			wd, _, err1 := fileDigest(filepath.Join(want, name))
			gd, _, err2 := fileDigest(filepath.Join(got, name))
			if err1 != nil || err2 != nil || wd != gd {
				bad = append(bad, fmt.Sprintf("%s: content %s, want %s", name, gd, wd))
			}
		case wi.Mode().Type() == fs.ModeSymlink:
			wl, _ := os.Readlink(filepath.Join(want, name))
			gl, _ := os.Readlink(filepath.Join(got, name))
			if wl != gl {
				bad = append(bad, fmt.Sprintf("%s: symlink to %q, want %q", name, gl, wl))
			}
		}
	}
	for name := range g {
		if _, ok := w[name]; !ok {
			bad = append(bad, name+": not in the reference tree")
		}
	}
	if len(bad) == 0 {
		return nil
	}
	sort.Strings(bad)
	n := len(bad)
	if n > maxMismatches {
		bad = append(bad[:maxMismatches], fmt.Sprintf("... and %d more", n-maxMismatches))
	}
	return fmt.Errorf("%s differs from the reference %s in %d entries:\n%s", got, want, n, strings.Join(bad, "\n"))
}
