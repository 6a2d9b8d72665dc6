//go:build unix

package blob_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stargz-get/stargz-get/internal/testenv"
	"github.com/stargz-get/stargz-get/pkg/blob"
)

// TestBusy: a blob another process is downloading into the same
// directory (its temp file locked) is refused, and its files are left
// alone.
func TestBusy(t *testing.T) {
	e := testEnv(t)
	b, f := e.open(t, testenv.NotesTitle)
	root, dir := openRoot(t)
	part, _ := blob.TempNames(f.Digest)
	other, err := os.OpenFile(filepath.Join(dir, part), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := other.WriteString("the other process's bytes"); err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(other.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	_, err = blob.Download(context.Background(), root, "notes.txt", b, f.Digest)
	if err == nil || !strings.Contains(err.Error(), "another process is downloading") {
		t.Fatalf("got %v, want the blob refused as busy", err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, part)); string(got) != "the other process's bytes" {
		t.Errorf("the other process's temp file was changed: %q", got)
	}
	unix.Flock(int(other.Fd()), unix.LOCK_UN)
	if _, err := blob.Download(context.Background(), root, "notes.txt", b, f.Digest); err != nil {
		t.Fatalf("after the lock is gone: %v", err)
	}
	sameFile(t, filepath.Join(dir, "notes.txt"), f)
}
