// Package fetch downloads chosen files out of eStargz layers into a
// directory, reading only the compressed chunks those files are stored in.
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
//     response is decoded gzip member by member as it streams in, and each
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
// Layers that are not eStargz (plain gzip, zstd, tar; see plain.go) come
// with a Plain reader instead of chunks: their files are written as the
// layer's tar streams past, stopping after the last one wanted, or, when a
// seek index is at hand, read in runs from the nearest inflate checkpoint.
// RunStream does the same for a layer not yet listed, listing it as it
// goes.
package fetch
