package sgfetch_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stargz-get/stargz-get/internal/sgfetch"
	"github.com/stargz-get/stargz-get/internal/testenv"
	"github.com/stargz-get/stargz-get/pkg/wire"
)

// runAsTool makes the test binary act as sg-fetch when re-executed, so a
// test can signal a real sg-fetch process.
const runAsTool = "SG_TEST_RUN_AS_SGFETCH"

var (
	fixtures *testenv.Fixtures
	reg      *testenv.Registry
)

func TestMain(m *testing.M) {
	if os.Getenv(runAsTool) == "1" {
		os.Exit(sgfetch.Main())
	}
	os.Exit(setupAndRun(m))
}

func setupAndRun(m *testing.M) int {
	// These tests inject faults into what each run downloads: no chunk may
	// come from the cache of an earlier run (and nothing is kept in the
	// user's cache directory).
	os.Setenv("SG_NO_CACHE", "1")
	var err error
	if fixtures, err = testenv.BuildFixtures(filepath.Join(os.TempDir(), "stargz-get-fixtures")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if reg, err = testenv.StartRegistry(testenv.RegistryOptions{}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer reg.Close()
	if _, err := fixtures.Push(context.Background(), reg.Host, "", ""); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// slowRegistry is a proxy in front of the registry that sends blob bodies
// at about bytesPerSec per response, so a run can be interrupted midway.
func slowRegistry(t *testing.T, bytesPerSec int) string {
	t.Helper()
	target, _ := url.Parse("http://" + reg.Host)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ModifyResponse = func(resp *http.Response) error {
		if strings.Contains(resp.Request.URL.Path, "/blobs/") {
			resp.Body = &slowBody{ReadCloser: resp.Body, perRead: bytesPerSec / 20, pause: 50 * time.Millisecond}
		}
		return nil
	}
	srv := httptest.NewServer(rp)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

type slowBody struct {
	io.ReadCloser
	perRead int
	pause   time.Duration
}

func (b *slowBody) Read(p []byte) (int, error) {
	time.Sleep(b.pause)
	if len(p) > b.perRead {
		p = p[:b.perRead]
	}
	return b.ReadCloser.Read(p)
}

// TestInterruptedRunResumes kills sg-fetch mid-run with each signal, then
// runs it again: the tree is complete and correct, nothing was left
// half-written under a final name, and files finished before the signal
// are skipped rather than downloaded again.
func TestInterruptedRunResumes(t *testing.T) {
	gotree := []string{"usr/local/go/src/net", "usr/local/go/pkg"}
	zstd := []string{"usr/local/go/src/encoding/json", "usr/local/go/src/strconv", "usr/local/go/pkg"}
	for _, tc := range []struct {
		sig  syscall.Signal
		img  *testenv.Image
		dirs []string
	}{
		{syscall.SIGINT, fixtures.GoTree, gotree},
		{syscall.SIGTERM, fixtures.GoTree, gotree},
		{syscall.SIGKILL, fixtures.GoTree, gotree},
		{syscall.SIGKILL, fixtures.ZstdChunked, zstd}, // zstd:chunked frames
	} {
		sig, img := tc.sig, tc.img
		t.Run(sig.String()+" "+img.Name, func(t *testing.T) {
			host := slowRegistry(t, 1<<20)
			image := host + "/" + img.Name + ":" + img.Tag
			out := t.TempDir()
			cmd := exec.Command(os.Args[0], append([]string{"-o", out, "-j", "2", image, "0"}, tc.dirs...)...)
			cmd.Env = append(os.Environ(), runAsTool+"=1")
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// Signal once some files are done.
			sc := bufio.NewScanner(stdout)
			var before []wire.Result
			for len(before) < 20 && sc.Scan() {
				var r wire.Result
				if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
					t.Fatal(err)
				}
				before = append(before, r)
			}
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			for sc.Scan() {
				var r wire.Result
				if err := json.Unmarshal(sc.Bytes(), &r); err == nil {
					before = append(before, r)
				}
			}
			err = cmd.Wait()
			if err == nil {
				t.Fatalf("sg-fetch finished before %v; make the link slower", sig)
			}
			if sig != syscall.SIGKILL && !strings.Contains(stderr.String(), "sg-fetch: interrupted") {
				t.Errorf("stderr after %v: %q, want it to say interrupted", sig, stderr.String())
			}
			// Whatever is under a final name is complete and correct.
			var present []string
			_ = filepath.WalkDir(out, func(p string, d fs.DirEntry, err error) error {
				if err == nil && d.Type().IsRegular() && !strings.HasPrefix(d.Name(), ".sg-") {
					rel, _ := filepath.Rel(out, p)
					present = append(present, filepath.ToSlash(rel))
				}
				return nil
			})
			if err := testenv.CheckTree(out, img.Layers[0].Files, present); err != nil {
				t.Errorf("after %v: %v", sig, err)
			}
			if sig != syscall.SIGKILL {
				assertNoTemp(t, out)
			}

			// The re-run completes the tree and skips what was done.
			direct := reg.Host + "/" + img.Name + ":" + img.Tag
			rerun := exec.Command(os.Args[0], append([]string{"-o", out, direct, "0"}, tc.dirs...)...)
			rerun.Env = append(os.Environ(), runAsTool+"=1")
			res, err := rerun.Output()
			if err != nil {
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					t.Logf("re-run stderr:\n%s", ee.Stderr)
				}
				t.Fatalf("re-run: %v", err)
			}
			status := map[string]string{}
			for _, line := range strings.Split(strings.TrimSpace(string(res)), "\n") {
				var r wire.Result
				if err := json.Unmarshal([]byte(line), &r); err != nil {
					t.Fatal(err)
				}
				status[r.Name] = r.Status
			}
			for _, r := range before {
				if r.Status == wire.StatusFetched && r.Type == wire.TypeReg && status[r.Name] != wire.StatusSkipped {
					t.Errorf("%s was fetched before %v, re-run says %s, want skipped", r.Name, sig, status[r.Name])
				}
			}
			var want []testenv.File
			for _, d := range tc.dirs {
				want = append(want, testenv.Want(img.Layers[0].Files, d)...)
			}
			var names []string
			for _, f := range want {
				names = append(names, f.Name)
			}
			if err := testenv.CheckTree(out, img.Layers[0].Files, names); err != nil {
				t.Error(err)
			}
			assertNoTemp(t, out)
		})
	}
}

func assertNoTemp(t *testing.T, dir string) {
	t.Helper()
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), ".sg-") {
			t.Errorf("temp file left behind: %s", p)
		}
		return nil
	})
}
