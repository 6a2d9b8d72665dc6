//go:build !unix

package fetch

func offHeap(n int) []byte { return make([]byte, n) }

func freeOffHeap([]byte) {}
