package sgfetch_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stargz-get/stargz-get/internal/cli"
	"github.com/stargz-get/stargz-get/internal/sgfetch"
	"github.com/stargz-get/stargz-get/internal/testenv"
)

// TestStdoutCorrupt runs sg-fetch -o - through a fault proxy in front of
// the real registry: a body corrupt once is fetched again and the file
// comes out whole; a file whose bytes are corrupt on every try stops the
// stream at the bad chunk with a loud error (a hint to discard what was
// written) and a failing exit status.
func TestStdoutCorrupt(t *testing.T) {
	const name = "usr/local/go/pkg/tool/compile" // several chunks
	var want string
	for _, f := range fixtures.GoTree.Layers[0].Files {
		if f.Name == name {
			want = f.Digest
		}
	}
	last := fmt.Sprintf("-%d", fixtures.GoTree.Layers[0].Size-1)
	ranged := testenv.MatchAll(testenv.MatchBlobs, testenv.MatchRanged, func(r *http.Request) bool {
		return !strings.HasSuffix(r.Header.Get("Range"), last)
	})
	// With -j 1 the chunks are asked for in order: all but the first.
	var seen atomic.Int64
	afterFirst := func(r *http.Request) bool { return ranged(r) && seen.Add(1) > 1 }
	for _, tc := range []struct {
		desc     string
		rule     testenv.Rule
		wantFail bool
		written  bool // bytes reach stdout before the failure
	}{
		{"one flipped byte, then clean", testenv.Rule{Match: ranged, Times: 1, Fault: testenv.Fault{Flip: 300}}, false, true},
		{"every body corrupt", testenv.Rule{Match: ranged, Fault: testenv.Fault{Flip: 300}}, true, false},
		{"corrupt after the first chunk", testenv.Rule{Match: afterFirst, Fault: testenv.Fault{Flip: 300}}, true, true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			proxy, err := testenv.StartFaultProxy(reg.Host)
			if err != nil {
				t.Fatal(err)
			}
			defer proxy.Close()
			proxy.Add(tc.rule)
			image := proxy.Host + "/" + fixtures.GoTree.Name + ":" + fixtures.GoTree.Tag
			var stdout, stderr bytes.Buffer
			err = sgfetch.Run(context.Background(), []string{"-o", "-", "-j", "1", image, "0", name}, strings.NewReader(""), &stdout, &stderr)
			s := sha256.Sum256(stdout.Bytes())
			got := "sha256:" + hex.EncodeToString(s[:])
			if !tc.wantFail {
				if err != nil || got != want {
					t.Fatalf("err %v, stdout digest %s, want %s (stderr %s)", err, got, want, stderr.String())
				}
				return
			}
			if err == nil {
				t.Fatalf("every body corrupt: no error, %d bytes on stdout", stdout.Len())
			}
			if got == want {
				t.Errorf("every body corrupt: the whole file came out")
			}
			var msg bytes.Buffer
			if code := cli.Exit("sg-fetch", &msg, err); code != cli.ExitFailed {
				t.Errorf("exit status %d, want %d", code, cli.ExitFailed)
			}
			hinted := strings.Contains(msg.String(), "written to stdout before this error are NOT verified: discard them")
			switch {
			case tc.written && (stdout.Len() == 0 || !hinted):
				t.Errorf("%d bytes on stdout; error without the hint to discard them: %s", stdout.Len(), msg.String())
			case !tc.written && (stdout.Len() != 0 || hinted):
				t.Errorf("%d bytes on stdout, want none; error: %s", stdout.Len(), msg.String())
			}
		})
	}
}
