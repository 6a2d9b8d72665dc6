package main

import (
	"context"
	"fmt"
	"strconv"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/stargz-get/stargz-get/internal/testenv"
)

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
		mt, annotations := types.MediaType(mediaTypeLayer), map[string]string{
			estargz.TOCJSONDigestAnnotation:         l.TOCDigest,
			estargz.StoreUncompressedSizeAnnotation: strconv.FormatInt(l.UncompressedSize, 10),
		}
		if l.MediaType != "" {
			mt, annotations = types.MediaType(l.MediaType), l.Annotations
		}
		adds = append(adds, mutate.Addendum{
			Layer:       testenv.BlobLayer(l.blobPath, l.Digest, l.DiffID, l.Size, mt),
			Annotations: annotations,
			MediaType:   mt,
			History:     v1.History{Created: v1.Time{Time: modTime}, CreatedBy: "stargz-get bench " + l.Name},
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
