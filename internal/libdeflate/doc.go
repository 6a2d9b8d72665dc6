// Package libdeflate decodes whole gzip members with the system's
// libdeflate, when the process can load it, for the one place where
// inflating is what a fetch waits on: many small eStargz members, each
// already downloaded whole. There libdeflate decodes about three times as
// fast as klauspost/compress (0.29 s against 0.87 s for the 15,046
// members, 250 MB, of the benchmark's W3 layer on one core), because it
// needs neither a streaming state nor a 32 KiB window per member.
//
// The library is opened at run time (dlopen of libdeflate.so.0, the
// soname every libdeflate since 1.0 has), not linked: a binary built here
// runs the same where libdeflate is missing, and building needs no
// headers or package beyond a C compiler. Where it cannot be loaded, or in
// a build without cgo, Load says why and the callers keep decoding with
// klauspost/compress; SG_LIBDEFLATE=off in the environment turns it off
// for a run, to compare or to rule it out. Decoding is libdeflate's own,
// which checks each member's CRC-32 and length as klauspost does; nothing
// here parses deflate.
package libdeflate
