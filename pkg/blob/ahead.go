package blob

import (
	"errors"
	"io"
	"sync"

	"github.com/stargz-get/stargz-get/internal/fill"
)

// errAheadClosed is what a ReadAhead reader returns after Close.
var errAheadClosed = errors.New("read after close")

// ReadAhead returns a reader of r's bytes that reads r on a goroutine of
// its own, up to buffers buffers of size bytes ahead of the caller, so
// that producing the bytes (inflating a layer) and using them (walking the
// tar, hashing and writing files) run on two cores instead of taking turns
// on one. r's error (io.EOF at its end) is returned after the bytes read
// before it. Close stops the goroutine and waits for it to end (a read of
// r in progress finishes first), so that r may be closed after it; Read
// and Close are for one goroutine, as r's Read is.
func ReadAhead(r io.Reader, buffers, size int) io.ReadCloser {
	buffers, size = max(buffers, 1), max(size, 1)
	a := &readAhead{full: make(chan aheadChunk, buffers), free: make(chan []byte, buffers), done: make(chan struct{}), exited: make(chan struct{})}
	for range buffers {
		a.free <- make([]byte, size)
	}
	go a.run(r)
	return a
}

type readAhead struct {
	full   chan aheadChunk // filled buffers, in order
	free   chan []byte
	done   chan struct{} // closed by Close
	exited chan struct{} // closed when run returns
	buf    []byte        // the buffer cur is in, to free once read
	cur    []byte
	err    error
	once   sync.Once
}

type aheadChunk struct {
	buf []byte
	n   int
	err error
}

// run fills free buffers from r until r fails or ends, or Close. Sending
// on full never blocks: there are no more chunks than buffers.
func (a *readAhead) run(r io.Reader) {
	defer close(a.exited)
	for {
		var buf []byte
		select {
		case buf = <-a.free:
		case <-a.done:
			return
		}
		n, err := fill.From(r, buf)
		a.full <- aheadChunk{buf, n, err}
		if err != nil {
			return
		}
	}
}

func (a *readAhead) Read(p []byte) (int, error) {
	for len(a.cur) == 0 {
		if a.err != nil {
			return 0, a.err
		}
		if a.buf != nil {
			a.free <- a.buf // never blocks: it came from free
			a.buf = nil
		}
		c := <-a.full
		a.buf, a.cur, a.err = c.buf, c.buf[:c.n], c.err
	}
	n := copy(p, a.cur)
	a.cur = a.cur[n:]
	return n, nil
}

// Close stops reading ahead and waits for the goroutine to end.
func (a *readAhead) Close() error {
	a.once.Do(func() {
		close(a.done)
		<-a.exited
		a.cur, a.err = nil, errAheadClosed
	})
	return nil
}
