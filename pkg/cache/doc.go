// Package cache is the one directory the stargz-get tools keep things in
// across runs: seek indexes of plain gzip layers today, and whatever else
// is worth not downloading twice. Entries are files named by a kind and a
// key (usually a blob digest) under one directory.
//
// Every entry is written under a temporary name and renamed into place, so
// a reader sees a whole entry or none. Each entry starts with a one-line
// header carrying the sha256 digest and length of what follows; Get checks
// both and removes (with a warning) an entry that does not match, so a
// truncated or damaged file is never used. Entries stored under their own
// digest (PutContent, LoadContent: verified chunks of files) are checked
// against that digest as well. Each kind is kept under a size cap of its
// own: the least recently used entries (by modification time, which Get
// refreshes) are removed until the rest fit. A Cache counts the bytes it
// writes and lists a kind's directory to evict only when that count goes
// over the cap by a sixteenth, so thousands of small entries cost no more
// than a few listings. Many small content-addressed entries are written
// together as a pack (NewPack, Packed, LoadPacked; see pack.go): one data
// file and an index renamed into place last.
//
// No lock is held across a download: concurrent runs may both build the
// same entry, and the last rename wins with identical contents. A cache
// that cannot be written is not an error for the tools: Put reports it, and
// callers warn and go on.
package cache
