package toc

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/containerd/stargz-snapshotter/estargz"
)

// memBlob serves ranges of a blob held in memory.
type memBlob []byte

func (b memBlob) Size() int64 { return int64(len(b)) }
func (b memBlob) ReadRange(_ context.Context, off, n int64) (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(b[off : off+n])), nil
}

// blobWithTOC makes a blob of some data, then a TOC member holding js,
// then the footer.
func blobWithTOC(t *testing.T, js string) memBlob {
	data := []byte("data before the TOC")
	off := len(data)
	data = append(data, tocMember(t, []byte(js))...)
	return append(data, estargz.CreateGzipFooter([]byte(fmt.Sprintf("%016xSTARGZ", off)))...)
}

// TOCs that decode but make no sense are errors, not panics.
func TestReadNonsenseTOC(t *testing.T) {
	for _, tc := range []struct{ name, js, want string }{
		{"null entry", `{"version":1,"entries":[null]}`, "TOC entry 0 is null"},
		{"null entry after a file", `{"version":1,"entries":[{"name":"a","type":"dir"},null]}`, "TOC entry 1 is null"},
		{"chunk first", `{"version":1,"entries":[{"name":"a","type":"chunk","offset":1,"chunkSize":1}]}`, "not following a regular file"},
		{"chunk offset in the TOC", `{"version":1,"entries":[{"name":"a","type":"reg","size":5,"offset":100000}]}`, "outside the layer's data"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Read(context.Background(), blobWithTOC(t, tc.js), Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Read = %v, want an error containing %q", err, tc.want)
			}
		})
	}
	if _, err := Read(context.Background(), blobWithTOC(t, `{"version":1,"entries":[{"name":"a","type":"dir"}]}`), Options{}); err != nil {
		t.Errorf("Read of a sound TOC: %v", err)
	}
}

// A TOC whose tar entry is cut short after the JSON is an error, even
// though the JSON itself decodes.
func TestReadTruncatedTOCEntry(t *testing.T) {
	js := []byte(`{"version":1,"entries":[{"name":"a","type":"dir"}]}`)
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	tw := tar.NewWriter(zw)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: estargz.TOCTarName, Size: int64(len(js)) + 100, Mode: 0o444}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(js); err != nil {
		t.Fatal(err)
	}
	tw.Flush() // reports the 100 bytes never written; the member ends here anyway
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	data := []byte("data before the TOC")
	off := len(data)
	data = append(data, b.Bytes()...)
	data = append(data, estargz.CreateGzipFooter([]byte(fmt.Sprintf("%016xSTARGZ", off)))...)
	if _, err := Read(context.Background(), memBlob(data), Options{}); err == nil || !strings.Contains(err.Error(), "decompressing TOC") {
		t.Errorf("Read = %v, want an error decompressing the TOC", err)
	}
}
