// Package imagefs reads a container image in a registry as an io/fs file
// system, lazily: Open reads the image's manifest and its layers' eStargz
// tables of contents (a few Range requests per layer, no file contents),
// flattens them as unpacking the layers in order would (whiteouts,
// replacements, opaque directories; see pkg/flatten), and returns an
// [FS]. Reading a file then downloads only the compressed chunks that the
// read touches, checked against their digests in the TOC (itself checked
// against the manifest's TOC digest annotation), with a small bounded
// read-ahead for sequential reads.
//
// An [FS] is an fs.FS, fs.ReadDirFS, fs.ReadFileFS, fs.StatFS and
// fs.ReadLinkFS, so fs.WalkDir, fs.ReadFile, fs.Glob, fstest.TestFS and
// http.FileServerFS work on it. Its files are fs.File, io.ReaderAt and
// io.Seeker. Open follows symlinks inside the image (an absolute target
// is taken from the image's root, and ".." never leaves it); ReadDir and
// Lstat show them as symlinks.
//
// The library and the tools are built from the same parts: image and
// layer resolution (internal/source, as sg-ls and sg-fetch use it),
// flattening (pkg/flatten), and chunk reading and verification
// (pkg/fetch: ReadFile streams a whole file through fetch.Contents, the
// engine of sg-fetch -o - and --tar; ReadAt reads through the same
// fetch.ChunkSource, where a chunk cache slots in).
package imagefs
