// Package heapfloor keeps the garbage collector from running while the
// heap is still small.
//
// With the default GOGC=100 the collector runs each time the heap doubles
// from a 4 MiB start. The tools build their working set (a TOC of tens of
// thousands of entries, the records read from stdin) in the first tenth
// of a second, so that start cost about 25 collections back to back, on
// the critical path before the first byte of file data was asked for
// (measured with GODEBUG=gctrace=1 on a 16,705-entry layer). A floor of a
// few tens of MiB lets that phase run with one or two collections, and
// above the floor the collector paces as the percentage set before did
// (sg-fetch and sg-ls use 50 to keep whole-layer fetches small): the
// floor raises peak memory to at most the floor, never more than that.
//
// It is the usual GC tuner done with the runtime's own knobs: after each
// collection a cleanup reads the live heap and sets the GC percentage so
// that the next goal is max(floor, live×(1+p/100)). A GOGC in the
// environment turns it off: the user's setting wins.
package heapfloor
