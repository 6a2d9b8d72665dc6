package registry_test

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stargz-get/stargz-get/pkg/registry"
)

// Without credentials, requests do not wait for the handshake: a registry
// that needs no token answers them while its ping is still held back.
func TestAnonymousRequestsDoNotWaitForPing(t *testing.T) {
	e := testEnv(t)
	ctx := testCtx(t)
	u, err := url.Parse("http://" + e.anon.Host)
	if err != nil {
		t.Fatal(err)
	}
	manifest := make(chan struct{})
	var once sync.Once
	var pingHeld atomic.Bool
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v2/":
			select {
			case <-manifest:
			case <-time.After(10 * time.Second):
				pingHeld.Store(true) // nobody came without it
			}
		case strings.Contains(r.URL.Path, "/manifests/"):
			once.Do(func() { close(manifest) })
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	c := newClient(t)
	ref := parseRef(t, e.fx.GoTree.Ref(srv.Listener.Addr().String()))
	if _, err := c.Image(ctx, ref, registry.DefaultPlatform); err != nil {
		t.Fatalf("Image: %v", err)
	}
	if pingHeld.Load() {
		t.Errorf("the manifest GET waited for the ping")
	}
	l := e.fx.GoTree.Layers[0]
	b := openBlob(t, ctx, c, ref.String(), l)
	readSpans(t, ctx, b, l, testSpans(l.Size))
}

// Requests that wait for a handshake that fails, while others start the
// next one, get the failure as an error (this used to panic).
func TestAnonymousHandshakeFailsUnderLoad(t *testing.T) {
	var pings atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			pings.Add(1)
			http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="http://127.0.0.1:1/token"`)
		http.Error(w, "login first", http.StatusUnauthorized)
	}))
	t.Cleanup(srv.Close)
	c := newClient(t, registry.WithRetry(registry.RetryPolicy{Tries: 1}))
	ref := parseRef(t, srv.Listener.Addr().String()+"/some/image:v1")
	b, err := c.Blob(testCtx(t), ref.Context(), mustHash(t, digestA), 1000)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for range 5 {
				if _, err := readRange(testCtx(t), b, 0, 10); err == nil {
					t.Errorf("ReadRange succeeded against a registry refusing everything")
				}
			}
		})
	}
	wg.Wait()
	if pings.Load() < 1 {
		t.Errorf("no handshake was tried")
	}
}
