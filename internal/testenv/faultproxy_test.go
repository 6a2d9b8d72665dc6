package testenv

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Each fault of the fault proxy, seen from a plain HTTP client, in front of
// the real registry.
func TestFaultProxy(t *testing.T) {
	reg, err := StartRegistry(RegistryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeRegistry(t, reg) })
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	img, err := random.Image(100_000, 1)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(reg.Host+"/faults/app:v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, remote.WithContext(ctx)); err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	dgst, err := layers[0].Digest()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := layers[0].Compressed()
	if err != nil {
		t.Fatal(err)
	}
	blob, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}

	p, err := StartFaultProxy(reg.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	blobURL := "http://" + p.Host + "/v2/faults/app/blobs/" + dgst.String()
	// A client that does not retry on its own (no reused connections).
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	get := func(u, rng string, hdr ...string) (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			t.Fatal(err)
		}
		if rng != "" {
			req.Header.Set("Range", rng)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		return client.Do(req)
	}
	read := func(u, rng string, hdr ...string) (int, http.Header, []byte, error) {
		resp, err := get(u, rng, hdr...)
		if err != nil {
			return 0, nil, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, b, err
	}

	t.Run("status with Retry-After, once", func(t *testing.T) {
		p.Clear()
		p.Add(Rule{Match: MatchBlobs, Times: 1, Fault: Fault{Status: http.StatusTooManyRequests, RetryAfter: "2"}})
		status, hdr, _, err := read(blobURL, "bytes=0-9")
		if err != nil || status != http.StatusTooManyRequests || hdr.Get("Retry-After") != "2" {
			t.Fatalf("first GET: %d, Retry-After %q, %v; want 429 with Retry-After 2", status, hdr.Get("Retry-After"), err)
		}
		status, _, body, err := read(blobURL, "bytes=0-9")
		if err != nil || status != http.StatusPartialContent || !bytes.Equal(body, blob[:10]) {
			t.Fatalf("second GET: %d, %v; want 206 with the bytes", status, err)
		}
		seen := p.Seen()
		if len(seen) != 2 || seen[0].Fault != "status 429" || seen[1].Fault != "" || seen[1].Status != http.StatusPartialContent {
			t.Errorf("Seen = %+v", seen)
		}
	})

	t.Run("reset", func(t *testing.T) {
		p.Clear()
		p.Add(Rule{Match: MatchBlobs, Fault: Fault{Reset: true}})
		if _, err := get(blobURL, ""); err == nil {
			t.Fatal("GET through a reset succeeded")
		}
	})

	t.Run("cut mid-body", func(t *testing.T) {
		p.Clear()
		p.Add(Rule{Match: MatchBlobs, Fault: Fault{CutAfter: 1000}})
		status, _, body, err := read(blobURL, "")
		if status != http.StatusOK || len(body) != 1000 || !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("cut GET: status %d, %d bytes, %v; want 200, 1000 bytes, a reset", status, len(body), err)
		}
	})

	t.Run("stall", func(t *testing.T) {
		p.Clear()
		const stall = 300 * time.Millisecond
		p.Add(Rule{Match: MatchBlobs, Fault: Fault{StallAfter: 10, Stall: stall}})
		start := time.Now()
		status, _, body, err := read(blobURL, "")
		if err != nil || status != http.StatusOK || !bytes.Equal(body, blob) {
			t.Fatalf("stalled GET: %d, %d bytes, %v", status, len(body), err)
		}
		if d := time.Since(start); d < stall {
			t.Errorf("stalled GET took %v, want at least %v", d, stall)
		}
	})

	t.Run("ignore Range", func(t *testing.T) {
		p.Clear()
		p.Add(Rule{Match: MatchBlobs, Fault: Fault{IgnoreRange: true}})
		status, _, body, err := read(blobURL, "bytes=0-9")
		if err != nil || status != http.StatusOK || !bytes.Equal(body, blob) {
			t.Fatalf("GET with Range ignored: %d, %d bytes, %v; want 200 and the whole blob", status, len(body), err)
		}
	})

	t.Run("Content-Range", func(t *testing.T) {
		p.Clear()
		p.Add(Rule{Match: MatchBlobs, Fault: Fault{ContentRange: func(string) string { return "bytes 1-10/99" }}})
		status, hdr, _, err := read(blobURL, "bytes=0-9")
		if err != nil || status != http.StatusPartialContent || hdr.Get("Content-Range") != "bytes 1-10/99" {
			t.Fatalf("GET: %d, Content-Range %q, %v", status, hdr.Get("Content-Range"), err)
		}
	})

	t.Run("latency", func(t *testing.T) {
		p.Clear()
		p.Add(Rule{Match: MatchManifests, Fault: Fault{Latency: 200 * time.Millisecond}})
		start := time.Now()
		status, _, _, err := read("http://"+p.Host+"/v2/faults/app/manifests/v1", "", "Accept", "application/vnd.docker.distribution.manifest.v2+json")
		if err != nil || status != http.StatusOK {
			t.Fatalf("GET manifest: %d, %v", status, err)
		}
		if d := time.Since(start); d < 200*time.Millisecond {
			t.Errorf("GET took %v, want at least 200ms", d)
		}
	})

	t.Run("redirect to storage", func(t *testing.T) {
		p.Clear()
		p.Add(Rule{Match: MatchBlobs, Fault: Fault{Redirect: true}})
		noFollow := &http.Client{Transport: client.Transport, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, blobURL, nil)
		resp, err := noFollow.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc := resp.Header.Get("Location")
		if resp.StatusCode != http.StatusTemporaryRedirect || !strings.HasPrefix(loc, "http://"+p.Storage.Host+"/") {
			t.Fatalf("GET: %s to %q, want 307 to the storage", resp.Status, loc)
		}
		status, _, body, err := read(loc, "bytes=5-14")
		if err != nil || status != http.StatusPartialContent || !bytes.Equal(body, blob[5:15]) {
			t.Fatalf("GET of the signed URL: %d, %v", status, err)
		}
		if status, _, _, _ := read(loc, "", "Authorization", "Bearer x"); status != http.StatusBadRequest {
			t.Errorf("GET with Authorization: %d, want 400", status)
		}
		if !p.Storage.SawAuth() {
			t.Errorf("SawAuth = false after a request with Authorization")
		}
		hreq, _ := http.NewRequestWithContext(ctx, http.MethodHead, loc, nil)
		if resp, err := client.Do(hreq); err != nil || resp.StatusCode != http.StatusForbidden {
			t.Errorf("HEAD of the signed URL: %v, %v; want 403", resp.Status, err)
		}
		p.Storage.Expire()
		if status, _, _, _ := read(loc, ""); status != http.StatusForbidden {
			t.Errorf("GET after Expire: %d, want 403", status)
		}
		if got := p.Storage.Gets(); got != 1 {
			t.Errorf("Gets = %d, want 1", got)
		}
		// The followed redirect, end to end.
		status, _, body, err = read(blobURL, "bytes=0-99")
		if err != nil || status != http.StatusPartialContent || !bytes.Equal(body, blob[:100]) {
			t.Errorf("followed redirect: %d, %v", status, err)
		}
	})
}
