// Package fill reads a buffer full, and names a stream cut short.
//
// io.ReadFull turns a short read before io.EOF into io.ErrUnexpectedEOF,
// which is also what a decompressor or tar reader returns for a cut
// stream: a caller that takes the first for the normal end of its input
// takes the second for it too. From keeps them apart: it returns the
// source's own error, io.EOF included, with whatever it read before it.
package fill

import (
	"errors"
	"io"
)

// From reads from r into buf until buf is full or r returns an error,
// and returns the bytes read and that error (nil when buf was filled).
func From(r io.Reader, buf []byte) (int, error) {
	n := 0
	var err error
	for n < len(buf) && err == nil {
		var k int
		k, err = r.Read(buf[n:])
		n += k
	}
	return n, err
}

// Cut turns io.EOF, from a source that ended where bytes were still due,
// into io.ErrUnexpectedEOF; other errors pass unchanged.
func Cut(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
