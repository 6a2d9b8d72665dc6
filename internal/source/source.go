// Package source resolves what the tools are pointed at (image references,
// layer records, file entries) to registry images and opened layers
// (eStargz and zstd:chunked read through their TOC, others whole when
// allowed), caching each so a run resolves an image and reads a TOC once.
// A TOC is pinned to the manifest by the layer's TOC digest annotation or,
// for zstd:chunked, its manifest-checksum annotation.
package source

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/stargz-get/stargz-get/pkg/cache"
	"github.com/stargz-get/stargz-get/pkg/fetch"
	"github.com/stargz-get/stargz-get/pkg/registry"
	"github.com/stargz-get/stargz-get/pkg/toc"
	"github.com/stargz-get/stargz-get/pkg/wire"
)

// ErrBlob means a layer is a blob (a file of an OCI artifact), not a
// filesystem layer with files to list.
var ErrBlob = errors.New("it is a blob (one file, as in an OCI artifact), not a filesystem layer")

// BlobHint is what to tell a user who asked for the files of a blob.
const BlobHint = "write the blob itself with sg-fetch -o DIR IMAGE BLOB, or pipe its sg-layers record to sg-fetch -o DIR"

// ErrNotLazy means a layer is not in a format whose files can be fetched
// without downloading the whole layer.
var ErrNotLazy = errors.New("it must be converted to eStargz or zstd:chunked to be read lazily")

// Source resolves and caches images and layers.
type Source struct {
	Client   *registry.Client
	Platform v1.Platform
	TOC      toc.Options
	Logf     func(format string, args ...any)
	// AllowFull lets layers that are not eStargz be read whole (streamed,
	// checked against their digest) instead of failing; see plain.go.
	AllowFull bool
	// Cache keeps seek indexes of plain gzip layers across runs; nil
	// keeps nothing.
	Cache *cache.Cache
	// Warnf, when set, receives warnings the user should see (a cached
	// index discarded, a cache that cannot be written).
	Warnf func(format string, args ...any)

	warnCache sync.Once

	mu     sync.Mutex
	images map[string]*onceImage
	layers map[string]*onceLayer
}

type onceImage struct {
	once sync.Once
	img  *registry.Image
	err  error
}

type onceLayer struct {
	once  sync.Once
	layer *fetch.Layer
	err   error
}

// Image resolves ref (pinned to manifest when that is a digest) once.
func (s *Source) Image(ctx context.Context, ref, manifest string) (*registry.Image, error) {
	key := ref + "|" + manifest
	s.mu.Lock()
	if s.images == nil {
		s.images = map[string]*onceImage{}
	}
	oi, ok := s.images[key]
	if !ok {
		oi = &onceImage{}
		s.images[key] = oi
	}
	s.mu.Unlock()
	oi.once.Do(func() {
		r, err := s.Client.ParseReference(ref)
		if err != nil {
			oi.err = err
			return
		}
		if manifest != "" {
			r = r.Context().Digest(manifest)
		}
		oi.img, oi.err = s.Client.Image(ctx, r, s.Platform)
		if oi.err == nil && manifest != "" {
			oi.img.Ref, _ = s.Client.ParseReference(ref)
		}
	})
	return oi.img, oi.err
}

// FindLayer picks a layer of img by a full digest, a unique digest prefix
// (with or without "sha256:"), or a 0-based index.
func FindLayer(img *registry.Image, spec string) (registry.Layer, error) {
	if i, err := strconv.Atoi(spec); err == nil && len(spec) < 4 {
		if i < 0 || i >= len(img.Layers) {
			return registry.Layer{}, fmt.Errorf("layer index %d out of range: %s has %d layers (0-%d)", i, img.Ref, len(img.Layers), len(img.Layers)-1)
		}
		return img.Layers[i], nil
	}
	want := strings.TrimPrefix(spec, "sha256:")
	var found []registry.Layer
	for _, l := range img.Layers {
		if strings.HasPrefix(l.Digest.Hex, want) && want != "" {
			found = append(found, l)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return registry.Layer{}, fmt.Errorf("%w: no layer %q in %s (%d layers; list them with sg-layers)", registry.ErrNotFound, spec, img.Ref, len(img.Layers))
	}
	return registry.Layer{}, fmt.Errorf("layer prefix %q is ambiguous in %s: it matches %d layers; give more digits", spec, img.Ref, len(found))
}

// Record describes layer l of img as a wire record; format is the layer's
// format (see Format).
func Record(img *registry.Image, l registry.Layer, format string) wire.Layer {
	rec := wire.Layer{
		Ref:       img.Ref.Name(),
		Manifest:  img.Manifest.String(),
		Platform:  img.Platform,
		Index:     l.Index,
		Digest:    l.Digest.String(),
		Size:      l.Size,
		MediaType: string(l.MediaType),
		Format:    format,
		TOCDigest: l.Annotations[estargz.TOCJSONDigestAnnotation],
	}
	if n, err := strconv.ParseInt(l.Annotations[estargz.StoreUncompressedSizeAnnotation], 10, 64); err == nil {
		rec.UncompressedSize = n
	}
	rec.Title = l.Annotations[TitleAnnotation]
	if len(l.Annotations) > 0 {
		rec.Annotations = l.Annotations
	}
	rec.ArtifactType = ArtifactType(img)
	if p := toc.PositionFrom(l.Annotations); p != nil {
		rec.TOCLayout, rec.ManifestChecksum = p.Layout, p.Checksum
		rec.ManifestPosition = l.Annotations[toc.ContainersPositionAnnotation]
		if p.Layout == toc.LayoutEStargz {
			rec.ManifestPosition = l.Annotations[toc.EStargzPositionAnnotation]
		}
	}
	return rec
}

// TitleAnnotation names an artifact layer's file (oras push sets it to the
// file's name).
const TitleAnnotation = "org.opencontainers.image.title"

// ArtifactType is the artifact type of img: its manifest's artifactType,
// or else its config media type when that is not an image config; "" for
// an image.
func ArtifactType(img *registry.Image) string {
	if img.ArtifactType != "" {
		return img.ArtifactType
	}
	if !imageConfig(img.ConfigMediaType) {
		return img.ConfigMediaType
	}
	return ""
}

func imageConfig(mt string) bool {
	return mt == string(types.OCIConfigJSON) || mt == string(types.DockerConfigJSON) || mt == ""
}

// IsBlob reports whether layer l of img is one file rather than a
// filesystem layer: every layer of an artifact (whatever its media type
// says: oras push types files as tar layers unless told otherwise), and a
// layer of an image whose media type is not a tar layer.
func IsBlob(img *registry.Image, l registry.Layer) bool {
	return ArtifactType(img) != "" || !strings.Contains(string(l.MediaType), ".tar")
}

// Format tells what layer l is: a blob (see IsBlob), else from its media
// type and annotations, and
// for gzip layers without a TOC annotation, from a probe of its footer.
func (s *Source) Format(ctx context.Context, img *registry.Image, l registry.Layer) (string, error) {
	if IsBlob(img, l) {
		return wire.FormatBlob, nil
	}
	if f := descriptorFormat(string(l.MediaType), l.Annotations); f != "" {
		return f, nil
	}
	if s.Indexed(l.Digest.String()) { // only plain gzip layers have one
		return wire.FormatGzip, nil
	}
	blob, err := s.Client.Blob(ctx, img.Ref.Context(), l.Digest, l.Size)
	if err != nil {
		return "", err
	}
	f, err := toc.Probe(ctx, blob)
	switch {
	case errors.Is(err, toc.ErrNotStargz):
		return plainFormat(string(l.MediaType)), nil
	case err != nil:
		return "", fmt.Errorf("probing layer %d (%s): %w", l.Index, l.Digest, err)
	}
	return f, nil
}

// descriptorFormat is the format a layer descriptor tells, or "" for a gzip
// or zstd layer without a TOC annotation (only its footer can tell).
func descriptorFormat(mt string, annotations map[string]string) string {
	switch {
	case toc.PositionFrom(annotations) != nil:
		return wire.FormatZstdChunked
	case isZstd(mt):
		return ""
	case mt == string(types.OCIUncompressedLayer), mt == string(types.DockerUncompressedLayer), strings.HasSuffix(mt, ".tar"):
		return wire.FormatTar
	case !strings.Contains(mt, "gzip") && !strings.Contains(mt, "layer"):
		return wire.FormatUnknown
	case annotations[estargz.TOCJSONDigestAnnotation] != "":
		return wire.FormatEStargz
	}
	return ""
}

func isZstd(mt string) bool {
	return strings.HasSuffix(mt, "+zstd") || strings.HasSuffix(mt, ".zstd")
}

// plainFormat is the format of a layer of media type mt that has no TOC.
func plainFormat(mt string) string {
	if isZstd(mt) {
		return wire.FormatZstd
	}
	return wire.FormatGzip
}

// zstdPosition is what rec's annotations tell of its zstd:chunked TOC.
func zstdPosition(rec wire.Layer) *toc.Position {
	if rec.TOCLayout == "" {
		return nil
	}
	a := map[string]string{}
	switch rec.TOCLayout {
	case toc.LayoutContainers:
		a[toc.ContainersChecksumAnnotation], a[toc.ContainersPositionAnnotation] = rec.ManifestChecksum, rec.ManifestPosition
	case toc.LayoutEStargz:
		a[toc.EStargzChecksumAnnotation], a[toc.EStargzPositionAnnotation] = rec.ManifestChecksum, rec.ManifestPosition
	}
	return toc.PositionFrom(a)
}

// Open reads the TOC of the layer rec describes, once per layer. The TOC
// is pinned when it matches rec.TOCDigest.
func (s *Source) Open(ctx context.Context, repo name.Repository, rec wire.Layer) (*fetch.Layer, error) {
	ol := s.layerOnce(repo, rec.Digest)
	ol.once.Do(func() { ol.layer, ol.err = s.open(ctx, repo, rec) })
	return ol.layer, ol.err
}

// describe names a layer in messages.
func describe(rec wire.Layer) string {
	return fmt.Sprintf("layer %d (%s) of %s", rec.Index, rec.Digest, rec.Ref)
}

// layerOnce returns the cache slot of a layer, so each is opened once.
func (s *Source) layerOnce(repo name.Repository, digest string) *onceLayer {
	key := repo.String() + "@" + digest
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.layers == nil {
		s.layers = map[string]*onceLayer{}
	}
	ol, ok := s.layers[key]
	if !ok {
		ol = &onceLayer{}
		s.layers[key] = ol
	}
	return ol
}

func (s *Source) open(ctx context.Context, repo name.Repository, rec wire.Layer) (*fetch.Layer, error) {
	l, listed, err := s.openAny(ctx, repo, rec, true)
	if err == nil && !listed {
		err = fmt.Errorf("%s was not listed", describe(rec))
	}
	return l, err
}

// openAny opens a layer of any format; list says to list a plain layer
// without a seek index by streaming it whole (else it is returned
// unlisted, TOC empty, for RunStream).
func (s *Source) openAny(ctx context.Context, repo name.Repository, rec wire.Layer, list bool) (*fetch.Layer, bool, error) {
	what := describe(rec)
	if rec.Format == wire.FormatBlob {
		return nil, false, fmt.Errorf("cannot list %s: %w", what, ErrBlob)
	}
	if rec.Format == "" && rec.MediaType != "" {
		rec.Format = descriptorFormat(rec.MediaType, nil)
	}
	if (rec.Format == "" || rec.Format == wire.FormatGzip) && s.Indexed(rec.Digest) {
		rec.Format = wire.FormatGzip
		if l, err := s.openIndexed(ctx, repo, rec, what); l != nil || err != nil {
			return l, l != nil, err
		}
	}
	if rec.Format != "" && !wire.Lazy(rec.Format) {
		if s.AllowFull {
			return s.openPlain(ctx, repo, rec, what, list)
		}
		return nil, false, fmt.Errorf("%s is %s, not eStargz or zstd:chunked: %w", what, rec.Format, ErrNotLazy)
	}
	blob, err := s.blob(ctx, repo, rec.Digest, rec.Size, what)
	if err != nil {
		return nil, false, err
	}
	opts := s.TOC
	opts.Zstd = zstdPosition(rec)
	t, err := toc.Read(ctx, blob, opts)
	switch {
	case errors.Is(err, toc.ErrNotStargz) && s.AllowFull:
		rec.Format = plainFormat(rec.MediaType)
		return s.openPlain(ctx, repo, rec, what, list)
	case errors.Is(err, toc.ErrNotStargz):
		return nil, false, fmt.Errorf("%s is %s, not eStargz or zstd:chunked: %w", what, plainFormat(rec.MediaType), ErrNotLazy)
	case err != nil:
		return nil, false, fmt.Errorf("reading TOC of %s: %w", what, err)
	}
	l, err := s.pin(&fetch.Layer{Blob: blob, TOC: t}, rec, what)
	return l, err == nil, err
}

// pin checks a TOC read from the layer rec describes against the TOC
// digest annotation rec carries.
func (s *Source) pin(l *fetch.Layer, rec wire.Layer, what string) (*fetch.Layer, error) {
	t := l.TOC
	if s.Logf != nil {
		s.Logf("%s: TOC of %d entries at offset %d, read in %d request(s), %d bytes", what, len(t.Entries), t.Offset, t.Requests, t.BytesRead)
	}
	if rec.ManifestChecksum != "" {
		if t.CompressedDigest.String() != rec.ManifestChecksum {
			return nil, fmt.Errorf("%s: compressed TOC digest %s does not match the manifest-checksum annotation %s: the layer is corrupt or was tampered with", what, t.CompressedDigest, rec.ManifestChecksum)
		}
		l.Pinned = true
	}
	if rec.TOCDigest != "" {
		if t.Digest.String() != rec.TOCDigest {
			return nil, fmt.Errorf("%s: TOC digest %s does not match the manifest's annotation %s: the layer is corrupt or was tampered with", what, t.Digest, rec.TOCDigest)
		}
		l.Pinned = true
	} else if !l.Pinned && s.Logf != nil {
		s.Logf("%s has no TOC digest annotation: chunk digests are checked against an unpinned TOC", what)
	}
	return l, nil
}

// Adopt takes a TOC read before the manifest was at hand (see ReadEarly)
// as the layer rec describes, pinning it to rec's TOC digest annotation,
// unless the layer was opened already.
func (s *Source) Adopt(repo name.Repository, rec wire.Layer, blob *registry.Blob, t *toc.TOC) (*fetch.Layer, error) {
	ol := s.layerOnce(repo, rec.Digest)
	what := describe(rec)
	ol.once.Do(func() { ol.layer, ol.err = s.pin(&fetch.Layer{Blob: blob, TOC: t}, rec, what) })
	return ol.layer, ol.err
}

// ReadEarly reads the TOC of blob dgst of size bytes in repo without its
// manifest, so that it can go on while the manifest is fetched; the
// caller checks size against the manifest and pins the TOC with Adopt.
// tocOffset, when known (entries from sg-ls carry it), lets the whole TOC
// be read at once.
func (s *Source) ReadEarly(ctx context.Context, repo name.Repository, dgst string, size, tocOffset int64) (*registry.Blob, *toc.TOC, error) {
	blob, err := s.blob(ctx, repo, dgst, size, "layer "+dgst)
	if err != nil {
		return nil, nil, err
	}
	opts := s.TOC
	opts.TOCOffset = tocOffset
	t, err := toc.Read(ctx, blob, opts)
	return blob, t, err
}

// Blob opens the blob dgst of size bytes in repo, for reads of its own
// (see fetch.NewAhead).
func (s *Source) Blob(ctx context.Context, repo name.Repository, dgst string, size int64) (*registry.Blob, error) {
	return s.blob(ctx, repo, dgst, size, "layer "+dgst)
}

// blob opens the blob dgst of size bytes in repo; what names it in errors.
func (s *Source) blob(ctx context.Context, repo name.Repository, dgst string, size int64, what string) (*registry.Blob, error) {
	h, err := v1.NewHash(dgst)
	if err != nil {
		return nil, fmt.Errorf("%s: invalid digest: %w", what, err)
	}
	return s.Client.Blob(ctx, repo, h, size)
}

// NotLazyHint is what to tell a user whose layer is not eStargz.
const NotLazyHint = "only eStargz and zstd:chunked layers can be read without pulling them; convert the image first (e.g. 'nerdctl image convert --estargz --oci', 'ctr-remote image optimize' or 'skopeo copy --dest-compress-format zstd:chunked'), or pass --allow-full-layers to download such layers whole"

// Close releases what the Source holds.
func (s *Source) Close() error { return nil }
