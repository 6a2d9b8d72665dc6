package main

import (
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// blobLayer is a v1.Layer over a layer blob on disk; go-containerregistry
// uploads its bytes as they are, so the manifest's digest is the file's.
type blobLayer struct{ l *Layer }

var _ v1.Layer = blobLayer{}

func (b blobLayer) Digest() (v1.Hash, error)            { return v1.NewHash(b.l.Digest) }
func (b blobLayer) DiffID() (v1.Hash, error)            { return v1.NewHash(b.l.DiffID) }
func (b blobLayer) Size() (int64, error)                { return b.l.Size, nil }
func (b blobLayer) MediaType() (types.MediaType, error) { return mediaTypeLayer, nil }
func (b blobLayer) Compressed() (io.ReadCloser, error)  { return os.Open(b.l.blobPath) }

func (b blobLayer) Uncompressed() (io.ReadCloser, error) {
	f, err := os.Open(b.l.blobPath)
	if err != nil {
		return nil, err
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{zr, f}, nil
}

// repo is the repository of layer l's image.
func (l *Layer) repo() string { return "bench/" + l.Name }

// v1Image is an OCI image of layers (base first), with the annotations
// eStargz converters (nerdctl, ctr-remote) write on each layer descriptor.
func v1Image(layers []*Layer) (v1.Image, error) {
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	base, err := mutate.ConfigFile(base, &v1.ConfigFile{
		Created:      v1.Time{Time: modTime},
		OS:           "linux",
		Architecture: "amd64",
		RootFS:       v1.RootFS{Type: "layers"},
	})
	if err != nil {
		return nil, err
	}
	var adds []mutate.Addendum
	for _, l := range layers {
		adds = append(adds, mutate.Addendum{
			Layer: blobLayer{l},
			Annotations: map[string]string{
				estargz.TOCJSONDigestAnnotation:         l.TOCDigest,
				estargz.StoreUncompressedSizeAnnotation: strconv.FormatInt(l.UncompressedSize, 10),
			},
			MediaType: mediaTypeLayer,
			History:   v1.History{Created: v1.Time{Time: modTime}, CreatedBy: "stargz-get bench " + l.Name},
		})
	}
	return mutate.Append(base, adds...)
}

// push uploads l's one-layer image to the registry at host as
// bench/NAME:v1.
func (l *Layer) push(ctx context.Context, host string) error {
	return pushImage(ctx, host, l.repo(), []*Layer{l})
}

// pushImage uploads the image of layers to the registry at host as
// REPO:v1.
func pushImage(ctx context.Context, host, repo string, layers []*Layer) error {
	ref, err := name.ParseReference(host+"/"+repo+":v1", name.Insecure)
	if err != nil {
		return err
	}
	img, err := v1Image(layers)
	if err != nil {
		return fmt.Errorf("image %s: %w", repo, err)
	}
	if err := remote.Write(ref, img, remote.WithContext(ctx)); err != nil {
		return fmt.Errorf("pushing %s: %w", ref, err)
	}
	return nil
}
