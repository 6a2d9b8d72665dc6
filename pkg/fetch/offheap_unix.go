//go:build unix

package fetch

import "golang.org/x/sys/unix"

// offHeap returns n bytes mapped outside the Go heap: buffers that large
// members are decoded through, and those spans are read ahead into, would
// otherwise raise the collector's heap goal by half again their size
// (GOGC=50), and the peak memory with it; and they are given back to the
// system at once when freed.
func offHeap(n int) []byte {
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return make([]byte, n)
	}
	return b
}

// freeOffHeap unmaps a buffer offHeap returned (nil is ignored).
func freeOffHeap(b []byte) {
	if cap(b) > 0 {
		unix.Munmap(b[:cap(b)])
	}
}
