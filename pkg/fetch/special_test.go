package fetch_test

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/stargz-get/stargz-get/pkg/fetch"
	"github.com/stargz-get/stargz-get/pkg/wire"
)

// TestSpecialEntries: with Options.Devices, the hostile layer's fifo and
// char device (1,3) are created under their names through the system's
// own mkfifoat/mknodat (the device only as root), or, on darwin where
// x/sys has neither call, refused with the reason; nothing is left behind
// under a temp name.
func TestSpecialEntries(t *testing.T) {
	type result struct {
		Status string
		Err    string
		Type   fs.FileMode // of what is on disk, when fetched
		Dev    [2]uint32   // major, minor of a device on disk
	}
	want := map[string]result{
		"ok/fifo": {Status: wire.StatusFetched, Type: fs.ModeNamedPipe},
		"ok/null": {Status: wire.StatusFetched, Type: fs.ModeDevice | fs.ModeCharDevice, Dev: [2]uint32{1, 3}},
	}
	switch {
	case runtime.GOOS == "darwin":
		want["ok/fifo"] = result{Status: wire.StatusRefused, Err: "fifo entries cannot be created on darwin"}
		want["ok/null"] = result{Status: wire.StatusRefused, Err: "char entries cannot be created on darwin"}
	case os.Geteuid() != 0:
		want["ok/null"] = result{Status: wire.StatusRefused, Err: "char devices can only be created as root"}
	}

	l := readTOC(t, open(t, fixtures.Hostile.Layers[0]))
	var ws []*fetch.Want
	for _, w := range wantAll(l, "ok") {
		if _, ok := want[w.Entry.Name]; ok {
			ws = append(ws, w)
		}
	}
	dir := t.TempDir()
	out := run(t, context.Background(), dir, ws, fetch.Options{Devices: true})
	got := map[string]result{}
	for name, o := range out {
		r := result{Status: o.Status}
		if o.Err != nil {
			r.Err = o.Err.Error()
		}
		if o.Status == wire.StatusFetched {
			var st unix.Stat_t
			if err := unix.Lstat(filepath.Join(dir, name), &st); err != nil {
				t.Fatal(err)
			}
			fi, err := os.Lstat(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			r.Type = fi.Mode().Type()
			if r.Type&fs.ModeDevice != 0 {
				r.Dev = [2]uint32{unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev))}
			}
		}
		got[name] = r
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("special entries (-want +got):\n%s", diff)
	}
	noTemp(t, dir)
}
