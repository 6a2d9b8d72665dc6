package blob

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"testing/iotest"
)

// oddReader returns at most a random few bytes per Read, then err.
type oddReader struct {
	b     []byte
	err   error
	rnd   *rand.Rand
	reads atomic.Int64
}

func (o *oddReader) Read(p []byte) (int, error) {
	o.reads.Add(1)
	if len(o.b) == 0 {
		return 0, o.err
	}
	n := min(len(p), len(o.b), 1+o.rnd.IntN(5000))
	copy(p, o.b[:n])
	o.b = o.b[n:]
	return n, nil
}

func TestReadAheadDeliversInOrder(t *testing.T) {
	data := make([]byte, 1<<20+123)
	for i := range data {
		data[i] = byte(i * 7)
	}
	for _, tc := range []struct{ buffers, size int }{{1, 1}, {2, 4096}, {4, 64 << 10}, {3, 4 << 20}} {
		r := &oddReader{b: data, err: io.EOF, rnd: rand.New(rand.NewPCG(1, uint64(tc.size)))}
		a := ReadAhead(r, tc.buffers, tc.size)
		if err := iotest.TestReader(a, data); err != nil {
			t.Fatalf("%d buffers of %d: %v", tc.buffers, tc.size, err)
		}
		a.Close()
	}
}

func TestReadAheadPassesErrorsAfterData(t *testing.T) {
	data := bytes.Repeat([]byte("abc"), 50000)
	for _, want := range []error{io.ErrUnexpectedEOF, ErrDigestMismatch, errors.New("connection reset")} {
		r := &oddReader{b: data, err: want, rnd: rand.New(rand.NewPCG(2, 3))}
		a := ReadAhead(r, 3, 8192)
		got, err := io.ReadAll(a)
		if err != want {
			t.Fatalf("err = %v, want %v (not turned into a clean end)", err, want)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("%d bytes before the error, want %d", len(got), len(data))
		}
		a.Close()
	}
}

func TestReadAheadCloseStopsReading(t *testing.T) {
	r := &oddReader{b: make([]byte, 64<<20), err: io.EOF, rnd: rand.New(rand.NewPCG(4, 5))}
	a := ReadAhead(r, 2, 32<<10)
	if _, err := io.ReadFull(a, make([]byte, 100<<10)); err != nil {
		t.Fatal(err)
	}
	a.Close()
	reads := r.reads.Load()
	if _, err := a.Read(make([]byte, 10)); err == nil {
		t.Fatal("read after Close succeeded")
	}
	if r.reads.Load() != reads {
		t.Fatal("the underlying reader was read after Close returned")
	}
	if left := len(r.b); left < 60<<20 {
		t.Fatalf("read %d bytes ahead of a reader that took 100 KiB", 64<<20-left)
	}
}
