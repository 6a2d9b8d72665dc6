package sgfetch_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stargz-get/stargz-get/internal/sgfetch"
	"github.com/stargz-get/stargz-get/internal/testenv"
	"github.com/stargz-get/stargz-get/pkg/wire"
)

// TestCorruptOrShortBodies runs sg-fetch through a fault proxy in front of
// the real registry that flips bytes in, or cuts short, blob range
// responses: every file ends either correct (after a retry) or failed, and
// a failed file never appears under its name.
func TestCorruptOrShortBodies(t *testing.T) {
	const name = "usr/local/go/pkg/tool/compile" // several chunks
	// Chunk ranges only: not the tail read that fetches footer and TOC,
	// which ends at the blob's last byte.
	last := fmt.Sprintf("-%d", fixtures.GoTree.Layers[0].Size-1)
	ranged := testenv.MatchAll(testenv.MatchBlobs, testenv.MatchRanged, func(r *http.Request) bool {
		return !strings.HasSuffix(r.Header.Get("Range"), last)
	})
	for _, tc := range []struct {
		desc     string
		rule     testenv.Rule
		wantFail bool
	}{
		{"one flipped byte, then clean", testenv.Rule{Match: ranged, Times: 1, Fault: testenv.Fault{Flip: 300}}, false},
		{"one body cut short, then clean", testenv.Rule{Match: ranged, Times: 1, Fault: testenv.Fault{CutAfter: 70000}}, false},
		{"two of each", testenv.Rule{Match: ranged, Times: 4, Fault: testenv.Fault{Flip: 5000, CutAfter: 100000}}, false},
		{"every body corrupt", testenv.Rule{Match: ranged, Fault: testenv.Fault{Flip: 300}}, true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			proxy, err := testenv.StartFaultProxy(reg.Host)
			if err != nil {
				t.Fatal(err)
			}
			defer proxy.Close()
			image := proxy.Host + "/" + fixtures.GoTree.Name + ":" + fixtures.GoTree.Tag
			out := t.TempDir()
			var stdout, stderr bytes.Buffer
			args := []string{"-o", out, "-j", "2", image, "0", name}
			proxy.Add(tc.rule)
			err = sgfetch.Run(context.Background(), args, strings.NewReader(""), &stdout, &stderr)
			var r wire.Result
			if jerr := json.Unmarshal(stdout.Bytes(), &r); jerr != nil {
				t.Fatalf("result %q: %v (stderr %s)", stdout.String(), jerr, stderr.String())
			}
			_, statErr := os.Lstat(filepath.Join(out, name))
			if tc.wantFail {
				if err == nil || r.Status != wire.StatusFailed {
					t.Fatalf("status %s, err %v: want failed", r.Status, err)
				}
				if !errors.Is(statErr, fs.ErrNotExist) {
					t.Errorf("a failed file is under its name (stat: %v)", statErr)
				}
			} else {
				if err != nil || r.Status != wire.StatusFetched || r.Verified != "toc" {
					t.Fatalf("status %s, verified %q, err %v, stderr %s: want fetched and verified", r.Status, r.Verified, err, stderr.String())
				}
				if err := testenv.CheckTree(out, fixtures.GoTree.Layers[0].Files, []string{name}); err != nil {
					t.Error(err)
				}
			}
			assertNoTemp(t, out)
			var faults int
			for _, s := range proxy.Seen() {
				if s.Fault != "" {
					faults++
				}
			}
			if faults == 0 {
				t.Error("the proxy injected no fault")
			}
		})
	}
}
