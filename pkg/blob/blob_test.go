package blob_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/stargz-get/stargz-get/internal/testenv"
	"github.com/stargz-get/stargz-get/pkg/blob"
	"github.com/stargz-get/stargz-get/pkg/registry"
)

type env struct {
	reg    *testenv.Registry
	arts   *testenv.Artifacts
	client *registry.Client
}

var (
	envOnce sync.Once
	theEnv  *env
	envErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if theEnv != nil {
		theEnv.reg.Close()
	}
	os.Exit(code)
}

func testEnv(t *testing.T) *env {
	t.Helper()
	envOnce.Do(func() {
		e := &env{}
		if e.arts, envErr = testenv.BuildArtifacts(filepath.Join(os.TempDir(), "stargz-get-fixtures")); envErr != nil {
			return
		}
		if e.reg, envErr = testenv.StartRegistry(testenv.RegistryOptions{}); envErr != nil {
			return
		}
		theEnv = e
		if envErr = e.arts.Files.Push(context.Background(), e.reg.Host); envErr != nil {
			return
		}
		e.client, envErr = registry.New(registry.WithPlainHTTP(true))
	})
	if envErr != nil {
		t.Fatal(envErr)
	}
	return theEnv
}

// open returns the remote blob of the artifact file titled title.
func (e *env) open(t *testing.T, title string) (*registry.Blob, testenv.ArtifactFile) {
	t.Helper()
	f := e.arts.Files.File(title)
	ref, err := e.client.ParseReference(e.reg.Host + "/" + e.arts.Files.Name)
	if err != nil {
		t.Fatal(err)
	}
	h, err := v1.NewHash(f.Digest)
	if err != nil {
		t.Fatal(err)
	}
	b, err := e.client.Blob(context.Background(), ref.Context(), h, f.Size)
	if err != nil {
		t.Fatal(err)
	}
	return b, *f
}

func openRoot(t *testing.T) (*os.Root, string) {
	t.Helper()
	dir := t.TempDir()
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })
	return root, dir
}

// sameFile fails unless p holds the bytes of the fixture file f.
func sameFile(t *testing.T, p string, f testenv.ArtifactFile) {
	t.Helper()
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(f.Path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatalf("%s differs from the blob (%d bytes, want %d)", p, len(got), len(want))
	}
}

// leftovers lists the temp and state files in dir.
func leftovers(t *testing.T, dir string) []string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, ".sg-*"))
	for i := range m {
		m[i] = filepath.Base(m[i])
	}
	return m
}

const segSize = 256 << 10

func TestDownload(t *testing.T) {
	e := testEnv(t)
	b, f := e.open(t, testenv.ToolTitle)
	root, dir := openRoot(t)
	var progress atomic.Int64
	res, err := blob.Download(context.Background(), root, "bin/tool", b, f.Digest,
		blob.WithSegmentSize(segSize), blob.WithJobs(4), blob.WithProgress(func(n int64) { progress.Add(n) }))
	if err != nil {
		t.Fatal(err)
	}
	want := &blob.Result{Status: blob.StatusFetched, Size: f.Size, Bytes: f.Size, Requests: int((f.Size + segSize - 1) / segSize), Executable: true}
	if diff := cmp.Diff(want, res); diff != "" {
		t.Errorf("result (-want +got):\n%s", diff)
	}
	if progress.Load() != f.Size {
		t.Errorf("progress reported %d bytes, want %d", progress.Load(), f.Size)
	}
	sameFile(t, filepath.Join(dir, "bin/tool"), f)
	if fi, _ := os.Stat(filepath.Join(dir, "bin/tool")); fi.Mode().Perm()&0o100 == 0 {
		t.Errorf("ELF binary has mode %v, want executable", fi.Mode())
	}
	if l := leftovers(t, dir); len(l) > 0 {
		t.Errorf("left behind: %v", l)
	}

	// A second download finds it in place.
	res, err = blob.Download(context.Background(), root, "bin/tool", b, f.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != blob.StatusPresent || res.Requests != 0 {
		t.Errorf("second download: %+v, want present without requests", res)
	}
}

// TestResume cancels a download half way, then finishes it: the second
// run asks only for what is missing.
func TestResume(t *testing.T) {
	e := testEnv(t)
	b, f := e.open(t, testenv.BigTitle)
	root, dir := openRoot(t)
	ctx, cancel := context.WithCancel(context.Background())
	var got atomic.Int64
	_, err := blob.Download(ctx, root, "big.bin", b, f.Digest, blob.WithJobs(4), blob.WithProgress(func(n int64) {
		if got.Add(n) > f.Size/2 {
			cancel()
		}
	}))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled download: %v, want context.Canceled", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "big.bin")); !os.IsNotExist(err) {
		t.Fatalf("a cancelled download left the final name: %v", err)
	}
	first := got.Load()
	res, err := blob.Download(context.Background(), root, "big.bin", b, f.Digest, blob.WithJobs(4))
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != blob.StatusResumed {
		t.Errorf("status %s, want resumed", res.Status)
	}
	if total := first + res.Bytes; total > f.Size*11/10 || res.Bytes >= f.Size {
		t.Errorf("moved %d + %d bytes for a %d-byte blob", first, res.Bytes, f.Size)
	}
	sameFile(t, filepath.Join(dir, "big.bin"), f)
	if l := leftovers(t, dir); len(l) > 0 {
		t.Errorf("left behind: %v", l)
	}
}

// TestChangedOrCorrupt: a state whose validator no longer matches makes
// the server send the whole blob (If-Range), and a part file whose
// recorded bytes are wrong fails the digest: either way the download
// starts over and the right bytes land.
func TestChangedOrCorrupt(t *testing.T) {
	e := testEnv(t)
	b, f := e.open(t, testenv.ToolTitle)
	for _, tc := range []struct {
		name      string
		validator func(real string) string
		why       string
	}{
		{"changed validator", func(string) string { return `"not-the-etag"` }, "the server's copy changed"},
		{"corrupt part", func(real string) string { return real }, "did not match the digest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root, dir := openRoot(t)
			// A real run first, cancelled at once after the first segment,
			// to learn the server's validator.
			ctx, cancel := context.WithCancel(context.Background())
			_, _ = blob.Download(ctx, root, "tool", b, f.Digest, blob.WithSegmentSize(segSize), blob.WithJobs(1),
				blob.WithProgress(func(int64) { cancel() }))
			part, state := blob.TempNames(f.Digest)
			raw, err := os.ReadFile(filepath.Join(dir, state))
			if err != nil {
				t.Fatalf("no state file after a cancelled run: %v", err)
			}
			var st map[string]any
			if err := json.Unmarshal(raw, &st); err != nil {
				t.Fatal(err)
			}
			real, _ := st["validator"].(string)
			if real == "" {
				t.Fatal("the registry sent no ETag or Last-Modified")
			}
			// Claim the first two segments are there, and fill them with
			// garbage.
			st["validator"] = tc.validator(real)
			st["done"].([]any)[0] = float64(segSize)
			st["done"].([]any)[1] = float64(segSize)
			raw, _ = json.Marshal(st)
			if err := os.WriteFile(filepath.Join(dir, state), raw, 0o644); err != nil {
				t.Fatal(err)
			}
			pf, err := os.OpenFile(filepath.Join(dir, part), os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := pf.WriteAt([]byte(strings.Repeat("x", 2*segSize)), 0); err != nil {
				t.Fatal(err)
			}
			pf.Close()
			var logs []string
			res, err := blob.Download(context.Background(), root, "tool", b, f.Digest, blob.WithSegmentSize(segSize),
				blob.WithLogf(func(format string, args ...any) { logs = append(logs, fmt.Sprintf(format, args...)) }))
			if err != nil {
				t.Fatal(err)
			}
			// Bytes counts the resumed attempt too: up to the whole blob
			// once more in the corrupt case.
			if res.Status != blob.StatusFetched || res.Bytes < f.Size || res.Bytes > 2*f.Size {
				t.Errorf("result %+v, want fetched with all %d bytes moved again", res, f.Size)
			}
			if !strings.Contains(strings.Join(logs, "\n"), tc.why) {
				t.Errorf("no restart logged: %q", logs)
			}
			sameFile(t, filepath.Join(dir, "tool"), f)
			if l := leftovers(t, dir); len(l) > 0 {
				t.Errorf("left behind: %v", l)
			}
		})
	}
}

// lyingRemote serves another blob's bytes under the wanted digest.
type lyingRemote struct{ blob.Remote }

// TestDigestMismatch: bytes that do not match the digest never appear
// under the final name, and nothing is left behind.
func TestDigestMismatch(t *testing.T) {
	e := testEnv(t)
	b, _ := e.open(t, testenv.ToolTitle)
	_, notes := e.open(t, testenv.NotesTitle)
	root, dir := openRoot(t)
	_, err := blob.Download(context.Background(), root, "tool", lyingRemote{b}, notes.Digest, blob.WithSegmentSize(segSize))
	if !errors.Is(err, blob.ErrDigestMismatch) {
		t.Fatalf("got %v, want ErrDigestMismatch", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "tool")); !os.IsNotExist(err) {
		t.Errorf("mismatching bytes under the final name: %v", err)
	}
	if l := leftovers(t, dir); len(l) > 0 {
		t.Errorf("left behind: %v", l)
	}
}

func TestOptions(t *testing.T) {
	root, _ := openRoot(t)
	for _, opt := range []blob.Option{blob.WithJobs(0), blob.WithSegmentSize(0), blob.WithTries(0)} {
		if _, err := blob.Download(context.Background(), root, "x", nil, "sha256:"+strings.Repeat("0", 64), opt); err == nil {
			t.Error("a bad option was accepted")
		}
	}
	for _, d := range []string{"md5:abc", "sha256:" + strings.Repeat("../", 21) + "x", "sha256:" + strings.Repeat("A", 64)} {
		if _, err := blob.Download(context.Background(), root, "x", nil, d); err == nil {
			t.Errorf("digest %q was accepted", d)
		}
	}
}

// countingRemote counts the requests whose bodies are open at once.
type countingRemote struct {
	blob.Remote
	open, peak *atomic.Int64
}

func (c countingRemote) GetSegment(ctx context.Context, off, n int64, ifRange string) (*registry.Segment, error) {
	seg, err := c.Remote.GetSegment(ctx, off, n, ifRange)
	if err != nil {
		return nil, err
	}
	now := c.open.Add(1)
	for p := c.peak.Load(); now > p && !c.peak.CompareAndSwap(p, now); p = c.peak.Load() {
	}
	seg.Body = &countedBody{ReadCloser: seg.Body, open: c.open}
	return seg, nil
}

type countedBody struct {
	io.ReadCloser
	open *atomic.Int64
	once sync.Once
}

func (b *countedBody) Close() error {
	b.once.Do(func() { b.open.Add(-1) })
	return b.ReadCloser.Close()
}

// TestLimit: two downloads sharing WithLimit(2) never have more than two
// requests open, though each may run four workers.
func TestLimit(t *testing.T) {
	e := testEnv(t)
	limit := make(chan struct{}, 2)
	var open, peak atomic.Int64
	var wg sync.WaitGroup
	for _, title := range []string{testenv.ToolTitle, testenv.BigTitle} {
		b, f := e.open(t, title)
		root, dir := openRoot(t)
		wg.Go(func() {
			r := countingRemote{Remote: b, open: &open, peak: &peak}
			if _, err := blob.Download(context.Background(), root, "f", r, f.Digest, blob.WithJobs(4), blob.WithSegmentSize(1<<20), blob.WithLimit(limit)); err != nil {
				t.Error(err)
				return
			}
			got, _ := os.ReadFile(filepath.Join(dir, "f"))
			want, _ := os.ReadFile(f.Path)
			if len(got) != len(want) || string(got) != string(want) {
				t.Errorf("%s: got %d bytes that differ from the blob's %d", f.Title, len(got), len(want))
			}
		})
	}
	wg.Wait()
	if p := peak.Load(); p > 2 || p < 1 {
		t.Errorf("peak of %d requests open at once, want 1 or 2", p)
	}
}
