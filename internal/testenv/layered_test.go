package testenv

import (
	"os"
	"path/filepath"
	"testing"
)

// TestUnpackImageAppliesWhiteouts pins the reference unpacker to what the
// OCI layer rules say the layered fixture becomes.
func TestUnpackImageAppliesWhiteouts(t *testing.T) {
	fx, err := BuildFixtures(filepath.Join(os.TempDir(), "stargz-get-fixtures"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := UnpackImage(fx.Layered, dir); err != nil {
		t.Fatal(err)
	}
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return "<" + err.Error() + ">"
		}
		return string(b)
	}
	gone := func(name string) bool {
		_, err := os.Lstat(filepath.Join(dir, name))
		return os.IsNotExist(err)
	}
	for _, c := range []struct {
		what string
		ok   bool
	}{
		{"etc/config deleted by layer 2", gone("etc/config")},
		{"etc/remove-me back from layer 2", read("etc/remove-me") == "back in layer 2\n"},
		{"opaque/a hidden", gone("opaque/a") && gone("opaque/b")},
		{"opaque/c kept", read("opaque/c") == "the only file left in opaque/\n"},
		{"src/bytes deleted", gone(GoPrefix + "/src/bytes")},
		{"src/bufio kept", !gone(GoPrefix + "/src/bufio/bufio.go")},
		{"dir-to-file is a file", read("dir-to-file") == "was a directory\n"},
		{"file-to-dir is a directory", read("file-to-dir/y") == "was a file\n"},
		{"link is a file", read("link") == "was a symlink\n"},
		{"same/one and same/two equal", read("same/one") == read("same/two") && len(read("same/one")) > 1000},
		{"whiteouts are not files", gone("etc/.wh.config") && gone("opaque/.wh..wh..opq")},
	} {
		if !c.ok {
			t.Errorf("reference unpack: %s: not so", c.what)
		}
	}
}
