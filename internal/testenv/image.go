package testenv

import (
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// BlobLayer is a v1.Layer over the compressed layer blob at path, with
// the digest, diff ID, size and media type given, for pushing fixture and
// benchmark layers. go-containerregistry uploads its bytes as they are (no
// recompression), so the digest in the manifest is the sha256 of the file.
func BlobLayer(path, digest, diffID string, size int64, mediaType types.MediaType) v1.Layer {
	return blobLayer{path: path, digest: digest, diffID: diffID, size: size, mediaType: mediaType}
}

type blobLayer struct {
	path, digest, diffID string
	size                 int64
	mediaType            types.MediaType
}

func (b blobLayer) Digest() (v1.Hash, error)            { return v1.NewHash(b.digest) }
func (b blobLayer) DiffID() (v1.Hash, error)            { return v1.NewHash(b.diffID) }
func (b blobLayer) Size() (int64, error)                { return b.size, nil }
func (b blobLayer) MediaType() (types.MediaType, error) { return b.mediaType, nil }

func (b blobLayer) Compressed() (io.ReadCloser, error) {
	f, err := os.Open(b.path)
	if err != nil {
		return nil, fmt.Errorf("opening layer blob: %w", err)
	}
	return f, nil
}

func (b blobLayer) Uncompressed() (io.ReadCloser, error) {
	f, err := b.Compressed()
	if err != nil {
		return nil, err
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("decompressing layer blob: %w", err)
	}
	return struct {
		io.Reader
		io.Closer
	}{zr, f}, nil
}

// v1Image builds the go-containerregistry image of img: an OCI manifest
// with an OCI config (os/architecture from Platform, one history entry and
// diff_id per layer) and the layers' annotations.
func (img *Image) v1Image() (v1.Image, error) {
	goos, arch, ok := strings.Cut(img.Platform, "/")
	if !ok {
		return nil, fmt.Errorf("image %s: bad platform %q", img.Name, img.Platform)
	}
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	base, err := mutate.ConfigFile(base, &v1.ConfigFile{
		Created:      v1.Time{Time: ModTime},
		OS:           goos,
		Architecture: arch,
		RootFS:       v1.RootFS{Type: "layers"},
		Config:       v1.Config{Env: []string{"PATH=/usr/local/go/bin:/usr/bin:/bin"}},
	})
	if err != nil {
		return nil, fmt.Errorf("image %s: setting config: %w", img.Name, err)
	}
	adds := make([]mutate.Addendum, 0, len(img.Layers))
	for _, l := range img.Layers {
		adds = append(adds, mutate.Addendum{
			Layer:       BlobLayer(l.BlobPath, l.Digest, l.DiffID, l.Size, types.MediaType(l.MediaType)),
			Annotations: l.Annotations(),
			MediaType:   types.MediaType(l.MediaType),
			History: v1.History{
				Created:   v1.Time{Time: ModTime},
				CreatedBy: "stargz-get testenv " + l.Format + " layer",
			},
		})
	}
	out, err := mutate.Append(base, adds...)
	if err != nil {
		return nil, fmt.Errorf("image %s: appending layers: %w", img.Name, err)
	}
	return out, nil
}

// v1Index builds the go-containerregistry index of ix, with each image's
// platform in its descriptor.
func (ix *Index) v1Index() (v1.ImageIndex, error) {
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	adds := make([]mutate.IndexAddendum, 0, len(ix.Images))
	for _, img := range ix.Images {
		vi, err := img.v1Image()
		if err != nil {
			return nil, err
		}
		p, err := v1.ParsePlatform(img.Platform)
		if err != nil {
			return nil, fmt.Errorf("index %s: %w", ix.Name, err)
		}
		adds = append(adds, mutate.IndexAddendum{Add: vi, Descriptor: v1.Descriptor{Platform: p}})
	}
	return mutate.AppendManifests(idx, adds...), nil
}

// setDigests records the manifest digests of every image and the index.
func setDigests(f *Fixtures) error {
	for _, img := range append(f.Images(), f.Index.Images...) {
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
	idx, err := f.Index.v1Index()
	if err != nil {
		return err
	}
	d, err := idx.Digest()
	if err != nil {
		return fmt.Errorf("index %s: computing digest: %w", f.Index.Name, err)
	}
	f.Index.Digest = d.String()
	return nil
}

// Push uploads every fixture image and the index to the registry at host
// over plain HTTP, with Basic auth when user is not empty. It returns each
// image's and the index's reference ("HOST/NAME:TAG") by Name.
func (f *Fixtures) Push(ctx context.Context, host, user, password string) (map[string]string, error) {
	auth := authn.Anonymous
	if user != "" {
		auth = &authn.Basic{Username: user, Password: password}
	}
	opts := []remote.Option{remote.WithContext(ctx), remote.WithAuth(auth)}
	refs := map[string]string{}
	for _, img := range f.Images() {
		ref, err := name.ParseReference(img.Ref(host), name.Insecure)
		if err != nil {
			return nil, fmt.Errorf("pushing %s: %w", img.Name, err)
		}
		vi, err := img.v1Image()
		if err != nil {
			return nil, err
		}
		if err := checkDigest(vi, img.Digest); err != nil {
			return nil, fmt.Errorf("pushing %s: %w", img.Name, err)
		}
		if err := remote.Write(ref, vi, opts...); err != nil {
			return nil, fmt.Errorf("pushing %s: %w", ref, err)
		}
		refs[img.Name] = ref.String()
	}
	ix := f.Index
	ref, err := name.ParseReference(ix.Ref(host), name.Insecure)
	if err != nil {
		return nil, fmt.Errorf("pushing %s: %w", ix.Name, err)
	}
	idx, err := ix.v1Index()
	if err != nil {
		return nil, err
	}
	if err := checkDigest(idx, ix.Digest); err != nil {
		return nil, fmt.Errorf("pushing %s: %w", ix.Name, err)
	}
	if err := remote.WriteIndex(ref, idx, opts...); err != nil {
		return nil, fmt.Errorf("pushing %s: %w", ref, err)
	}
	refs[ix.Name] = ref.String()
	return refs, nil
}

// checkDigest guards against a manifest that differs from the one whose
// digest was recorded at build time.
func checkDigest(m interface{ Digest() (v1.Hash, error) }, want string) error {
	d, err := m.Digest()
	if err != nil {
		return fmt.Errorf("computing manifest digest: %w", err)
	}
	if d.String() != want {
		return fmt.Errorf("manifest digest %s, recorded %s", d, want)
	}
	return nil
}
