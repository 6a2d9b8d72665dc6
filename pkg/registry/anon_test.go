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
