package libdeflate

import (
	"errors"
	"fmt"
	"os"
	"sync"
)

// Errors a decode returns, as libdeflate names its results.
var (
	// ErrBadData: the input is not one valid gzip member (corrupt data,
	// a wrong CRC-32 or length, or cut short).
	ErrBadData = errors.New("gzip member is corrupt or cut short")
	// ErrInsufficientSpace: the member holds more than dst has room for,
	// or is corrupt in a way that decodes to more before it shows.
	ErrInsufficientSpace = errors.New("gzip member holds more than expected")
	// ErrDisabled: SG_LIBDEFLATE=off asked for klauspost/compress alone.
	ErrDisabled = errors.New("turned off by SG_LIBDEFLATE=off")
)

var (
	loadOnce sync.Once
	loadErr  error
)

// Load opens the library once and says whether it can be used: nil, or
// why not (no cgo in this build, the library missing, SG_LIBDEFLATE=off).
func Load() error {
	loadOnce.Do(func() {
		if os.Getenv("SG_LIBDEFLATE") == "off" {
			loadErr = ErrDisabled
			return
		}
		if err := open(); err != nil {
			loadErr = fmt.Errorf("loading libdeflate: %w", err)
		}
	})
	return loadErr
}

// A Decompressor decodes one member at a time: it is not for concurrent
// use. Its C state is a few KiB; Free releases it.
type Decompressor struct {
	d decompressor
}

// NewDecompressor returns a decompressor, or Load's error.
func NewDecompressor() (*Decompressor, error) {
	if err := Load(); err != nil {
		return nil, err
	}
	d, err := alloc()
	if err != nil {
		return nil, err
	}
	return &Decompressor{d: d}, nil
}

// Gunzip decodes the gzip member at the start of src into dst and returns
// how many bytes it wrote and how many of src the member took. src may
// go on past the member; dst must have room for all of it (the member's
// trailer says how much, see ISize).
func (z *Decompressor) Gunzip(dst, src []byte) (n, consumed int, err error) {
	if len(src) == 0 {
		return 0, 0, ErrBadData
	}
	return gunzip(z.d, dst, src)
}

// Free releases the decompressor's C state; z is not to be used after.
func (z *Decompressor) Free() {
	free(z.d)
	z.d = nil
}

// ISize returns the uncompressed size that the gzip member ending at the
// end of member says it holds (modulo 2^32, as gzip records it), or -1
// when member is too short to have a trailer. Nothing checks it until the
// member is decoded.
func ISize(member []byte) int64 {
	if len(member) < 18 { // the smallest member: header, empty block, trailer
		return -1
	}
	t := member[len(member)-4:]
	return int64(uint32(t[0]) | uint32(t[1])<<8 | uint32(t[2])<<16 | uint32(t[3])<<24)
}
