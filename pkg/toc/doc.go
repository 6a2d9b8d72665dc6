// Package toc reads the table of contents (TOC) of an eStargz, legacy
// stargz or zstd:chunked layer over HTTP Range requests, and turns it into
// the model the fetch engine works from: one Entry per file with the
// compressed extents of its chunks and their codec. One detection step,
// the footer in the tail read (or the zstd:chunked annotations, see
// Options.Zstd), picks the format.
//
// An eStargz blob is a gzip-compressed tar whose regular-file payloads
// start new gzip members at chunk boundaries, followed by a gzip member
// holding the TOC JSON (stargz.index.json) and a 51-byte footer that
// records the TOC's offset. Reading the tail of the blob usually yields
// footer and TOC in one request; a bigger TOC comes in parallel pieces.
//
// The estargz package parses footers; this package decodes the TOC JSON
// itself (as encoding/json would, several times faster), does the I/O,
// bounds what it reads, and computes each chunk's compressed extent
// itself, because estargz's NextOffset runs the last chunk to the end of
// the blob (through the TOC), and because blobs built with a minimum chunk
// size put several files into one gzip member (innerOffset).
//
// A zstd:chunked blob (zstdchunked.go) is a zstd stream of frames: each
// chunk of a file is a frame of its own, and the TOC is zstd-compressed
// JSON in a skippable frame near the end, found through a footer in the
// last skippable frame or the manifest-position annotation. Two layouts
// exist: containers/storage's (podman; its own TOC JSON, exact frame ends,
// "zeros" chunks for holes) and estargz's zstdchunked package (an eStargz
// TOC). The compressed TOC is checked against the manifest-checksum
// annotation before it is decompressed.
package toc
