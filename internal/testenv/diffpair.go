package testenv

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// diffPairVersion is part of the diff pair's cache key; bump it when its
// content changes.
const diffPairVersion = "1"

// DiffPair is two versions of one image, for sg-ls --diff: A is
// "fixtures/diff:a" (2 layers), B is "fixtures/diff:b" (3 layers, the
// first shared with A). From A to B:
//
//	added:    new.txt, newdir/ and newdir/z, usr/local/go/src/sort/...
//	removed:  gone.txt, gonedir/ and what is in it (whiteouts), a-only.txt
//	modified: mod.txt (new contents), retype (a file becomes a directory,
//	          and retype/inner is added)
//	metadata: chmod.sh (same contents, 0644 to 0755), link (a symlink
//	          to keep.txt, then to mod.txt)
//
// and keep.txt and usr/local/go/src/bufio are the same in both.
type DiffPair struct {
	Key  string `json:"key"`
	A, B *Image
}

// BuildDiffPair builds the pair into cacheDir (as BuildFixtures does), or
// loads the one built there before.
func BuildDiffPair(cacheDir string) (*DiffPair, error) {
	return buildPair[DiffPair](cacheDir, "diff", diffPairVersion, buildDiffPair)
}

func buildDiffPair(dir, goroot, key string) error {
	if err := os.Mkdir(filepath.Join(dir, "blobs"), 0o755); err != nil {
		return err
	}
	b := &builder{dir: dir, goroot: goroot}
	layer := func(step func(t *tarFile) error) (*Layer, error) {
		t, err := b.newTar()
		if err != nil {
			return nil, err
		}
		defer t.discard()
		if err := step(t); err != nil {
			return nil, err
		}
		return b.estargzLayer(t, nil, nil)
	}
	base, err := layer(func(t *tarFile) error {
		return all(
			func() error { return t.addGoTree("src/bufio") },
			func() error { return t.addBytes("keep.txt", 0o644, []byte("the same in both\n")) },
			func() error { return t.addBytes("mod.txt", 0o644, []byte("old contents\n")) },
			func() error { return t.addBytes("chmod.sh", 0o644, []byte("#!/bin/sh\necho hi\n")) },
			func() error { return t.addBytes("gone.txt", 0o644, []byte("removed in b\n")) },
			func() error { return t.addBytes("gonedir/x", 0o644, []byte("removed with its directory\n")) },
			func() error { return t.addSymlink("link", "keep.txt") },
			func() error { return t.addBytes("retype", 0o644, []byte("a file in a, a directory in b\n")) },
		)
	})
	if err != nil {
		return fmt.Errorf("diff base layer: %w", err)
	}
	onlyA, err := layer(func(t *tarFile) error {
		return t.addBytes("a-only.txt", 0o600, []byte("only in a\n"))
	})
	if err != nil {
		return fmt.Errorf("diff a layer: %w", err)
	}
	changes, err := layer(func(t *tarFile) error {
		return all(
			func() error { return t.addBytes("mod.txt", 0o644, []byte("new contents, longer than the old\n")) },
			func() error { return t.addBytes("chmod.sh", 0o755, []byte("#!/bin/sh\necho hi\n")) },
			func() error { return t.addBytes(".wh.gone.txt", 0o644, nil) },
			func() error { return t.addBytes(".wh.gonedir", 0o644, nil) },
			func() error { return t.addBytes("new.txt", 0o644, []byte("added in b\n")) },
			func() error { return t.addBytes("newdir/z", 0o644, []byte("added with its directory\n")) },
			func() error { return t.addSymlink("link", "mod.txt") },
			func() error { return t.addBytes("retype/inner", 0o644, []byte("inside what was a file\n")) },
		)
	})
	if err != nil {
		return fmt.Errorf("diff b layer: %w", err)
	}
	more, err := layer(func(t *tarFile) error { return t.addGoTree("src/sort") })
	if err != nil {
		return fmt.Errorf("diff b layer: %w", err)
	}
	p := &DiffPair{Key: key,
		A: &Image{Name: "fixtures/diff", Tag: "a", Platform: "linux/amd64", Layers: []*Layer{base, onlyA}},
		B: &Image{Name: "fixtures/diff", Tag: "b", Platform: "linux/amd64", Layers: []*Layer{base, changes, more}},
	}
	for _, img := range []*Image{p.A, p.B} {
		vi, err := img.v1Image()
		if err != nil {
			return err
		}
		d, err := vi.Digest()
		if err != nil {
			return fmt.Errorf("image %s: computing digest: %w", img.Name, err)
		}
		img.Digest = d.String()
	}
	js, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, fixturesJSON), js, 0o644)
}

// PushImage uploads img to the anonymous registry at host over plain HTTP.
func PushImage(ctx context.Context, host string, img *Image) error {
	ref, err := name.ParseReference(img.Ref(host), name.Insecure)
	if err != nil {
		return fmt.Errorf("pushing %s: %w", img.Name, err)
	}
	vi, err := img.v1Image()
	if err != nil {
		return err
	}
	if err := remote.Write(ref, vi, remote.WithContext(ctx), remote.WithAuth(authn.Anonymous)); err != nil {
		return fmt.Errorf("pushing %s: %w", ref, err)
	}
	return nil
}
