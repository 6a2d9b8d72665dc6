// Package fetch downloads chosen files out of eStargz and zstd:chunked
// layers into a directory, reading only the compressed chunks those files
// are stored in. It knows a chunk only as a compressed span and its codec
// (a gzip member, or zstd frames), never the format it came from; chunks
// of zeros (holes) are not downloaded but left as holes of the file.
//
// The engine works in three steps:
//
//  1. Plan: gather the chunks of every wanted file (across files and
//     layers), group them by the gzip member that holds them (several small
//     files can share one), sort members by offset and merge neighbours
//     whose gap is small into one run of bytes, then put runs too far apart
//     to merge together into multi-range requests, capping request size so
//     that every downloader stays busy.
//  2. Download: a conc pool of downloaders issues the requests. Each
//     response is decoded member by member (gzip, or zstd within the span
//     the TOC gives) as it streams in, and each
//     chunk's bytes are written with WriteAt into a temp file beside its
//     target while their digest is computed; nothing is buffered beyond a
//     small window. A request cut short is resumed from the first member
//     not yet done.
//  3. Finish: when all chunks of a file have verified (chunks covering
//     the file, each against its digest; a single-chunk file's digest is
//     its chunk's), the temp file is renamed into place. Every filesystem
//     operation goes through an os.Root, so no name in a TOC can reach
//     outside the output directory.
//
// Entries that would break a rule (a name climbing out with ".." or
// absolute, a link pointing out, a symlink parent, a hardlink to nothing,
// an unknown type, a fifo or device not asked for or, on darwin, not
// possible, a name part longer than the output filesystem's NAME_MAX) are
// refused one by one, with wire.StatusRefused and the rule as the
// Outcome's error; the others are fetched.
//
// Layers that are not eStargz (plain gzip, zstd, tar; see plain.go) come
// with a Plain reader instead of chunks: their files are written as the
// layer's tar streams past, stopping after the last one wanted, or, when a
// seek index is at hand, read in runs from the nearest inflate checkpoint.
// RunStream does the same for a layer not yet listed, listing it as it
// goes.
package fetch
