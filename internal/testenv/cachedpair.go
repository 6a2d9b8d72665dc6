package testenv

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
)

// imagePair is what BuildDiffPair and BuildTagPair cache: two images
// built together, under a key.
type imagePair interface {
	key() string
	images() []*Image // nil when the pair is not whole
}

func (p *DiffPair) key() string { return p.Key }
func (p *DiffPair) images() []*Image {
	if p.A == nil || p.B == nil {
		return nil
	}
	return []*Image{p.A, p.B}
}

func (p *TagPair) key() string { return p.Key }
func (p *TagPair) images() []*Image {
	if p.V1 == nil || p.V2 == nil {
		return nil
	}
	return []*Image{p.V1, p.V2}
}

// buildPair builds a pair of images into cacheDir, or loads the one built
// there before, as BuildFixtures does: the cache key is kind, version, the
// Go version and GOROOT; build writes the blobs and fixtures.json of the
// pair into dir.
func buildPair[P any, PP interface {
	*P
	imagePair
}](cacheDir, kind, version string, build func(dir, goroot, key string) error) (*P, error) {
	goroot, err := GoRoot()
	if err != nil {
		return nil, err
	}
	h := sha256.Sum256([]byte(kind + "\n" + version + "\n" + runtime.Version() + "\n" + goroot))
	key := kind + "-" + hex.EncodeToString(h[:6])
	var p *P
	_, err = CachedSet(cacheDir, key,
		func(dir string) error {
			b, err := os.ReadFile(filepath.Join(dir, fixturesJSON))
			if err != nil {
				return err
			}
			got := new(P)
			if err := json.Unmarshal(b, got); err != nil {
				return fmt.Errorf("%s: %w", dir, err)
			}
			imgs := PP(got).images()
			if imgs == nil || PP(got).key() != key {
				return fmt.Errorf("%s: not a %s pair for key %s", dir, kind, key)
			}
			for _, img := range imgs {
				for _, l := range img.Layers {
					l.BlobPath = blobPath(dir, l.Digest)
					if _, err := os.Stat(l.BlobPath); err != nil {
						return err
					}
				}
			}
			p = got
			return nil
		},
		func(dir string) error { return build(dir, goroot, key) })
	return p, err
}
