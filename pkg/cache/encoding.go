package cache

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// decodeEntry returns the first rawSize bytes data, kept in encoding,
// decodes to, or an error when it decodes to fewer. What follows them (a
// member may end with the next file's tar header) is never decoded, so a
// damaged entry cannot make it allocate more than its index promised.
func decodeEntry(encoding string, data []byte, rawSize int64) ([]byte, error) {
	var r io.Reader
	switch encoding {
	case EncodingGzip:
		zr, _ := gzipReaders.Get().(*gzip.Reader)
		if zr == nil {
			zr = new(gzip.Reader)
		}
		defer gzipReaders.Put(zr)
		if err := zr.Reset(bytes.NewReader(data)); err != nil {
			return nil, fmt.Errorf("decoding gzip entry: %w", err)
		}
		zr.Multistream(false)
		r = zr
	case EncodingZstd:
		d, ok := zstdDecoders.Get().(*zstd.Decoder)
		if !ok {
			return nil, errors.New("creating a zstd decoder")
		}
		defer zstdDecoders.Put(d)
		if err := d.Reset(bytes.NewReader(data)); err != nil {
			return nil, fmt.Errorf("decoding zstd entry: %w", err)
		}
		defer d.Reset(nil)
		r = d
	default:
		return nil, fmt.Errorf("unknown encoding %q", encoding)
	}
	out := make([]byte, rawSize)
	if _, err := io.ReadFull(r, out); err != nil {
		return nil, fmt.Errorf("decoding %s entry of %d bytes: %w", encoding, rawSize, err)
	}
	return out, nil
}

// gzipReaders and zstdDecoders are reused: a new one allocates its window
// buffers, which for the thousands of small chunks of a layer kept the
// collector busy.
var gzipReaders sync.Pool

// zstdDecoders: see gzipReaders.
var zstdDecoders = sync.Pool{New: func() any {
	d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
	if err != nil {
		return err
	}
	return d
}}
