package registry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
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
	// ArtifactType is the manifest's artifactType field; ConfigMediaType
	// is its config's media type (application/vnd.oci.empty.v1+json for
	// an artifact pushed by oras without a config).
	ArtifactType, ConfigMediaType string
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
	rt, desc, err := c.get(ctx, ref)
	if err != nil {
		return nil, err
	}
	if !desc.MediaType.IsIndex() {
		return imageOf(ref, desc, "")
	}
	idx, err := v1.ParseIndexManifest(bytes.NewReader(desc.Manifest))
	if err != nil {
		return nil, fmt.Errorf("parsing index %s: %w", ref, err)
	}
	child, err := choosePlatform(idx, platform)
	if err != nil {
		return nil, fmt.Errorf("resolving %s: %w", ref, err)
	}
	return c.child(ctx, rt, ref, child)
}

// get fetches the manifest or index ref names, and returns it with the
// repository's transport.
func (c *Client) get(ctx context.Context, ref name.Reference) (http.RoundTripper, *remote.Descriptor, error) {
	rt, err := c.transport(ctx, ref.Context())
	if err != nil {
		return nil, nil, fmt.Errorf("resolving %s: %w", ref, err)
	}
	desc, err := remote.Get(ref, remote.WithTransport(rt), remote.WithContext(ctx))
	if err != nil {
		return nil, nil, fmt.Errorf("resolving %s: %w", ref, classify(ref.Context().RegistryStr(), err))
	}
	return rt, desc, nil
}

// Images resolves ref to every image it names: one per platform of an
// index or manifest list, in index order (attestation manifests, whose
// platform is unknown/unknown, and nested indexes are left out), or the one
// image of a manifest. Unlike Image, it fills in Platform for a plain
// manifest too, from the image's config, so that every image says which
// platform it is for.
func (c *Client) Images(ctx context.Context, ref name.Reference) ([]*Image, error) {
	rt, desc, err := c.get(ctx, ref)
	if err != nil {
		return nil, err
	}
	if !desc.MediaType.IsIndex() {
		img, err := imageOf(ref, desc, "")
		if err != nil {
			return nil, err
		}
		if img.Platform, err = c.configPlatform(ctx, rt, ref, desc); err != nil {
			return nil, err
		}
		return []*Image{img}, nil
	}
	idx, err := v1.ParseIndexManifest(bytes.NewReader(desc.Manifest))
	if err != nil {
		return nil, fmt.Errorf("parsing index %s: %w", ref, err)
	}
	var imgs []*Image
	for _, d := range idx.Manifests {
		if !d.MediaType.IsImage() || d.Platform != nil && d.Platform.OS == "unknown" {
			continue
		}
		img, err := c.child(ctx, rt, ref, d)
		if err != nil {
			return nil, err
		}
		imgs = append(imgs, img)
	}
	if len(imgs) == 0 {
		return nil, fmt.Errorf("resolving %s: index lists no image manifests", ref)
	}
	return imgs, nil
}

// child resolves the image manifest d of the index ref names.
func (c *Client) child(ctx context.Context, rt http.RoundTripper, ref name.Reference, d v1.Descriptor) (*Image, error) {
	platform := FormatPlatform(d.Platform)
	desc, err := remote.Get(ref.Context().Digest(d.Digest.String()), remote.WithTransport(rt), remote.WithContext(ctx))
	if err != nil {
		what := ref.String()
		if platform != "" {
			what += " for " + platform
		}
		return nil, fmt.Errorf("resolving %s: %w", what, classify(ref.Context().RegistryStr(), err))
	}
	return imageOf(ref, desc, platform)
}

// imageOf reads the image manifest desc that ref was resolved to.
func imageOf(ref name.Reference, desc *remote.Descriptor, platform string) (*Image, error) {
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
	img := &Image{Ref: ref, Manifest: desc.Digest, MediaType: desc.MediaType, Platform: platform,
		ArtifactType: m.ArtifactType, ConfigMediaType: string(m.Config.MediaType)}
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

// maxConfigBytes bounds the image config read for its platform; real
// configs are a few KiB, with a long history a few hundred.
const maxConfigBytes = 4 << 20

// configPlatform reads the platform of the image manifest desc from its
// config blob; "" for artifacts whose config is not an image config.
func (c *Client) configPlatform(ctx context.Context, rt http.RoundTripper, ref name.Reference, desc *remote.Descriptor) (string, error) {
	m, err := v1.ParseManifest(bytes.NewReader(desc.Manifest))
	if err != nil {
		return "", fmt.Errorf("parsing manifest of %s: %w", ref, err)
	}
	if mt := m.Config.MediaType; mt != types.OCIConfigJSON && mt != types.DockerConfigJSON {
		return "", nil
	}
	if m.Config.Size > maxConfigBytes {
		return "", fmt.Errorf("reading config of %s: %d bytes, more than the %d allowed", ref, m.Config.Size, maxConfigBytes)
	}
	repo := ref.Context()
	u := fmt.Sprintf("%s://%s/v2/%s/blobs/%s", repo.Scheme(), repo.RegistryStr(), repo.RepositoryStr(), m.Config.Digest)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	resp, err := (&http.Client{Transport: rt}).Do(req)
	if err != nil {
		return "", fmt.Errorf("reading config of %s: %w", ref, classify(repo.RegistryStr(), err))
	}
	defer drain(resp.Body)
	if err := transport.CheckError(resp, http.StatusOK); err != nil {
		return "", fmt.Errorf("reading config of %s: %w", ref, classify(repo.RegistryStr(), err))
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, m.Config.Size+1))
	if err != nil {
		return "", fmt.Errorf("reading config of %s: %w", ref, err)
	}
	if got := sha256.Sum256(raw); int64(len(raw)) != m.Config.Size || m.Config.Digest.Algorithm != "sha256" || hex.EncodeToString(got[:]) != m.Config.Digest.Hex {
		return "", fmt.Errorf("reading config of %s: the registry's bytes do not match digest %s", ref, m.Config.Digest)
	}
	cf, err := v1.ParseConfigFile(bytes.NewReader(raw))
	if err != nil {
		return "", fmt.Errorf("parsing config of %s: %w", ref, err)
	}
	return FormatPlatform(cf.Platform()), nil
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
