package fetch

import (
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// copyFilled writes full buffers, and passes on a source's errors,
// io.ErrUnexpectedEOF of a cut stream included; io.EOF ends it cleanly.
func TestCopyFilled(t *testing.T) {
	src := strings.Repeat("0123456789", 1000)
	var dst strings.Builder
	w := &countingWriter{w: &dst}
	n, err := copyFilled(w, iotest.HalfReader(strings.NewReader(src)), make([]byte, 4096))
	if err != nil || n != int64(len(src)) || dst.String() != src {
		t.Fatalf("copyFilled = %d, %v; copied %d bytes", n, err, dst.Len())
	}
	if w.writes != 3 { // 4096 + 4096 + 1808
		t.Errorf("copyFilled wrote %d times, want 3 full-buffer writes", w.writes)
	}
	cut := io.MultiReader(strings.NewReader("abc"), iotest.ErrReader(io.ErrUnexpectedEOF))
	if n, err := copyFilled(io.Discard, cut, make([]byte, 16)); n != 3 || err != io.ErrUnexpectedEOF {
		t.Errorf("copyFilled of a cut stream = %d, %v; want 3, io.ErrUnexpectedEOF", n, err)
	}
}

type countingWriter struct {
	w      io.Writer
	writes int
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.writes++
	return c.w.Write(p)
}
