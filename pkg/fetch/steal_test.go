package fetch_test

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/stargz-get/stargz-get/pkg/fetch"
)

// slowBlob serves a blob from memory, the body of its first request
// slowly (and cut short after cutAt bytes, when set), the others at once;
// it records the ranges asked for.
type slowBlob struct {
	*blobFile
	cutAt  int
	mu     sync.Mutex
	first  bool
	ranges [][2]int64
}

func (b *slowBlob) ReadRange(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	b.mu.Lock()
	first := !b.first
	b.first = true
	b.ranges = append(b.ranges, [2]int64{off, off + n})
	b.mu.Unlock()
	if !first {
		return b.blobFile.ReadRange(ctx, off, n)
	}
	b.requests.Add(1)
	return io.NopCloser(&countedReader{r: &trickle{data: b.data[off : off+n], cutAt: b.cutAt}, n: &b.bytes}), nil
}

// trickle hands out 16 KiB per millisecond, failing at cutAt bytes.
type trickle struct {
	data  []byte
	n     int
	cutAt int
}

func (t *trickle) Read(p []byte) (int, error) {
	if t.n >= len(t.data) {
		return 0, io.EOF
	}
	if t.cutAt > 0 && t.n >= t.cutAt {
		return 0, errors.New("connection reset by peer")
	}
	time.Sleep(time.Millisecond)
	k := copy(p[:min(len(p), 16<<10)], t.data[t.n:])
	t.n += k
	return k, nil
}

// TestStealFromASlowRequest: downloaders left without work take over the
// rest of a request that is slow to arrive; the files come out right,
// and the slow request was not read to its end.
func TestStealFromASlowRequest(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cutAt int
	}{
		{"slow", 0},
		{"slow, then cut short", 3 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fl := fixtures.GoTree.Layers[0]
			bf := open(t, fl)
			l := readTOC(t, bf)
			l.TOC.Tail = nil
			b := &slowBlob{blobFile: bf, cutAt: tc.cutAt}
			l.Blob = b
			fetchWhole(t, fl, l, fetch.Options{Jobs: 2, MaxRequestBytes: 8 << 20})
			b.mu.Lock()
			defer b.mu.Unlock()
			slow := b.ranges[0]
			var within [][2]int64
			for _, r := range b.ranges[1:] {
				if r[0] > slow[0] && r[0] < slow[1] {
					within = append(within, r)
					if r[1] > slow[1] {
						t.Errorf("stolen range %v runs past the slow request's %v", r, slow)
					}
				}
			}
			if len(within) == 0 {
				t.Fatalf("no range taken over from the slow request %v; ranges %v", slow, b.ranges)
			}
			// Each byte is read once, but for the member the cut
			// request was in, read again on the retry.
			if got, max := bf.bytes.Load(), l.TOC.Offset+2<<20; got > max {
				t.Errorf("read %d bytes, more than the %d bytes of data before the TOC and a member", got, max)
			}
		})
	}
}
