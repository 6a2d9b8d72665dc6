package fetch

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func openRoot(t *testing.T) (*os.Root, string) {
	t.Helper()
	dir := t.TempDir()
	r, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r, dir
}

func isDir(t *testing.T, p string) bool {
	t.Helper()
	fi, err := os.Lstat(p)
	return err == nil && fi.IsDir()
}

// The table makes directories from their parents' descriptors, and says
// which it created.
func TestDirTableMkdir(t *testing.T) {
	r, dir := openRoot(t)
	d := newDirTable(r)
	defer d.close()
	if err := os.Mkdir(filepath.Join(dir, "old"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		fresh bool
	}{
		{"a/b/c", true},
		{"a/b", false}, // made as a parent above: known, not fresh
		{"a/b/d", true},
		{"old", false},
		{"old/new", true},
	} {
		fresh, err := d.mkdir(c.name)
		if err != nil || fresh != c.fresh {
			t.Errorf("mkdir(%q) = %v, %v; want %v, nil", c.name, fresh, err, c.fresh)
		}
		if !isDir(t, filepath.Join(dir, c.name)) {
			t.Errorf("mkdir(%q) made no directory", c.name)
		}
	}
	f, err := d.get("a/b/c")
	if err != nil || f == nil {
		t.Fatalf("get(a/b/c) = %v, %v", f, err)
	}
	if g, _ := d.get("a/b/c"); g != f {
		t.Error("get opened a directory the table holds again")
	}
}

// A symlink on the way is resolved by the root, as os.Root would: one that
// stays inside the output is followed, one that leaves it is refused, and
// a file in the way is an error; nothing is made outside.
func TestDirTableSymlinksAndFiles(t *testing.T) {
	r, dir := openRoot(t)
	outside := t.TempDir()
	for _, err := range []error{
		os.Mkdir(filepath.Join(dir, "real"), 0o755),
		os.Symlink("real", filepath.Join(dir, "in")),
		os.Symlink(outside, filepath.Join(dir, "out")),
		os.WriteFile(filepath.Join(dir, "file"), nil, 0o644),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	d := newDirTable(r)
	defer d.close()
	if _, err := d.mkdir("in/x"); err != nil || !isDir(t, filepath.Join(dir, "real", "x")) {
		t.Errorf("mkdir(in/x) through a symlink inside the output: %v; want real/x made", err)
	}
	if f, err := d.get("in/x"); err != nil || f == nil {
		t.Errorf("get(in/x) = %v, %v", f, err)
	}
	if _, err := d.mkdir("out/x"); err == nil {
		t.Error("mkdir(out/x) through a symlink out of the output succeeded")
	}
	if _, err := os.Lstat(filepath.Join(outside, "x")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("something was made outside the output: %v", err)
	}
	if _, err := d.mkdir("file/x"); err == nil {
		t.Error("mkdir(file/x) under a regular file succeeded")
	}
	if f, err := d.get("file"); err == nil {
		t.Errorf("get(file) of a regular file = %v, want an error", f)
	}
	if _, err := d.mkdir("file"); err == nil {
		t.Error("mkdir(file) where a regular file is succeeded")
	}
}

// A full table hands out no descriptor; directories are still made,
// through the root by path.
func TestDirTableFull(t *testing.T) {
	r, dir := openRoot(t)
	d := newDirTable(r)
	d.max = 2
	defer d.close()
	if _, err := d.mkdir("a/b/c/d"); err != nil || !isDir(t, filepath.Join(dir, "a/b/c/d")) {
		t.Fatalf("mkdir(a/b/c/d) with a table of 2: %v", err)
	}
	if f, err := d.get("a/b/c/d"); err != nil || f != nil {
		t.Errorf("get of a directory past the table's room = %v, %v; want nil, nil", f, err)
	}
	if len(d.fds) > 2 {
		t.Errorf("the table holds %d descriptors, more than its 2", len(d.fds))
	}
}
