// Package blob downloads whole blobs (artifact files, raw layers) fast and
// resumably: one blob is cut into segments fetched in parallel with ranged
// GETs on separate connections (a conc pool of Jobs workers), each written
// with WriteAt into one temp file inside the output directory, and only
// renamed onto its final name after its sha256 matched the blob's digest.
//
// The digest is streamed, not computed afterwards: a hasher follows the
// segments in order as their bytes land, reading each byte back once while
// it is still in the page cache, so a finished download needs no second
// pass over the file. Only bytes an earlier run left are read back from
// disk that were not downloaded by this run.
//
// Resume. The temp file (.sg-<hex>.part) and a small state file
// (.sg-<hex>.state, JSON: digest, size, segment size, the server's
// validator, and how many bytes of each segment are written) are named by
// the blob's digest and live beside each other in the output directory.
// A segment's progress is recorded only after its bytes were written to
// the temp file, and the state file is replaced atomically (write, then
// rename), so a run killed at any point, SIGKILL included, leaves a state
// that never claims bytes the file does not have. The next run asks only
// for the missing bytes, each request carrying If-Range with the ETag (or
// Last-Modified) the first run saw: a server whose blob changed answers
// 200 with the whole new blob, and the download starts over instead of
// splicing two versions. Either way the final digest check decides.
// Both files are removed when the blob is in place. The temp file is
// locked (flock) while a download runs, so a second process fetching the
// same blob into the same directory is refused instead of interleaving
// its writes.
//
// Why a state file and not extended attributes (as soar_dl keeps its
// resume state): xattrs are not supported, or only partly, on tmpfs
// before Linux 6.6 for the user namespace, on NFS before v4.2, on some
// overlayfs and FUSE set-ups and on FAT/exFAT, and they are lost by cp,
// tar and most copy tools. A plain file works on every filesystem the
// output directory can be on, and can be looked at with cat.
//
// Servers that do not do ranges. The first segment is asked for alone;
// only when it comes back as 206 are the others started. A 200 (Range
// ignored) is read as the whole blob in one stream; a 416, 501 or 400
// (Range refused) is followed by one plain GET. Such downloads cannot
// resume and keep no state file.
//
// A file already at the final name whose size and sha256 match is left
// alone (StatusPresent) unless WithOverwrite. A finished blob gets mode
// 0755 when it starts with the ELF magic and 0644 otherwise, less the
// process umask, as soar_dl does.
//
// Progress is reported through a callback (WithProgress): this package
// draws nothing.
package blob
