package registry

import (
	"bytes"
	"context"
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// DefaultPlatform is the platform chosen from a multi-platform image when
// none is asked for: what a pull on the typical CI runner or server gets.
var DefaultPlatform = v1.Platform{OS: "linux", Architecture: "amd64"}

// Image is an image manifest resolved for one platform.
type Image struct {
	// Ref is the reference the image was resolved from.
	Ref name.Reference
	// Manifest is the digest of the image manifest.
	Manifest v1.Hash
	// MediaType is the manifest's media type.
	MediaType types.MediaType
	// Platform is the platform the manifest was chosen for from an index,
	// as os/arch[/variant]; empty when the reference named a manifest.
	Platform string
	// Layers are the manifest's layers in order.
	Layers []Layer
}

// Layer is one layer descriptor of a manifest.
type Layer struct {
	// Index is the layer's 0-based position in the manifest.
	Index int
	// Digest and Size identify the compressed blob.
	Digest v1.Hash
	Size   int64
	// MediaType is the layer's media type.
	MediaType types.MediaType
	// Annotations are the descriptor's annotations (eStargz converters put
	// the TOC digest and uncompressed size here).
	Annotations map[string]string
}

// Image resolves ref to an image manifest, choosing platform from an index
// or manifest list.
func (c *Client) Image(ctx context.Context, ref name.Reference, platform v1.Platform) (*Image, error) {
	rt, err := c.transport(ctx, ref.Context())
	if err != nil {
		return nil, fmt.Errorf("resolving %s: %w", ref, err)
	}
	desc, err := remote.Get(ref, remote.WithTransport(rt), remote.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("resolving %s: %w", ref, classify(ref.Context().RegistryStr(), err))
	}
	img := &Image{Ref: ref}
	if desc.MediaType.IsIndex() {
		idx, err := v1.ParseIndexManifest(bytes.NewReader(desc.Manifest))
		if err != nil {
			return nil, fmt.Errorf("parsing index %s: %w", ref, err)
		}
		child, err := choosePlatform(idx, platform)
		if err != nil {
			return nil, fmt.Errorf("resolving %s: %w", ref, err)
		}
		img.Platform = FormatPlatform(child.Platform)
		desc, err = remote.Get(ref.Context().Digest(child.Digest.String()), remote.WithTransport(rt), remote.WithContext(ctx))
		if err != nil {
			return nil, fmt.Errorf("resolving %s for %s: %w", ref, img.Platform, classify(ref.Context().RegistryStr(), err))
		}
	}
	if !desc.MediaType.IsImage() {
		return nil, fmt.Errorf("resolving %s: unsupported manifest media type %q (want an OCI or Docker schema 2 image manifest)", ref, desc.MediaType)
	}
	if desc.MediaType.IsSchema1() {
		return nil, fmt.Errorf("resolving %s: docker schema 1 manifests are not supported; push the image again with a current client", ref)
	}
	m, err := v1.ParseManifest(bytes.NewReader(desc.Manifest))
	if err != nil {
		return nil, fmt.Errorf("parsing manifest of %s: %w", ref, err)
	}
	img.Manifest = desc.Digest
	img.MediaType = desc.MediaType
	for i, l := range m.Layers {
		img.Layers = append(img.Layers, Layer{
			Index:       i,
			Digest:      l.Digest,
			Size:        l.Size,
			MediaType:   l.MediaType,
			Annotations: l.Annotations,
		})
	}
	return img, nil
}

// choosePlatform picks want's manifest from idx. A variant is matched only
// when asked for.
func choosePlatform(idx *v1.IndexManifest, want v1.Platform) (v1.Descriptor, error) {
	var have []string
	for _, d := range idx.Manifests {
		p := d.Platform
		if p == nil || !d.MediaType.IsImage() {
			continue
		}
		if p.OS == "unknown" { // attestation manifests
			continue
		}
		have = append(have, FormatPlatform(p))
		if p.OS == want.OS && p.Architecture == want.Architecture && (want.Variant == "" || p.Variant == want.Variant) {
			return d, nil
		}
	}
	if len(have) == 0 {
		return v1.Descriptor{}, fmt.Errorf("index lists no image manifests with a platform")
	}
	return v1.Descriptor{}, fmt.Errorf("no manifest for platform %s (the index has %s); choose one with --platform", FormatPlatform(&want), strings.Join(have, ", "))
}
