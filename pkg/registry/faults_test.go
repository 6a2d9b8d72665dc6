package registry_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/stargz-get/stargz-get/internal/testenv"
	"github.com/stargz-get/stargz-get/pkg/registry"
)

// fastRetry retries like the default policy, with short waits.
var fastRetry = registry.RetryPolicy{Tries: registry.DefaultTries, MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond, MaxRetryAfter: 5 * time.Second}

func startFaultProxy(t *testing.T, target string, rules ...testenv.Rule) *testenv.FaultProxy {
	t.Helper()
	p, err := testenv.StartFaultProxy(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	p.Add(rules...)
	return p
}

// seenFaults returns, for each request p saw that matches, its fault.
func seenFaults(p *testenv.FaultProxy, match func(testenv.Seen) bool) []string {
	var out []string
	for _, s := range p.Seen() {
		if match(s) {
			out = append(out, s.Fault)
		}
	}
	return out
}

func isBlob(s testenv.Seen) bool     { return strings.Contains(s.Path, "/blobs/") }
func isManifest(s testenv.Seen) bool { return strings.Contains(s.Path, "/manifests/") }

// Idempotent requests are retried on the failures of real networks and
// registries, and the bytes come out right.
func TestRetries(t *testing.T) {
	e := testEnv(t)
	l := e.fx.GoTree.Layers[0]
	want := fixtureBytes(t, l, 0, l.Size)
	off, n := int64(1000), int64(300_000)
	tests := []struct {
		name      string
		rules     []testenv.Rule
		idle      time.Duration
		policy    *registry.RetryPolicy // instead of fastRetry
		wantBlob  []string              // faults of the blob GETs seen, in order
		wantLog   string
		minTime   time.Duration
		maxTime   time.Duration
		manifests []string // faults of the manifest GETs, when checked
	}{
		{
			name:     "503 twice",
			rules:    []testenv.Rule{{Match: testenv.MatchBlobs, Times: 2, Fault: testenv.Fault{Status: 503}}},
			wantBlob: []string{"status 503", "status 503", ""},
			wantLog:  "503 Service Unavailable; retrying in",
		},
		{
			name:     "500, 502, 504",
			rules:    []testenv.Rule{{Match: testenv.MatchBlobs, Times: 1, Fault: testenv.Fault{Status: 500}}, {Match: testenv.MatchBlobs, Times: 1, Fault: testenv.Fault{Status: 502}}, {Match: testenv.MatchBlobs, Times: 1, Fault: testenv.Fault{Status: 504}}},
			wantBlob: []string{"status 500", "status 502", "status 504", ""},
		},
		{
			name:     "429 with Retry-After is honoured",
			rules:    []testenv.Rule{{Match: testenv.MatchBlobs, Times: 1, Fault: testenv.Fault{Status: 429, RetryAfter: "1"}}},
			wantBlob: []string{"status 429", ""},
			wantLog:  "429 Too Many Requests; retrying in 1s",
			minTime:  time.Second,
		},
		{
			name:     "Retry-After as a date",
			rules:    []testenv.Rule{{Match: testenv.MatchBlobs, Times: 1, Fault: testenv.Fault{Status: 503, RetryAfter: time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat)}}},
			wantBlob: []string{"status 503", ""},
			wantLog:  "retrying in 0s",
		},
		{
			name:     "Retry-After is capped",
			rules:    []testenv.Rule{{Match: testenv.MatchBlobs, Times: 1, Fault: testenv.Fault{Status: 429, RetryAfter: "3600"}}},
			policy:   &registry.RetryPolicy{Tries: 2, MaxRetryAfter: 200 * time.Millisecond},
			wantBlob: []string{"status 429", ""},
			wantLog:  "retrying in 200ms (try 2 of 2)",
			minTime:  200 * time.Millisecond,
			maxTime:  5 * time.Second,
		},
		{
			name:     "connection reset before the response",
			rules:    []testenv.Rule{{Match: testenv.MatchBlobs, Times: 2, Fault: testenv.Fault{Reset: true}}},
			wantBlob: []string{"reset", "reset", ""},
		},
		{
			name:     "manifest 503 and reset",
			rules:    []testenv.Rule{{Match: testenv.MatchManifests, Times: 1, Fault: testenv.Fault{Status: 503}}, {Match: testenv.MatchManifests, Times: 1, Fault: testenv.Fault{Reset: true}}},
			wantBlob: []string{""},
			// The tag, then by digest? Only the tag: the manifest is an image.
			manifests: []string{"status 503", "reset", ""},
		},
		{
			name:     "ping 503",
			rules:    []testenv.Rule{{Match: func(r *http.Request) bool { return r.URL.Path == "/v2/" }, Times: 1, Fault: testenv.Fault{Status: 503}}},
			wantBlob: []string{""},
		},
		{
			name:     "body cut short is resumed",
			rules:    []testenv.Rule{{Match: testenv.MatchBlobs, Times: 2, Fault: testenv.Fault{CutAfter: 40_000}}},
			wantBlob: []string{"cut after 40000 bytes", "cut after 40000 bytes", ""},
			wantLog:  fmt.Sprintf("reading stopped at byte %d", off+40_000),
		},
		{
			name:     "stalled body",
			rules:    []testenv.Rule{{Match: testenv.MatchBlobs, Times: 1, Fault: testenv.Fault{StallAfter: 5000, Stall: 20 * time.Second}}},
			idle:     300 * time.Millisecond,
			wantBlob: []string{"stall 20s after 5000 bytes", ""},
			wantLog:  "connection stalled: no data for 300ms",
			maxTime:  5 * time.Second,
		},
		{
			name:     "stalled response headers",
			rules:    []testenv.Rule{{Match: testenv.MatchBlobs, Times: 1, Fault: testenv.Fault{Latency: 20 * time.Second}}},
			idle:     300 * time.Millisecond,
			wantBlob: []string{"", ""}, // the first is noted when the proxy gives up waiting
			wantLog:  "connection stalled",
			maxTime:  5 * time.Second,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			p := startFaultProxy(t, e.anon.Host, tc.rules...)
			var log logLines
			policy := fastRetry
			if tc.policy != nil {
				policy = *tc.policy
			}
			opts := []registry.Option{registry.WithRetry(policy), registry.WithLogf(log.logf)}
			if tc.idle > 0 {
				opts = append(opts, registry.WithIdleTimeout(tc.idle))
			}
			c := newClient(t, opts...)
			ref := e.fx.GoTree.Ref(p.Host)
			start := time.Now()
			img, err := c.Image(ctx, parseRef(t, ref), registry.DefaultPlatform)
			if err != nil {
				t.Fatalf("Image: %v\nlog:\n%s", err, strings.Join(log.all(), "\n"))
			}
			b, err := c.Blob(ctx, img.Ref.Context(), img.Layers[0].Digest, img.Layers[0].Size)
			if err != nil {
				t.Fatal(err)
			}
			got, err := readRange(ctx, b, off, n)
			elapsed := time.Since(start)
			text := strings.Join(log.all(), "\n")
			if err != nil {
				t.Fatalf("ReadRange: %v\nlog:\n%s", err, text)
			}
			if !bytes.Equal(got, want[off:off+n]) {
				t.Errorf("ReadRange: %s", describeDiff(want[off:off+n], got))
			}
			if tc.wantBlob != nil && tc.idle == 0 {
				if diff := cmp.Diff(tc.wantBlob, seenFaults(p, isBlob)); diff != "" {
					t.Errorf("blob GETs (-want +got):\n%s\nlog:\n%s", diff, text)
				}
			}
			if tc.manifests != nil {
				if diff := cmp.Diff(tc.manifests, seenFaults(p, isManifest)); diff != "" {
					t.Errorf("manifest GETs (-want +got):\n%s", diff)
				}
			}
			if tc.wantLog != "" && !strings.Contains(text, tc.wantLog) {
				t.Errorf("log does not say %q:\n%s", tc.wantLog, text)
			}
			if elapsed < tc.minTime || tc.maxTime > 0 && elapsed > tc.maxTime {
				t.Errorf("took %v, want between %v and %v", elapsed, tc.minTime, tc.maxTime)
			}
		})
	}
}

// A registry that keeps failing: after the policy's tries, a clear error
// naming the request's URL (without query) and the last failure.
func TestRetriesGiveUp(t *testing.T) {
	e := testEnv(t)
	l := e.fx.GoTree.Layers[0]
	tests := []struct {
		name     string
		fault    testenv.Fault
		contains []string
	}{
		{name: "503", fault: testenv.Fault{Status: 503}, contains: []string{"UNAVAILABLE: injected by the fault proxy", "gave up after 4 tries"}},
		{name: "reset", fault: testenv.Fault{Reset: true}, contains: []string{"gave up after 4 tries"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			p := startFaultProxy(t, e.anon.Host, testenv.Rule{Match: testenv.MatchBlobs, Fault: tc.fault})
			c := newClient(t, registry.WithRetry(fastRetry))
			b := openBlob(t, ctx, c, e.fx.GoTree.Ref(p.Host), l)
			_, err := readRange(ctx, b, 0, 100)
			if !errors.Is(err, registry.ErrUnavailable) {
				t.Fatalf("ReadRange: %v, want %v", err, registry.ErrUnavailable)
			}
			blobURL := "GET http://" + p.Host + "/v2/" + e.fx.GoTree.Name + "/blobs/" + l.Digest
			for _, s := range append(tc.contains, blobURL, l.Digest) {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
			// Go's transport itself tries a GET again once when a reused
			// connection is reset before the response.
			if got := len(seenFaults(p, isBlob)); got < registry.DefaultTries || got > 2*registry.DefaultTries {
				t.Errorf("%d blob GETs, want %d (or a few more for Go's own retries)", got, registry.DefaultTries)
			}
		})
	}

	// Token requests are retried too, and a dead token service is named.
	t.Run("token service", func(t *testing.T) {
		te := tokenEnv(t)
		ctx := testCtx(t)
		p := startFaultProxy(t, te.reg.Host, testenv.Rule{Match: testenv.MatchToken, Times: 2, Fault: testenv.Fault{Status: 503}})
		c := newClient(t, registry.WithRetry(fastRetry), registry.WithCredential(testUser, testPassword))
		if _, err := c.Image(ctx, parseRef(t, e.fx.GoTree.Ref(p.Host)), registry.DefaultPlatform); err != nil {
			t.Fatalf("Image with two 503s from the token service: %v", err)
		}
		p.Clear()
		p.Add(testenv.Rule{Match: testenv.MatchToken, Fault: testenv.Fault{Status: 503}})
		c = newClient(t, registry.WithRetry(fastRetry), registry.WithCredential(testUser, testPassword))
		_, err := c.Image(ctx, parseRef(t, e.fx.GoTree.Ref(p.Host)), registry.DefaultPlatform)
		if !errors.Is(err, registry.ErrUnavailable) || !strings.Contains(err.Error(), "http://"+p.Host+testenv.TokenPath+"?…") {
			t.Errorf("Image with a dead token service: %v; want %v naming the token URL without its query", err, registry.ErrUnavailable)
		}
		checkNoSecrets(t, "error", fmt.Sprint(err), testPassword)
	})

	// A cancelled context stops the retries at once.
	t.Run("cancelled", func(t *testing.T) {
		p := startFaultProxy(t, e.anon.Host, testenv.Rule{Match: testenv.MatchBlobs, Fault: testenv.Fault{Status: 503, RetryAfter: "30"}})
		c := newClient(t)
		b := openBlob(t, testCtx(t), c, e.fx.GoTree.Ref(p.Host), l)
		ctx, cancel := context.WithTimeout(testCtx(t), 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := readRange(ctx, b, 0, 100)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("ReadRange: %v, want %v", err, context.DeadlineExceeded)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("ReadRange returned after %v", d)
		}
	})
}

// Registries that ignore Range or refuse it with 416: the bytes still come
// out right, and -v says why the whole blob was read.
func TestRangeFallbacks(t *testing.T) {
	e := testEnv(t)
	l := e.fx.GoTree.Layers[0]
	want := fixtureBytes(t, l, 0, l.Size)
	tests := []struct {
		name    string
		rule    testenv.Rule
		wantLog string
		// ranged says what the second read's request asks for.
		secondRanged bool
	}{
		{
			name:         "Range ignored",
			rule:         testenv.Rule{Match: testenv.MatchBlobs, Fault: testenv.Fault{IgnoreRange: true}},
			wantLog:      "registry ignored Range and sent the whole blob",
			secondRanged: true,
		},
		{
			name:    "416",
			rule:    testenv.Rule{Match: testenv.MatchAll(testenv.MatchBlobs, testenv.MatchRanged), Fault: testenv.Fault{Status: http.StatusRequestedRangeNotSatisfiable}},
			wantLog: "registry answered 416 to Range bytes=5000-6999",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			p := startFaultProxy(t, e.anon.Host, tc.rule)
			var log logLines
			c := newClient(t, registry.WithLogf(log.logf))
			b := openBlob(t, ctx, c, e.fx.GoTree.Ref(p.Host), l)
			for _, r := range [][2]int64{{5000, 2000}, {l.Size - 51, 51}} {
				got, err := readRange(ctx, b, r[0], r[1])
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want[r[0]:r[0]+r[1]]) {
					t.Errorf("ReadRange(%d, %d): %s", r[0], r[1], describeDiff(want[r[0]:r[0]+r[1]], got))
				}
			}
			if text := strings.Join(log.all(), "\n"); !strings.Contains(text, tc.wantLog) {
				t.Errorf("log does not say %q:\n%s", tc.wantLog, text)
			}
			var blobs []testenv.Seen
			for _, s := range p.Seen() {
				if isBlob(s) {
					blobs = append(blobs, s)
				}
			}
			if last := blobs[len(blobs)-1]; (last.Range != "") != tc.secondRanged {
				t.Errorf("last blob GET has Range %q, want ranged=%v (all: %+v)", last.Range, tc.secondRanged, blobs)
			}
		})
	}
}

// Redirects to blob storage, behind the token registry: the storage never
// sees the registry's Authorization (it refuses such requests, as S3
// does), the signed URL is reused for further ranges, an expired one is
// replaced by asking the registry again, and neither the signature nor the
// token shows in the log.
func TestRedirectToStorage(t *testing.T) {
	te := tokenEnv(t)
	ctx := testCtx(t)
	l := te.fx.GoTree.Layers[0]
	want := fixtureBytes(t, l, 0, l.Size)
	p := startFaultProxy(t, te.reg.Host, testenv.Rule{Match: testenv.MatchBlobs, Fault: testenv.Fault{Redirect: true}})
	var log logLines
	c := newClient(t, registry.WithCredential(testUser, testPassword), registry.WithLogf(log.logf))
	b := openBlob(t, ctx, c, te.fx.GoTree.Ref(p.Host), l)
	read := func(off, n int64) {
		t.Helper()
		got, err := readRange(ctx, b, off, n)
		if err != nil {
			t.Fatalf("ReadRange(%d, %d): %v\nlog:\n%s", off, n, err, strings.Join(log.all(), "\n"))
		}
		if !bytes.Equal(got, want[off:off+n]) {
			t.Fatalf("ReadRange(%d, %d): %s", off, n, describeDiff(want[off:off+n], got))
		}
	}
	counts := func(wantRegistry, wantStorage int) {
		t.Helper()
		got := [2]int{len(seenFaults(p, isBlob)), p.Storage.Gets()}
		if diff := cmp.Diff([2]int{wantRegistry, wantStorage}, got); diff != "" {
			t.Errorf("[registry blob GETs, storage GETs] (-want +got):\n%s", diff)
		}
	}
	read(l.Size-51, 51)
	counts(1, 1)
	read(0, 100_000)
	read(l.Size/2, 4096)
	counts(1, 3) // straight to the storage
	p.Storage.Expire()
	read(1000, 1000)
	counts(2, 4) // a 403 from the storage, the registry again, the storage again
	if p.Storage.SawAuth() {
		t.Errorf("blob storage received an Authorization header; refused: %v", p.Storage.Refused())
	}
	if got := p.Storage.Refused(); len(got) != 1 || got[0] != "signature expired or invalid" {
		t.Errorf("storage refused %q, want only the expired signature", got)
	}
	text := strings.Join(log.all(), "\n")
	checkNoSecrets(t, "log", text, "X-Amz-Signature", testPassword, "Bearer ey")
	if !strings.Contains(text, "GET http://"+p.Storage.Host+"/blobs/"+l.Digest+"?…") {
		t.Errorf("log does not show the storage GETs:\n%s", text)
	}
}

// What the redirect test guards against: Go's http.Client forwards an
// Authorization header set on a request to a redirect target with the same
// host name and another port (both loopback here). The registry's
// credentials stay off the storage only because go-containerregistry's
// transports add them per request, for the registry's host:port only.
func TestGoForwardsCallerAuthorizationOnRedirect(t *testing.T) {
	var got string
	storage := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = r.Header.Get("Authorization") }))
	defer storage.Close()
	reg := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, storage.URL+"/blob", http.StatusTemporaryRedirect)
	}))
	defer reg.Close()
	req, err := http.NewRequestWithContext(testCtx(t), http.MethodGet, reg.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer x")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got != "Bearer x" {
		t.Errorf("storage got Authorization %q; Go's redirect policy changed, see TestRedirectToStorage", got)
	}
}

// Images lists every platform of an index, or the one image of a manifest
// with its platform from the config.
func TestImages(t *testing.T) {
	e := testEnv(t)
	fx, host := e.fx, e.anon.Host
	c := newClient(t)
	amd64, arm64 := fx.Index.Images[0], fx.Index.Images[1]
	tests := []struct {
		name string
		ref  string
		want []imageView
	}{
		{name: "index", ref: fx.Index.Ref(host), want: []imageView{fixtureView(amd64, "linux/amd64"), fixtureView(arm64, "linux/arm64")}},
		{name: "index by digest", ref: host + "/" + fx.Index.Name + "@" + fx.Index.Digest, want: []imageView{fixtureView(amd64, "linux/amd64"), fixtureView(arm64, "linux/arm64")}},
		{name: "manifest", ref: fx.GoTree.Ref(host), want: []imageView{fixtureView(fx.GoTree, fx.GoTree.Platform)}},
		{name: "platform manifest by digest", ref: arm64.Ref(host), want: []imageView{fixtureView(arm64, "linux/arm64")}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			imgs, err := c.Images(testCtx(t), parseRef(t, tc.ref))
			if err != nil {
				t.Fatal(err)
			}
			var got []imageView
			for _, img := range imgs {
				got = append(got, viewOf(img))
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Images (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("not found", func(t *testing.T) {
		_, err := c.Images(testCtx(t), parseRef(t, host+"/fixtures/nope:v1"))
		if !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("Images: %v, want %v", err, registry.ErrNotFound)
		}
	})
}

// TLS: verified against the system roots and --ca-file; --insecure skips
// verification; an untrusted certificate is ErrTLS.
func TestTLS(t *testing.T) {
	te := tokenEnv(t)
	ref := te.fx.Index.Ref(te.reg.TLSHost) // public: no credentials needed
	tests := []struct {
		name    string
		opts    []registry.Option
		wantErr error
	}{
		{name: "untrusted", wantErr: registry.ErrTLS},
		{name: "CA file", opts: []registry.Option{registry.WithCAFile(te.reg.CAFile)}},
		{name: "insecure", opts: []registry.Option{registry.WithInsecure(true)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var log logLines
			c := newClient(t, append(tc.opts, registry.WithLogf(log.logf))...)
			_, err := c.Image(testCtx(t), parseRef(t, ref), registry.DefaultPlatform)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Image: %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				if !strings.Contains(err.Error(), "certificate") || !strings.Contains(err.Error(), te.reg.TLSHost) {
					t.Errorf("error %q does not name the certificate problem and the registry", err)
				}
				return
			}
			if text := strings.Join(log.all(), "\n"); !strings.Contains(text, "GET https://"+te.reg.TLSHost+"/v2/"+te.fx.Index.Name+"/manifests/") {
				t.Errorf("manifest not read over HTTPS:\n%s", text)
			}
		})
	}
	t.Run("bad CA file", func(t *testing.T) {
		if _, err := registry.New(registry.WithCAFile(t.TempDir() + "/nope.pem")); err == nil {
			t.Error("New with a missing CA file succeeded")
		}
		if _, err := registry.New(registry.WithCAFile("auth_test.go")); err == nil || !strings.Contains(err.Error(), "no PEM certificates") {
			t.Errorf("New with a CA file without certificates: %v", err)
		}
	})
}

func TestRetryPolicyValidation(t *testing.T) {
	for _, p := range []registry.RetryPolicy{
		{Tries: 0},
		{Tries: 1, MinBackoff: time.Second, MaxBackoff: time.Millisecond},
		{Tries: 1, MinBackoff: -1},
		{Tries: 1, MaxRetryAfter: -1},
	} {
		if _, err := registry.New(registry.WithRetry(p)); err == nil {
			t.Errorf("WithRetry(%+v) accepted", p)
		}
	}
	if _, err := registry.New(registry.WithIdleTimeout(-time.Second)); err == nil {
		t.Error("WithIdleTimeout(-1s) accepted")
	}
	if _, err := registry.New(registry.WithRetry(registry.DefaultRetryPolicy())); err != nil {
		t.Errorf("WithRetry(DefaultRetryPolicy()): %v", err)
	}
}
