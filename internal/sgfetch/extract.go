package sgfetch

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// errNotArchive means a blob is not an archive --extract unpacks; it is
// then kept as a file.
var errNotArchive = errors.New("not an archive")

// Archive kinds, from the blob's first bytes (media types lie: oras push
// types every file as a tar layer).
const (
	kindTar  = "tar"
	kindZip  = "zip"
	kindGzip = "gzip"
	kindZstd = "zstd"
	kindXz   = "xz"
)

var magics = []struct {
	kind  string
	magic []byte
}{
	{kindGzip, []byte{0x1f, 0x8b}},
	{kindZstd, []byte{0x28, 0xb5, 0x2f, 0xfd}},
	{kindXz, []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}},
	{kindZip, []byte("PK\x03\x04")},
}

// isTar reports whether b (at least 512 bytes) is a tar header.
func isTar(b []byte) bool {
	return len(b) >= 512 && (bytes.HasPrefix(b[257:], []byte("ustar\x00")) || bytes.HasPrefix(b[257:], []byte("ustar  \x00")))
}

// archiveMediaType reports whether a media type says the blob is an
// archive (a tar layer, zip, gzip, zstd, xz): then bytes that are none of
// these are an error rather than a file to keep. Plain oras files are
// typed as uncompressed tar layers, so that one type alone says nothing.
func archiveMediaType(mt string) bool {
	for _, s := range []string{"zip", "gzip", "+zstd", "x-xz", "x-tar", "tar+"} {
		if strings.Contains(mt, s) {
			return true
		}
	}
	return false
}

// decompress returns the tar stream of a compressed blob of kind.
func decompress(kind string, r io.Reader) (io.ReadCloser, error) {
	switch kind {
	case kindGzip:
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, err
		}
		return zr, nil
	case kindZstd:
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, err
		}
		return zr.IOReadCloser(), nil
	case kindXz:
		zr, err := xz.NewReader(r)
		if err != nil {
			return nil, err
		}
		return io.NopCloser(zr), nil
	}
	return io.NopCloser(r), nil
}

// extractBlob unpacks the archive root/name into root and returns how
// many entries it wrote. A blob that is not a tar, tar.gz, tar.zst,
// tar.xz or zip is errNotArchive, unless its media type mt claims it is
// one.
func extractBlob(root *os.Root, name, mt string) (int, error) {
	f, err := root.Open(name)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	head := make([]byte, 512)
	n, _ := io.ReadFull(f, head)
	head = head[:n]
	kind := ""
	for _, m := range magics {
		if bytes.HasPrefix(head, m.magic) {
			kind = m.kind
		}
	}
	if kind == "" && isTar(head) {
		kind = kindTar
	}
	notArchive := func() (int, error) {
		if archiveMediaType(mt) {
			return 0, fmt.Errorf("its media type %s says archive, but its bytes are no tar, tar.gz, tar.zst, tar.xz or zip", mt)
		}
		return 0, errNotArchive
	}
	if kind == "" {
		return notArchive()
	}
	if kind == kindZip {
		fi, err := f.Stat()
		if err != nil {
			return 0, err
		}
		return extractZip(root, name, f, fi.Size())
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	tr, err := decompress(kind, bufio.NewReaderSize(f, 1<<20))
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", kind, err)
	}
	defer tr.Close()
	br := bufio.NewReaderSize(tr, 1<<16)
	if kind != kindTar {
		if h, _ := br.Peek(512); !isTar(h) {
			return notArchive() // a compressed file that is not a tar
		}
	}
	return extractTar(root, name, br)
}

// entryName checks an archive entry's name: relative, no "..", no NUL.
func entryName(n string) (string, error) {
	if n == "" || strings.ContainsRune(n, 0) {
		return "", fmt.Errorf("entry %q: empty or NUL in name", n)
	}
	if strings.HasPrefix(n, "/") {
		return "", fmt.Errorf("entry %q: absolute name", n)
	}
	for _, p := range strings.Split(n, "/") {
		if p == ".." {
			return "", fmt.Errorf("entry %q: climbs out with ..", n)
		}
	}
	return path.Clean(n), nil
}

// linkInside checks that a symlink at name pointing to target stays in
// the output directory.
func linkInside(name, target string) error {
	if target == "" || strings.HasPrefix(target, "/") {
		return fmt.Errorf("entry %q: link to %q leaves the output directory", name, target)
	}
	if t := path.Join(path.Dir(name), target); t == ".." || strings.HasPrefix(t, "../") {
		return fmt.Errorf("entry %q: link to %q leaves the output directory", name, target)
	}
	return nil
}

// mkParent makes the parent directory of name.
func mkParent(root *os.Root, name string) error {
	if d := path.Dir(name); d != "." {
		return root.MkdirAll(d, 0o755)
	}
	return nil
}

// writeFile writes r to name through a temp file renamed into place, so
// a failed extraction leaves no half-written file under its name.
func writeFile(root *os.Root, name string, mode fs.FileMode, r io.Reader) error {
	if err := mkParent(root, name); err != nil {
		return err
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	tmp := path.Join(path.Dir(name), ".sg-x-"+hex.EncodeToString(rnd[:])+".tmp")
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode&0o777)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = root.Rename(tmp, name)
	}
	if err != nil {
		root.Remove(tmp)
		return fmt.Errorf("writing %s: %w", name, err)
	}
	return nil
}

// notArchive refuses an entry that would write over the archive being
// extracted (or under it, as if it were a directory): the archive is
// removed afterwards, and the entry with it.
func notArchive(name, archive string) error {
	if name == archive || strings.HasPrefix(name, archive+"/") {
		return fmt.Errorf("entry %q would write over the archive %s being extracted", name, archive)
	}
	return nil
}

func extractTar(root *os.Root, archive string, r io.Reader) (int, error) {
	tr := tar.NewReader(r)
	n := 0
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("reading tar: %w", err)
		}
		name, err := memberName(hdr.Name, archive)
		if err != nil {
			return n, err
		}
		if name == "." {
			continue
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			err = root.MkdirAll(name, 0o755)
		case tar.TypeReg:
			err = writeFile(root, name, fs.FileMode(hdr.Mode), tr)
		case tar.TypeSymlink:
			if err = linkInside(name, hdr.Linkname); err == nil {
				if err = mkParent(root, name); err == nil {
					root.Remove(name)
					err = root.Symlink(hdr.Linkname, name)
				}
			}
		case tar.TypeLink:
			var target string
			if target, err = entryName(hdr.Linkname); err == nil {
				if err = mkParent(root, name); err == nil {
					root.Remove(name)
					err = root.Link(target, name)
				}
			}
		case tar.TypeXGlobalHeader:
			continue
		default:
			err = fmt.Errorf("entry %q: %s entries (devices, fifos) are not extracted", hdr.Name, typeName(hdr.Typeflag))
		}
		if err != nil {
			return n, err
		}
		n++
	}
}

// memberName is the cleaned name of an archive member, refused when it
// leaves the output directory or would write over the archive itself.
func memberName(raw, archive string) (string, error) {
	name, err := entryName(raw)
	if err == nil {
		err = notArchive(name, archive)
	}
	return name, err
}

func typeName(t byte) string {
	switch t {
	case tar.TypeChar:
		return "character device"
	case tar.TypeBlock:
		return "block device"
	case tar.TypeFifo:
		return "fifo"
	}
	return fmt.Sprintf("type %q", t)
}

func extractZip(root *os.Root, archive string, r io.ReaderAt, size int64) (int, error) {
	zr, err := zip.NewReader(r, size)
	if err != nil {
		return 0, fmt.Errorf("reading zip: %w", err)
	}
	n := 0
	for _, zf := range zr.File {
		name, err := memberName(zf.Name, archive)
		if err != nil {
			return n, err
		}
		if name == "." {
			continue
		}
		mode := zf.Mode()
		switch {
		case mode.IsDir():
			err = root.MkdirAll(name, 0o755)
		case mode&fs.ModeSymlink != 0:
			var target []byte
			if target, err = readZip(zf, 4096); err == nil {
				if err = linkInside(name, string(target)); err == nil {
					if err = mkParent(root, name); err == nil {
						root.Remove(name)
						err = root.Symlink(string(target), name)
					}
				}
			}
		case mode.IsRegular():
			var rc io.ReadCloser
			if rc, err = zf.Open(); err == nil {
				err = writeFile(root, name, mode.Perm(), rc)
				rc.Close()
			}
		default:
			err = fmt.Errorf("entry %q: %s entries are not extracted", zf.Name, mode.Type())
		}
		if err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

func readZip(zf *zip.File, limit int64) ([]byte, error) {
	rc, err := zf.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(io.LimitReader(rc, limit))
}
