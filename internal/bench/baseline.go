package main

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/klauspost/compress/gzip"
)

// baseline is the hidden subcommand "bench baseline LAYER-REF DIR": what
// `crane export` and `skopeo copy` + untar do, one stream: download the
// whole layer blob (go-containerregistry remote.Layer, which verifies the
// blob digest), gunzip it (klauspost/compress, the decompressor sg-fetch
// uses, so the comparison is Go against Go) and untar every entry into
// DIR. LAYER-REF is REPO@sha256:... of the blob.
func baseline(ctx context.Context, args []string) error {
	if len(args) != 2 {
		return errors.New("usage: bench baseline HOST/REPO@sha256:BLOB DIR")
	}
	ref, err := name.NewDigest(args[0])
	if err != nil {
		return err
	}
	layer, err := remote.Layer(ref, remote.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("opening layer %s: %w", ref, err)
	}
	rc, err := layer.Compressed()
	if err != nil {
		return fmt.Errorf("downloading %s: %w", ref, err)
	}
	defer rc.Close()
	zr, err := gzip.NewReader(bufio.NewReaderSize(rc, 1<<20))
	if err != nil {
		return fmt.Errorf("decompressing %s: %w", ref, err)
	}
	if err := os.MkdirAll(args[1], 0o755); err != nil {
		return err
	}
	root, err := os.OpenRoot(args[1])
	if err != nil {
		return err
	}
	defer root.Close()
	if err := untar(root, tar.NewReader(zr)); err != nil {
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

// untar writes every entry of tr under root, like tar x: directories,
// regular files (mode and mtime), symlinks and hardlinks.
func untar(root *os.Root, tr *tar.Reader) error {
	buf := make([]byte, 256<<10)
	made := map[string]bool{"": true, ".": true}
	mkdir := func(dir string) error {
		if made[dir] {
			return nil
		}
		if err := root.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		made[dir] = true
		return nil
	}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading tar: %w", err)
		}
		n := strings.TrimPrefix(path.Clean("/"+h.Name), "/")
		if n == "" {
			continue
		}
		if err := mkdir(path.Dir(n)); err != nil {
			return err
		}
		mode := os.FileMode(h.Mode) & 0o777
		switch h.Typeflag {
		case tar.TypeDir:
			if err := mkdir(n); err != nil {
				return err
			}
		case tar.TypeReg:
			f, err := root.OpenFile(n, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
			if err != nil {
				return err
			}
			_, err = io.CopyBuffer(f, tr, buf)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("writing %s: %w", n, err)
			}
			if err := root.Chtimes(n, h.ModTime, h.ModTime); err != nil {
				return err
			}
		case tar.TypeSymlink:
			if err := root.Symlink(h.Linkname, n); err != nil {
				return err
			}
		case tar.TypeLink:
			if err := root.Link(strings.TrimPrefix(path.Clean("/"+h.Linkname), "/"), n); err != nil {
				return err
			}
		}
	}
}
