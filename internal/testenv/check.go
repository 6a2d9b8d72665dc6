package testenv

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// maxMismatches bounds the lines of a CheckTree error.
const maxMismatches = 20

// Want returns the entries of files at or under prefix ("usr/local/go/src/net"
// selects that directory and everything below it; "" selects all).
func Want(files []File, prefix string) []File {
	prefix = strings.Trim(prefix, "/")
	var out []File
	for _, f := range files {
		if prefix == "" || f.Name == prefix || strings.HasPrefix(f.Name, prefix+"/") {
			out = append(out, f)
		}
	}
	return out
}

// CheckTree checks that dir holds the entries of want whose Name is in
// names (nil names means all of want), each at dir/Name: of the right type
// (without following symlinks), with the same permission bits (mode &
// 0777), the same content for regular files, the same target for symlinks.
// A "hardlink" entry must have its target's content; it need not be a real
// hard link. The target's digest is taken from want (all of it, not only
// the named entries) or, if it is not there, from the file dir/LinkName.
//
// It returns nil, or one error listing the mismatches, one a line.
func CheckTree(dir string, want []File, names []string) error {
	byName := make(map[string]File, len(want))
	for _, f := range want {
		byName[f.Name] = f
	}
	var sel []File
	if names == nil {
		sel = want
	} else {
		for _, n := range names {
			f, ok := byName[n]
			if !ok {
				return fmt.Errorf("checking tree: %q is not in the ground truth", n)
			}
			sel = append(sel, f)
		}
	}
	var bad []string
	for _, f := range sel {
		if err := checkEntry(dir, f, byName); err != nil {
			bad = append(bad, fmt.Sprintf("%s: %v", f.Name, err))
		}
	}
	if len(bad) == 0 {
		return nil
	}
	n := len(bad)
	if n > maxMismatches {
		bad = append(bad[:maxMismatches], fmt.Sprintf("... and %d more", n-maxMismatches))
	}
	return fmt.Errorf("checking tree %s: %d of %d entries differ:\n%s", dir, n, len(sel), strings.Join(bad, "\n"))
}

func checkEntry(dir string, f File, byName map[string]File) error {
	p := filepath.Join(dir, filepath.FromSlash(f.Name))
	fi, err := os.Lstat(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return errors.New("missing")
		}
		return err
	}
	wantType := f.Type
	if wantType == "hardlink" {
		wantType = "reg"
	}
	if got := fileType(fi.Mode()); got != wantType {
		return fmt.Errorf("type %s, want %s", got, f.Type)
	}
	if got, want := int64(fi.Mode().Perm()), f.Mode&0o777; got != want {
		return fmt.Errorf("mode %#o, want %#o", got, want)
	}
	switch f.Type {
	case "reg":
		return checkContent(p, fi, f.Size, f.Digest)
	case "symlink":
		got, err := os.Readlink(p)
		if err != nil {
			return err
		}
		if got != f.LinkName {
			return fmt.Errorf("symlink to %q, want %q", got, f.LinkName)
		}
	case "hardlink":
		if t, ok := byName[f.LinkName]; ok && t.Type == "reg" {
			return checkContent(p, fi, t.Size, t.Digest)
		}
		tp := filepath.Join(dir, filepath.FromSlash(f.LinkName))
		td, tsize, err := fileDigest(tp)
		if err != nil {
			return fmt.Errorf("reading hardlink target: %w", err)
		}
		return checkContent(p, fi, tsize, td)
	}
	return nil
}

func checkContent(p string, fi fs.FileInfo, size int64, digest string) error {
	if fi.Size() != size {
		return fmt.Errorf("size %d, want %d", fi.Size(), size)
	}
	got, _, err := fileDigest(p)
	if err != nil {
		return err
	}
	if got != digest {
		return fmt.Errorf("digest %s, want %s", got, digest)
	}
	return nil
}

// fileDigest returns "sha256:<hex>" and the size of the file at p.
func fileDigest(p string) (string, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), n, nil
}

// fileType names a file mode the way the eStargz TOC names entry types.
func fileType(m fs.FileMode) string {
	switch {
	case m.IsRegular():
		return "reg"
	case m.IsDir():
		return "dir"
	case m&fs.ModeSymlink != 0:
		return "symlink"
	case m&fs.ModeNamedPipe != 0:
		return "fifo"
	case m&fs.ModeCharDevice != 0:
		return "char"
	case m&fs.ModeDevice != 0:
		return "block"
	default:
		return "other"
	}
}
