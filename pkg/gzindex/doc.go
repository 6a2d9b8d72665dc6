// Package gzindex makes a plain gzip layer (a gzip-compressed tar without
// a table of contents, as docker and crane write them) seekable, the way
// zlib's zran example and SOCI's ztoc do, without changing a byte of it.
//
// While the layer streams past once, Build inflates it with
// klauspost/compress/flate, whose end-of-block callback gives, after each
// deflate block, the exact bit position in the compressed stream, the
// uncompressed offset and the last 32 KiB of output. Every
// DefaultSpacing bytes of compressed input one of these becomes a
// checkpoint: inflating can start again there, mid-member, by seeding a new
// inflater with the window and skipping the checkpoint's first bits
// (flate.WithResumeFrom), so nothing here decodes deflate itself. The end of
// every block is kept too (no window, a few bytes each), so that a read can
// stop at the first block boundary past what it needs. The start of each
// gzip member is a checkpoint without a window. Alongside, the tar is
// walked: every entry's header and data offsets in the uncompressed stream,
// its metadata and its contents' sha256 digest.
//
// The Index is that table; Index.TOC turns it into the TOC model the
// fetcher uses, and Index.Open reads a run of entries lazily: one ranged
// read from the nearest checkpoint at or before the first entry's header
// to the first block boundary after the last entry's end. Every entry read
// this way is checked against the index: its tar header (name, type and
// size) must be at the recorded offset, and its contents must have the
// recorded digest (the fetcher checks that), so a stale or forged index
// fails loudly instead of producing wrong files.
//
// Indexes are serialised for the cache, keyed by the layer digest (format
// version 2, see Marshal): the checkpoints' windows, each deflated on its
// own and recorded with its sha256 digest, then gzip-compressed JSON
// lines, the index's head and one line per entry. Load checks one read back
// for consistency with the layer it claims to describe before it is used,
// hands the entries on one at a time (LoadTOC builds the TOC model from
// them without an entry table besides it) and keeps the windows deflated:
// one is inflated, and checked against its digest, only when a read starts
// at its checkpoint. An index of another version is refused.
package gzindex
