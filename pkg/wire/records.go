package wire

import "fmt"

// Layer formats reported in [Layer.Format].
const (
	// FormatEStargz is an eStargz layer: gzip members per chunk, a TOC and a
	// 51-byte footer. Files can be fetched lazily.
	FormatEStargz = "estargz"
	// FormatStargz is the original (legacy) stargz layout with a 47-byte
	// footer. Files can be fetched lazily, without chunk digests.
	FormatStargz = "stargz"
	// FormatZstdChunked is a zstd:chunked layer: zstd frames per chunk and
	// a TOC, as containers/storage (podman) or estargz's zstdchunked
	// package write them. Files can be fetched lazily.
	FormatZstdChunked = "zstd:chunked"
	// FormatGzip is an ordinary gzip-compressed tar layer without a TOC.
	FormatGzip = "gzip"
	// FormatZstd is an ordinary zstd-compressed tar layer without a TOC.
	FormatZstd = "zstd"
	// FormatTar is an uncompressed tar layer.
	FormatTar = "tar"
	// FormatUnknown is a layer whose media type and footer say nothing known.
	FormatUnknown = "unknown"
	// FormatBlob is a layer that is not a filesystem layer but one file:
	// every layer of an OCI artifact (oras push), and layers of an image
	// whose media type is not a tar layer. sg-fetch writes its blob, as is,
	// to DIR/<title>.
	FormatBlob = "blob"
)

// Lazy reports whether layers of the given format can be read lazily
// through their table of contents.
func Lazy(format string) bool {
	return format == FormatEStargz || format == FormatStargz || format == FormatZstdChunked
}

// Layer describes one layer of an image, as printed by sg-layers and read by
// sg-ls.
type Layer struct {
	// Ref is the fully qualified image reference the layer was found
	// through, e.g. "index.docker.io/library/ubuntu:24.04".
	Ref string `json:"ref"`
	// Manifest is the digest of the image manifest listing the layer (for a
	// multi-platform image, the chosen platform's manifest).
	Manifest string `json:"manifest,omitempty"`
	// Platform is the manifest's platform as os/arch[/variant], when known.
	Platform string `json:"platform,omitempty"`
	// Index is the 0-based position of the layer in the manifest.
	Index int `json:"index"`
	// Digest is the digest of the compressed layer blob.
	Digest string `json:"digest"`
	// Size is the size of the compressed layer blob in bytes.
	Size int64 `json:"size"`
	// MediaType is the layer's media type from the manifest.
	MediaType string `json:"mediaType,omitempty"`
	// Format is what the layer is: one of the Format* constants.
	Format string `json:"format"`
	// TOCDigest is the digest of the layer's table of contents from the
	// containerd.io/snapshot/stargz/toc.digest annotation, when present.
	TOCDigest string `json:"tocDigest,omitempty"`
	// UncompressedSize is the size of the uncompressed layer from the
	// io.containers.estargz.uncompressed-size annotation, when present.
	UncompressedSize int64 `json:"uncompressedSize,omitempty"`
	// Title is the layer's org.opencontainers.image.title annotation, when
	// present: the file name oras push gave an artifact's blob.
	Title string `json:"title,omitempty"`
	// Annotations are the layer descriptor's annotations, when it has any.
	Annotations map[string]string `json:"annotations,omitempty"`
	// ArtifactType is the manifest's artifactType, or else its config media
	// type when that is not an image config; empty for images.
	ArtifactType string `json:"artifactType,omitempty"`
	// ManifestChecksum is the digest of a zstd:chunked layer's compressed
	// TOC, from its io.github.containers.zstd-chunked.manifest-checksum
	// annotation (io.containers.zstd-chunked.manifest-checksum when
	// estargz wrote it), when present.
	ManifestChecksum string `json:"manifestChecksum,omitempty"`
	// ManifestPosition is where that TOC is, "offset:length:
	// uncompressedLength:type", from the matching manifest-position
	// annotation, when present: the TOC is then read in one request.
	ManifestPosition string `json:"manifestPosition,omitempty"`
	// TOCLayout is which writer's zstd:chunked layout the annotations
	// belong to: "containers" (podman, buildah, skopeo) or "estargz"
	// (nerdctl, ctr-remote); set with ManifestChecksum or ManifestPosition.
	TOCLayout string `json:"tocLayout,omitempty"`
	// Indexed is set when a seek index of this (plain gzip) layer is in the
	// cache: it is listed without reading the blob, and its files are read
	// lazily from the nearest checkpoint.
	Indexed bool `json:"indexed,omitempty"`
}

// Validate reports a missing required field.
func (l *Layer) Validate() error {
	switch {
	case l.Ref == "":
		return missing("ref", "a layer record from sg-layers")
	case l.Digest == "":
		return missing("digest", "a layer record from sg-layers")
	case l.Format == "":
		return missing("format", "a layer record from sg-layers")
	}
	return nil
}

// Entry types reported in [Entry.Type], as in the eStargz TOC.
const (
	TypeReg      = "reg"
	TypeDir      = "dir"
	TypeSymlink  = "symlink"
	TypeHardlink = "hardlink"
	TypeChar     = "char"
	TypeBlock    = "block"
	TypeFifo     = "fifo"
)

// Entry describes one file, directory or link in a layer's table of
// contents, as printed by sg-ls and read by sg-fetch. The chunks a large
// file is split into are folded into its entry.
type Entry struct {
	// Ref is the image reference the layer was found through.
	Ref string `json:"ref"`
	// Manifest is the digest of the image manifest listing the layer.
	Manifest string `json:"manifest,omitempty"`
	// Layer is the digest of the layer blob holding the entry.
	Layer string `json:"layer"`
	// LayerSize is the size of that blob in bytes. With it, sg-fetch reads
	// the layer's TOC while it fetches the manifest, saving a round trip;
	// the manifest still decides (a wrong size only costs that saving).
	LayerSize int64 `json:"layerSize,omitempty"`
	// TOCOffset is where the layer's TOC starts in the blob. With it (and
	// LayerSize), sg-fetch reads a TOC of up to 8 MiB whole at once, in
	// parallel pieces, instead of a tail first; the layer's footer still
	// decides (a wrong offset costs at most that 8 MiB read in vain).
	TOCOffset int64 `json:"tocOffset,omitempty"`
	// Indexed is set when a seek index of the (plain gzip) layer is in the
	// cache, as in the layer record.
	Indexed bool `json:"indexed,omitempty"`
	// Name is the entry's path inside the layer, without a leading "./" or
	// "/" and without a trailing "/".
	Name string `json:"name"`
	// Type is one of the Type* constants.
	Type string `json:"type"`
	// Size is the size of a regular file's contents in bytes.
	Size int64 `json:"size"`
	// Mode is the entry's permission and mode bits (as in a tar header).
	Mode int64 `json:"mode"`
	// UID and GID are the numeric owner and group.
	UID int `json:"uid"`
	GID int `json:"gid"`
	// UserName and GroupName are the owner's names, when recorded.
	UserName  string `json:"userName,omitempty"`
	GroupName string `json:"groupName,omitempty"`
	// ModTime is the modification time in RFC 3339 format, when recorded.
	ModTime string `json:"modTime,omitempty"`
	// LinkName is the target of a symlink or hardlink.
	LinkName string `json:"linkName,omitempty"`
	// Digest is the digest of a regular file's contents, from the TOC.
	Digest string `json:"digest,omitempty"`
	// Chunks is the number of chunks a regular file's contents are stored
	// in (each a separately fetchable gzip member or part of one).
	Chunks int `json:"chunks,omitempty"`
	// Offset and CompressedSize place a regular file's contents in the
	// layer blob: the compressed bytes [Offset, Offset+CompressedSize) of
	// the members (gzip members or zstd frames) holding its chunks. With
	// them, sg-fetch starts reading a large share of a layer before its
	// TOC arrives; the TOC still decides what is read and checks every
	// byte (wrong values only cost bytes read in vain). Both are omitted
	// for layers read whole, and for entries without contents.
	Offset         int64 `json:"offset,omitempty"`
	CompressedSize int64 `json:"compressedSize,omitempty"`
	// ChunkOffsets are where the members holding a file's chunks after
	// the first start, when it has more than one: places where sg-fetch
	// may cut its reading ahead inside a large file.
	ChunkOffsets []int64 `json:"chunkOffsets,omitempty"`
	// DevMajor and DevMinor are the device numbers of char and block
	// devices.
	DevMajor int `json:"devMajor,omitempty"`
	DevMinor int `json:"devMinor,omitempty"`
	// Xattrs are the entry's extended attributes.
	Xattrs map[string][]byte `json:"xattrs,omitempty"`
	// Change is set on the records of sg-ls --diff A B, one of the
	// Change* constants: the record is then the path's entry in image B
	// (for ChangeRemoved, only Ref, Manifest and Name, since B has
	// nothing there), and Before is its entry in image A (nil for
	// ChangeAdded). sg-fetch fetches the B side and skips removed paths.
	Change string `json:"change,omitempty"`
	// Before is the path's entry in image A, on records of sg-ls --diff.
	Before *Entry `json:"before,omitempty"`
}

// Changes reported in [Entry.Change] by sg-ls --diff A B.
const (
	// ChangeAdded is a path B has and A has not.
	ChangeAdded = "added"
	// ChangeRemoved is a path A has and B has not.
	ChangeRemoved = "removed"
	// ChangeModified is a path whose contents differ: another type, digest,
	// size or device numbers.
	ChangeModified = "modified"
	// ChangeMetadata is a path whose contents are the same but whose mode,
	// owner, link target or xattrs differ.
	ChangeMetadata = "metadata"
)

// Validate reports a missing required field.
func (e *Entry) Validate() error {
	switch {
	case e.Ref == "":
		return missing("ref", "a file entry from sg-ls")
	case e.Layer == "" && e.Change != ChangeRemoved:
		return missing("layer", "a file entry from sg-ls")
	case e.Name == "" && e.Type != TypeDir:
		return missing("name", "a file entry from sg-ls")
	}
	return nil
}

// Fetch statuses reported in [Result.Status].
const (
	// StatusFetched means the entry was written under its final name after
	// its digests verified.
	StatusFetched = "fetched"
	// StatusSkipped means the entry was not written, for the reason in
	// Result.Error (for example a later entry for the same path).
	StatusSkipped = "skipped"
	// StatusFailed means the entry was not written; Result.Error says why.
	StatusFailed = "failed"
	// StatusRefused means the entry was not written because writing it
	// would break a rule sg-fetch keeps (its name climbs out of the output
	// directory or is absolute, it is a link pointing out, its parent is a
	// symlink, it is a hardlink to nothing in the layer, it is a device or
	// fifo not asked for with --devices, its type is unknown, or a part of
	// its name is longer than the output filesystem allows);
	// Result.Error names the rule.
	StatusRefused = "refused"
	// StatusPresent means a blob was already at its final path with the
	// right size and digest, so nothing was downloaded.
	StatusPresent = "present"
	// StatusResumed means a blob was written under its final name after
	// its digest verified, continuing the download an earlier run left.
	StatusResumed = "resumed"
)

// VerifiedDigest is [Result.Verified] of a blob whose sha256 matched the
// manifest's layer digest.
const VerifiedDigest = "digest"

// Result reports what sg-fetch did with one entry.
type Result struct {
	// Ref, Layer and Name identify the entry, as in [Entry].
	Ref   string `json:"ref"`
	Layer string `json:"layer"`
	Name  string `json:"name"`
	// Type is the entry's type, as in [Entry].
	Type string `json:"type"`
	// Title is the blob's title (org.opencontainers.image.title), for the
	// result of an artifact blob.
	Title string `json:"title,omitempty"`
	// Path is where the entry was (or would have been) written.
	Path string `json:"path"`
	// Size is the size of the written file in bytes.
	Size int64 `json:"size"`
	// Digest is the verified digest of a regular file's contents.
	Digest string `json:"digest,omitempty"`
	// Status is one of the Status* constants.
	Status string `json:"status"`
	// Error says why an entry failed, was refused or was skipped.
	Error string `json:"error,omitempty"`
	// Verified says what the file's bytes were checked against: "toc" when
	// the chunk and file digests of a TOC that matched the manifest's TOC
	// digest annotation verified, "toc-unpinned" when the digests verified
	// but the layer has no TOC digest annotation to pin the TOC to the
	// manifest, "layer" when the file came from a whole non-eStargz layer
	// whose blob matched the manifest's layer digest, "digest" when the
	// file is a whole blob whose sha256 matched its digest, and empty when
	// nothing was verified (directories, links, failures).
	Verified string `json:"verified,omitempty"`
	// CompressedBytes is the number of compressed bytes of the gzip
	// members holding the entry's contents (members shared with other
	// files are counted for each). For a whole blob it is the bytes this
	// run downloaded (less than Size when a download resumed).
	CompressedBytes int64 `json:"compressedBytes,omitempty"`
	// Requests is the number of HTTP range requests that carried the
	// entry's contents (requests are shared between neighbouring files).
	Requests int `json:"requests,omitempty"`
	// CachedBytes is the number of the entry's uncompressed bytes read
	// from the chunk cache (verified chunks kept by earlier runs) instead
	// of downloaded; CompressedBytes and Requests count only the rest.
	CachedBytes int64 `json:"cachedBytes,omitempty"`
	// Extracted is the number of entries sg-fetch --extract unpacked from
	// an archive blob into the output directory.
	Extracted int `json:"extracted,omitempty"`
	// DurationMs is the time from the first byte requested for the entry
	// to its rename into place, in milliseconds.
	DurationMs int64 `json:"durationMs,omitempty"`
}

// Validate reports a missing required field.
func (r *Result) Validate() error {
	switch {
	case r.Ref == "":
		return missing("ref", "a fetch result from sg-fetch")
	case r.Layer == "":
		return missing("layer", "a fetch result from sg-fetch")
	case r.Status == "":
		return missing("status", "a fetch result from sg-fetch")
	}
	return nil
}

func missing(field, want string) error {
	return fmt.Errorf("missing field %q (expected %s)", field, want)
}
