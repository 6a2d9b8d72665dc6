package libdeflate_test

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/stargz-get/stargz-get/internal/libdeflate"
)

// decompressor returns a Decompressor, skipping the test where libdeflate
// cannot be loaded; CI installs it, so there it fails instead.
func decompressor(t *testing.T) *libdeflate.Decompressor {
	t.Helper()
	z, err := libdeflate.NewDecompressor()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI must test libdeflate: %v", err)
		}
		t.Skip(err)
	}
	t.Cleanup(z.Free)
	return z
}

// member gzips data as one member, with klauspost's writer at level.
func member(t *testing.T, data []byte, level int) []byte {
	t.Helper()
	var b bytes.Buffer
	zw, err := gzip.NewWriterLevel(&b, level)
	if err != nil {
		t.Fatal(err)
	}
	zw.Write(data)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// sample is compressible text with some noise, as source files are.
func sample(n int) []byte {
	r := rand.New(rand.NewPCG(1, 2))
	words := []string{"func ", "return ", "err ", "if ", "nil", "{\n", "}\n", "\t", "// ", "x", "y"}
	var b bytes.Buffer
	for b.Len() < n {
		b.WriteString(words[r.IntN(len(words))])
		if r.IntN(10) == 0 {
			b.WriteByte(byte(r.Uint32()))
		}
	}
	return b.Bytes()[:n]
}

func TestGunzipMatchesTheWriter(t *testing.T) {
	z := decompressor(t)
	for _, n := range []int{0, 1, 1000, 300 << 10} {
		data := sample(n)
		for _, level := range []int{gzip.NoCompression, gzip.BestSpeed, gzip.DefaultCompression, gzip.BestCompression} {
			m := member(t, data, level)
			if got := libdeflate.ISize(m); got != int64(n) {
				t.Errorf("%d bytes, level %d: ISize %d", n, level, got)
			}
			out := make([]byte, n+10)
			k, used, err := z.Gunzip(out, m)
			if err != nil {
				t.Fatalf("%d bytes, level %d: %v", n, level, err)
			}
			if used != len(m) || !bytes.Equal(out[:k], data) {
				t.Errorf("%d bytes, level %d: took %d of %d bytes, wrote %d bytes (equal: %v)", n, level, used, len(m), k, bytes.Equal(out[:k], data))
			}
		}
	}
}

// A span holding two members is decoded up to the end of the first, as
// eStargz spans are (a chunk's member, then headers in members of their
// own).
func TestGunzipStopsAtTheFirstMember(t *testing.T) {
	z := decompressor(t)
	a, b := sample(5000), []byte("the next member")
	span := append(member(t, a, 6), member(t, b, 6)...)
	out := make([]byte, 10000)
	k, used, err := z.Gunzip(out, span)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out[:k], a) || used != len(member(t, a, 6)) {
		t.Errorf("wrote %d bytes, took %d; want the first member's %d bytes and its %d-byte member", k, used, len(a), len(member(t, a, 6)))
	}
	// The trailer at the span's end is the second member's.
	if got := libdeflate.ISize(span); got != int64(len(b)) {
		t.Errorf("ISize %d, want %d", got, len(b))
	}
}

func TestGunzipRefusesBadInput(t *testing.T) {
	z := decompressor(t)
	data := sample(50 << 10)
	good := member(t, data, 6)
	// Bad data can also decode to more than it should before libdeflate
	// finds it bad: then it says there is no room. Either way it fails.
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"not gzip", []byte("hello, this is not a gzip member at all")},
		{"cut short", good[:len(good)/2]},
		{"trailer cut", good[:len(good)-3]},
		{"flipped byte", flip(good, len(good)/2)},
		{"wrong CRC-32", flip(good, len(good)-6)},
		{"wrong length", flip(good, len(good)-2)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, room := range []int{len(data), 2 * len(data)} {
				out := make([]byte, room)
				_, _, err := z.Gunzip(out, tc.in)
				if !errors.Is(err, libdeflate.ErrBadData) && !errors.Is(err, libdeflate.ErrInsufficientSpace) {
					t.Errorf("room for %d bytes: error %v, want one of libdeflate's", room, err)
				}
			}
		})
	}
	t.Run("too little room", func(t *testing.T) {
		if _, _, err := z.Gunzip(make([]byte, len(data)-1), good); !errors.Is(err, libdeflate.ErrInsufficientSpace) {
			t.Errorf("error %v, want %v", err, libdeflate.ErrInsufficientSpace)
		}
	})
}

func flip(b []byte, i int) []byte {
	b = bytes.Clone(b)
	b[i] ^= 0x20
	return b
}

func TestISizeOfTooShort(t *testing.T) {
	if got := libdeflate.ISize([]byte{0x1f, 0x8b, 8}); got != -1 {
		t.Errorf("ISize of 3 bytes: %d, want -1", got)
	}
}
