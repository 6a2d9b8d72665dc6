package fill

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestFrom(t *testing.T) {
	buf := make([]byte, 8)
	r := iotest.OneByteReader(strings.NewReader("0123456789"))
	if n, err := From(r, buf); n != 8 || err != nil || string(buf) != "01234567" {
		t.Fatalf("From = %d, %v, %q; want a full buffer", n, err, buf)
	}
	if n, err := From(r, buf); n != 2 || err != io.EOF || string(buf[:n]) != "89" {
		t.Fatalf("From at the end = %d, %v; want 2, io.EOF", n, err)
	}
	cut := io.MultiReader(strings.NewReader("abc"), iotest.ErrReader(io.ErrUnexpectedEOF))
	if n, err := From(cut, buf); n != 3 || err != io.ErrUnexpectedEOF {
		t.Fatalf("From of a cut stream = %d, %v; want 3, io.ErrUnexpectedEOF", n, err)
	}
}

func TestCut(t *testing.T) {
	wrapped := fmt.Errorf("reading: %w", io.EOF)
	other := errors.New("connection reset")
	for _, tc := range []struct{ in, want error }{
		{io.EOF, io.ErrUnexpectedEOF},
		{wrapped, io.ErrUnexpectedEOF},
		{other, other},
		{nil, nil},
	} {
		if got := Cut(tc.in); got != tc.want {
			t.Errorf("Cut(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
