package toc

import (
	"context"
	"fmt"
	"io"
	"sync"
)

// A TOC too big for the tail read is read in pieces of pieceBytes, in
// parallel: a registry serves each connection at its own pace (25 MB/s in
// the benchmark), so a 1 MB TOC comes in one round trip and about 10 ms
// instead of 40 ms more.
var pieceBytes int64 = 256 << 10 // a variable for tests

const maxPieces = 8

// pieces reads n bytes at off as up to maxPieces parallel range requests
// and hands them out in order, as each piece arrives.
type pieces struct {
	off, size int64 // of the whole read, and of each piece but the last
	bufs      [][]byte
	errs      []error
	done      []chan struct{}
	cancel    context.CancelFunc
	wg        sync.WaitGroup

	next int    // the piece Read is at
	cur  []byte // what is left of it
}

// readPieces starts reading the n bytes at off of r. The caller must
// close the result.
func readPieces(ctx context.Context, r RangeReader, off, n int64) *pieces {
	k := min(max((n+pieceBytes-1)/pieceBytes, 1), maxPieces)
	size := (n + k - 1) / k
	k = (n + size - 1) / size
	ctx, cancel := context.WithCancel(ctx)
	p := &pieces{off: off, size: size, bufs: make([][]byte, k), errs: make([]error, k), done: make([]chan struct{}, k), cancel: cancel}
	for i := range p.done {
		p.done[i] = make(chan struct{})
		start := off + int64(i)*size
		m := min(size, off+n-start)
		p.wg.Go(func() {
			defer close(p.done[i])
			p.bufs[i], p.errs[i] = readRange(ctx, r, start, m)
		})
	}
	return p
}

// requests returns how many range requests the read takes.
func (p *pieces) requests() int { return len(p.bufs) }

// wait returns piece i once it has arrived.
func (p *pieces) wait(i int) ([]byte, error) {
	<-p.done[i]
	return p.bufs[i], p.errs[i]
}

// last returns the read's last m bytes (m no more than a piece).
func (p *pieces) last(m int) ([]byte, error) {
	k := len(p.bufs)
	b, err := p.wait(k - 1)
	if err != nil || len(b) >= m || k == 1 {
		return b, err
	}
	prev, err := p.wait(k - 2)
	if err != nil {
		return nil, err
	}
	return append(append([]byte(nil), prev[len(prev)-(m-len(b)):]...), b...), nil
}

func (p *pieces) Read(b []byte) (int, error) {
	for len(p.cur) == 0 {
		if p.next == len(p.bufs) {
			return 0, io.EOF
		}
		buf, err := p.wait(p.next)
		if err != nil {
			return 0, fmt.Errorf("reading TOC: %w", err)
		}
		p.cur = buf
		p.next++
	}
	n := copy(b, p.cur)
	p.cur = p.cur[n:]
	return n, nil
}

// Close stops the pieces still downloading.
func (p *pieces) Close() error {
	p.cancel()
	p.wg.Wait()
	return nil
}
