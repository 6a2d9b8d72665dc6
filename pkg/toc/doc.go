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

// # Why a hand-written TOC decoder
//
// decode.go decodes the TOC JSON as it streams in, filling
// estargz.JTOC as encoding/json would, with the TOC-bomb limits checked as
// it goes. Measured against encoding/json/v2 (Go 1.26 with
// GOEXPERIMENT=jsonv2, names matched case-insensitively as v1 does, same
// result checked by TestJSONv2SameTOC) on GOROOT/src's TOC scaled to
// 20,000 and 100,000 entries (BenchmarkDecodeTOCLibraries, 2 vCPU, medians
// of 6): 20k entries 13.7 ms against 28.4 ms for v2 and 51.7 ms for v1;
// 100k entries 104 ms against 206 ms (v2) and 146 ms (v1), on a busy
// machine. v2 is about 2x slower, outside the 1.3x that would make the
// library worth its cost, and needs a GOEXPERIMENT on Go 1.26; the
// decoder stays, with its differential tests and fuzzing against
// encoding/json (decode_test.go).
