package testenv

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
)

// tagPairVersion is part of the tag pair's cache key; bump it when its
// content changes.
const tagPairVersion = "1"

// TagPairChangedEvery is how the tag pair's second tag changes files:
// every TagPairChangedEvery-th regular file of the Go tree, in lexical
// order, gets a line appended.
const TagPairChangedEvery = 10

// TagPair is two tags of one image that share most of their chunks, for
// the chunk cache: V1 ("fixtures/tags:v1") holds GOROOT's src/net and
// src/encoding and the compile binary (a file of several 4 MiB chunks);
// V2 ("fixtures/tags:v2") holds the same names, with every
// TagPairChangedEvery-th Go file changed (a line appended) and 4 KiB of
// the compile binary rewritten in place, which changes one of its chunks
// and keeps the others. Each tag is one eStargz layer built with
// estargz.Build.
type TagPair struct {
	Key    string `json:"key"`
	V1, V2 *Image
}

// BuildTagPair builds the pair into cacheDir (as BuildFixtures does), or
// loads the one built there before.
func BuildTagPair(cacheDir string) (*TagPair, error) {
	return buildPair[TagPair](cacheDir, "tags", tagPairVersion, buildTagPair)
}

func buildTagPair(dir, goroot, key string) error {
	if err := os.Mkdir(filepath.Join(dir, "blobs"), 0o755); err != nil {
		return err
	}
	b := &builder{dir: dir, goroot: goroot}
	compile := filepath.Join(goroot, "pkg", "tool", runtime.GOOS+"_"+runtime.GOARCH, "compile")
	layer := func(v2 bool) (*Layer, error) {
		t, err := b.newTar()
		if err != nil {
			return nil, err
		}
		defer t.discard()
		n := 0
		for _, rel := range []string{"src/net", "src/encoding"} {
			root := filepath.Join(goroot, filepath.FromSlash(rel))
			err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
				if err != nil {
					return fmt.Errorf("walking GOROOT: %w", err)
				}
				r, err := filepath.Rel(goroot, p)
				if err != nil {
					return err
				}
				name := GoPrefix + "/" + filepath.ToSlash(r)
				switch {
				case d.IsDir():
					return t.addDir(name)
				case !d.Type().IsRegular():
					return nil
				}
				n++
				if !v2 || n%TagPairChangedEvery != 0 {
					return t.addHostFile(name, p)
				}
				data, err := os.ReadFile(p)
				if err != nil {
					return fmt.Errorf("adding file: %w", err)
				}
				return t.addBytes(name, 0o644, append(data, "\n// changed in v2\n"...))
			})
			if err != nil {
				return nil, err
			}
		}
		data, err := os.ReadFile(compile)
		if err != nil {
			return nil, fmt.Errorf("adding file: %w", err)
		}
		if len(data) < 3*estargzChunkSize {
			return nil, fmt.Errorf("%s is %d bytes, want at least 3 chunks", compile, len(data))
		}
		if v2 {
			off := estargzChunkSize + estargzChunkSize/2 // inside the second chunk
			copy(data[off:], bytes.Repeat([]byte("v2"), 2048))
		}
		if err := t.addBytes(GoPrefix+"/pkg/tool/compile", 0o755, data); err != nil {
			return nil, err
		}
		return b.estargzLayer(t, nil, nil)
	}
	v1, err := layer(false)
	if err != nil {
		return fmt.Errorf("tags v1 layer: %w", err)
	}
	v2, err := layer(true)
	if err != nil {
		return fmt.Errorf("tags v2 layer: %w", err)
	}
	p := &TagPair{Key: key,
		V1: &Image{Name: "fixtures/tags", Tag: "v1", Platform: "linux/amd64", Layers: []*Layer{v1}},
		V2: &Image{Name: "fixtures/tags", Tag: "v2", Platform: "linux/amd64", Layers: []*Layer{v2}},
	}
	for _, img := range []*Image{p.V1, p.V2} {
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
