package registry_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/stargz-get/stargz-get/internal/testenv"
	"github.com/stargz-get/stargz-get/pkg/registry"
)

// testTimeout bounds each test's registry calls.
const testTimeout = 60 * time.Second

const (
	ociManifest = "application/vnd.oci.image.manifest.v1+json"
	digestA     = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	digestZero  = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// noKeychain resolves every registry to anonymous access, so the tests do
// not depend on the docker config of whoever runs them.
var noKeychain = authn.NewMultiKeychain()

// staticKeychain resolves every registry to one Basic credential.
type staticKeychain struct{ user, password string }

func (k staticKeychain) Resolve(authn.Resource) (authn.Authenticator, error) {
	return &authn.Basic{Username: k.user, Password: k.password}, nil
}

func newClient(t *testing.T, opts ...registry.Option) *registry.Client {
	t.Helper()
	c, err := registry.New(append([]registry.Option{registry.WithKeychain(noKeychain)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func parseRef(t *testing.T, s string) name.Reference {
	t.Helper()
	ref, err := registry.ParseReference(s, false)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

func TestParseReference(t *testing.T) {
	hex64 := strings.Repeat("0123456789abcdef", 4)
	tests := []struct {
		in        string
		plainHTTP bool
		want      string // Name() of the reference
		scheme    string // of its registry
		wantErr   bool
	}{
		{in: "ubuntu", want: "index.docker.io/library/ubuntu:latest", scheme: "https"},
		{in: "ubuntu:24.04", want: "index.docker.io/library/ubuntu:24.04", scheme: "https"},
		{in: "docker.io/library/ubuntu", want: "index.docker.io/library/ubuntu:latest", scheme: "https"},
		{in: "someone/app:1", want: "index.docker.io/someone/app:1", scheme: "https"},
		{in: "ghcr.io/stargz-containers/node:13.13.0-esgz", want: "ghcr.io/stargz-containers/node:13.13.0-esgz", scheme: "https"},
		{in: "localhost:5000/a/b:t", want: "localhost:5000/a/b:t", scheme: "http"},
		{
			in: "localhost/a", want: "localhost/a:latest", scheme: "http",
		},
		{in: "127.0.0.1:5000/a/b", want: "127.0.0.1:5000/a/b:latest", scheme: "http"},
		{in: "[::1]:5000/a:t", want: "[::1]:5000/a:t", scheme: "http"},
		{in: "registry.example.com:5000/a/b:t", want: "registry.example.com:5000/a/b:t", scheme: "https"},
		{in: "registry.example.com:5000/a/b:t", plainHTTP: true, want: "registry.example.com:5000/a/b:t", scheme: "http"},
		{in: "x@sha256:" + hex64, want: "index.docker.io/library/x@sha256:" + hex64, scheme: "https"},
		{in: "localhost:5000/x@sha256:" + hex64, want: "localhost:5000/x@sha256:" + hex64, scheme: "http"},
		// A digest pins the manifest; the tag beside it is only a label.
		{in: "x:1.0@sha256:" + hex64, want: "index.docker.io/library/x@sha256:" + hex64, scheme: "https"},

		{in: "", wantErr: true},
		{in: "Ubuntu", wantErr: true},
		{in: "ubuntu:", wantErr: true},
		{in: "ubuntu:a:b", wantErr: true},
		{in: "a b", wantErr: true},
		{in: "x@sha256:abc", wantErr: true},
		{in: "x@sha256:" + strings.ToUpper(hex64), wantErr: true},
		{in: "x@md5:" + hex64, wantErr: true},
		{in: "https://ghcr.io/a/b", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%q/plainHTTP=%v", tc.in, tc.plainHTTP), func(t *testing.T) {
			ref, err := registry.ParseReference(tc.in, tc.plainHTTP)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("ParseReference = %s, want an error", ref.Name())
				}
				if want := fmt.Sprintf("parsing image reference %q", tc.in); !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := [2]string{ref.Name(), ref.Context().Scheme()}
			if diff := cmp.Diff([2]string{tc.want, tc.scheme}, got); diff != "" {
				t.Errorf("[name, scheme] (-want +got):\n%s", diff)
			}
		})
	}
}

// Client.ParseReference honours WithPlainHTTP.
func TestClientParseReference(t *testing.T) {
	for _, plain := range []bool{false, true} {
		c := newClient(t, registry.WithPlainHTTP(plain))
		ref, err := c.ParseReference("registry.example.com/a:t")
		if err != nil {
			t.Fatal(err)
		}
		want := map[bool]string{false: "https", true: "http"}[plain]
		if got := ref.Context().Scheme(); got != want {
			t.Errorf("WithPlainHTTP(%v): scheme %s, want %s", plain, got, want)
		}
	}
}

func TestParsePlatform(t *testing.T) {
	tests := []struct {
		in      string
		want    v1.Platform
		wantErr bool
	}{
		{in: "linux/amd64", want: v1.Platform{OS: "linux", Architecture: "amd64"}},
		{in: "linux/arm64", want: v1.Platform{OS: "linux", Architecture: "arm64"}},
		{in: "linux/arm/v7", want: v1.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}},
		{in: "windows/amd64", want: v1.Platform{OS: "windows", Architecture: "amd64"}},
		{in: "", wantErr: true},
		{in: "linux", wantErr: true},
		{in: "linux/", wantErr: true},
		{in: "/amd64", wantErr: true},
		{in: "/", wantErr: true},
		{in: "linux//v7", wantErr: true},
		{in: "linux/arm/v7/x", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%q", tc.in), func(t *testing.T) {
			got, err := registry.ParsePlatform(tc.in)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("ParsePlatform = %+v, want an error", got)
				}
				if !strings.Contains(err.Error(), "os/arch") {
					t.Errorf("error %q does not say what is expected", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("ParsePlatform (-want +got):\n%s", diff)
			}
			if s := registry.FormatPlatform(&got); s != tc.in {
				t.Errorf("FormatPlatform(ParsePlatform(%q)) = %q", tc.in, s)
			}
		})
	}
	if s := registry.FormatPlatform(nil); s != "" {
		t.Errorf("FormatPlatform(nil) = %q, want empty", s)
	}
}

// layerView and imageView are what a test compares of a resolved image.
type layerView struct {
	Index       int
	Digest      string
	Size        int64
	MediaType   string
	Annotations map[string]string
}

type imageView struct {
	Manifest  string
	MediaType string
	Platform  string
	Layers    []layerView
}

func viewOf(img *registry.Image) imageView {
	v := imageView{Manifest: img.Manifest.String(), MediaType: string(img.MediaType), Platform: img.Platform}
	for _, l := range img.Layers {
		v.Layers = append(v.Layers, layerView{l.Index, l.Digest.String(), l.Size, string(l.MediaType), l.Annotations})
	}
	return v
}

// fixtureView is the view of fixture image fi; platform is what Image
// reports when it chose fi from an index.
func fixtureView(fi *testenv.Image, platform string) imageView {
	v := imageView{Manifest: fi.Digest, MediaType: ociManifest, Platform: platform}
	for i, l := range fi.Layers {
		v.Layers = append(v.Layers, layerView{i, l.Digest, l.Size, l.MediaType, l.Annotations()})
	}
	return v
}

func TestImage(t *testing.T) {
	e := testEnv(t)
	fx, host := e.fx, e.anon.Host
	amd64, arm64 := fx.Index.Images[0], fx.Index.Images[1]
	if amd64.Platform != "linux/amd64" || arm64.Platform != "linux/arm64" {
		t.Fatalf("fixture index has %s and %s, test expects linux/amd64 and linux/arm64", amd64.Platform, arm64.Platform)
	}
	c := newClient(t)
	tests := []struct {
		name     string
		ref      string
		platform string // "" means registry.DefaultPlatform
		want     imageView
	}{
		{name: "gotree", ref: fx.GoTree.Ref(host), want: fixtureView(fx.GoTree, "")},
		{name: "minchunk", ref: fx.MinChunk.Ref(host), want: fixtureView(fx.MinChunk, "")},
		{name: "multi", ref: fx.Multi.Ref(host), want: fixtureView(fx.Multi, "")},
		{name: "plain gzip", ref: fx.Gzip.Ref(host), want: fixtureView(fx.Gzip, "")},
		{name: "by digest", ref: host + "/" + fx.GoTree.Name + "@" + fx.GoTree.Digest, want: fixtureView(fx.GoTree, "")},
		// A single manifest is what it is: the platform asked for is not
		// checked against it.
		{name: "manifest ignores platform", ref: fx.GoTree.Ref(host), platform: "linux/arm64", want: fixtureView(fx.GoTree, "")},
		{name: "index default platform", ref: fx.Index.Ref(host), want: fixtureView(amd64, "linux/amd64")},
		{name: "index linux/amd64", ref: fx.Index.Ref(host), platform: "linux/amd64", want: fixtureView(amd64, "linux/amd64")},
		{name: "index linux/arm64", ref: fx.Index.Ref(host), platform: "linux/arm64", want: fixtureView(arm64, "linux/arm64")},
		{name: "index by digest", ref: host + "/" + fx.Index.Name + "@" + fx.Index.Digest, platform: "linux/arm64", want: fixtureView(arm64, "linux/arm64")},
		{name: "platform manifest by digest", ref: arm64.Ref(host), want: fixtureView(arm64, "")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := registry.DefaultPlatform
			if tc.platform != "" {
				var err error
				if p, err = registry.ParsePlatform(tc.platform); err != nil {
					t.Fatal(err)
				}
			}
			ref := parseRef(t, tc.ref)
			img, err := c.Image(testCtx(t), ref, p)
			if err != nil {
				t.Fatal(err)
			}
			if img.Ref.Name() != ref.Name() {
				t.Errorf("Image.Ref = %s, want %s", img.Ref.Name(), ref.Name())
			}
			if diff := cmp.Diff(tc.want, viewOf(img), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Image (-want +got):\n%s", diff)
			}
		})
	}
	if amd64.Digest == arm64.Digest {
		t.Errorf("index platforms share manifest %s", amd64.Digest)
	}
}

func TestImageErrors(t *testing.T) {
	e := testEnv(t)
	fx, host := e.fx, e.anon.Host
	c := newClient(t)
	tests := []struct {
		name     string
		ref      string
		platform v1.Platform
		is       error    // errors.Is target, if any
		contains []string // in the message
	}{
		{
			name:     "unknown platform",
			ref:      fx.Index.Ref(host),
			platform: v1.Platform{OS: "linux", Architecture: "s390x"},
			contains: []string{"linux/s390x", "linux/amd64, linux/arm64"},
		},
		{
			name:     "unknown variant",
			ref:      fx.Index.Ref(host),
			platform: v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v9"},
			contains: []string{"linux/arm64/v9", "linux/amd64, linux/arm64"},
		},
		{
			name:     "unknown tag",
			ref:      host + "/" + fx.GoTree.Name + ":nope",
			platform: registry.DefaultPlatform,
			is:       registry.ErrNotFound,
			contains: []string{fx.GoTree.Name + ":nope"},
		},
		{
			name:     "unknown repository",
			ref:      host + "/fixtures/nope:v1",
			platform: registry.DefaultPlatform,
			is:       registry.ErrNotFound,
			contains: []string{"fixtures/nope"},
		},
		{
			name:     "unknown digest",
			ref:      host + "/" + fx.GoTree.Name + "@" + digestZero,
			platform: registry.DefaultPlatform,
			is:       registry.ErrNotFound,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			img, err := c.Image(testCtx(t), parseRef(t, tc.ref), tc.platform)
			if err == nil {
				t.Fatalf("Image = %+v, want an error", viewOf(img))
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %q is not %v", err, tc.is)
			}
			for _, s := range tc.contains {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
		})
	}
}

func TestAuth(t *testing.T) {
	e := testEnv(t)
	fx, host := e.fx, e.private.Host
	ref := fx.GoTree.Ref(host)
	const wrongPassword = "hunter2-not-it"
	tests := []struct {
		name    string
		opts    []registry.Option
		wantErr error
	}{
		{name: "no credentials", wantErr: registry.ErrAuth},
		{name: "wrong password", opts: []registry.Option{registry.WithCredential(testUser, wrongPassword)}, wantErr: registry.ErrAuth},
		{name: "unknown user", opts: []registry.Option{registry.WithCredential("mallory", wrongPassword)}, wantErr: registry.ErrAuth},
		{name: "wrong password from keychain", opts: []registry.Option{registry.WithKeychain(staticKeychain{testUser, wrongPassword})}, wantErr: registry.ErrAuth},
		{name: "right password", opts: []registry.Option{registry.WithCredential(testUser, testPassword)}},
		{name: "right password from keychain", opts: []registry.Option{registry.WithKeychain(staticKeychain{testUser, testPassword})}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			c := newClient(t, tc.opts...)
			img, err := c.Image(ctx, parseRef(t, ref), registry.DefaultPlatform)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(fixtureView(fx.GoTree, ""), viewOf(img), cmpopts.EquateEmpty()); diff != "" {
					t.Errorf("Image (-want +got):\n%s", diff)
				}
				l := fx.GoTree.Layers[0]
				got := readBlob(t, ctx, c, ref, l, 0, 4096)
				if want := fixtureBytes(t, l, 0, 4096); !bytes.Equal(got, want) {
					t.Errorf("ReadRange with credentials returned other bytes than the blob's")
				}
				return
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Image error %v, want %v", err, tc.wantErr)
			}
			msg := err.Error()
			if !strings.Contains(msg, host) {
				t.Errorf("error %q does not name the registry %s", msg, host)
			}
			for _, secret := range []string{wrongPassword, testPassword} {
				if strings.Contains(msg, secret) {
					t.Errorf("error %q shows the password", msg)
				}
			}
			// Blob reads are refused the same way.
			l := fx.GoTree.Layers[0]
			b, err := c.Blob(ctx, parseRef(t, ref).Context(), mustHash(t, l.Digest), l.Size)
			if err == nil {
				var rc io.ReadCloser
				if rc, err = b.ReadRange(ctx, 0, 10); err == nil {
					rc.Close()
				}
			}
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("reading a blob: %v, want %v", err, tc.wantErr)
			}
		})
	}
}

func TestNewErrors(t *testing.T) {
	if _, err := registry.New(registry.WithCredential("", "x")); err == nil {
		t.Error("New(WithCredential(\"\", ...)) succeeded, want an error")
	}
}

func TestUnreachable(t *testing.T) {
	ctx := testCtx(t)
	c := newClient(t)
	ref := parseRef(t, "127.0.0.1:1/fixtures/gotree:v1")
	_, err := c.Image(ctx, ref, registry.DefaultPlatform)
	if !errors.Is(err, registry.ErrUnreachable) {
		t.Errorf("Image: %v, want %v", err, registry.ErrUnreachable)
	}
	if err != nil && !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Errorf("Image error %q does not name the registry", err)
	}
	// Without credentials, Blob does not wait for the handshake: the
	// first read reports what it found.
	b, err := c.Blob(ctx, ref.Context(), mustHash(t, digestA), 10)
	if err == nil {
		_, err = readRange(ctx, b, 0, 10)
	}
	if !errors.Is(err, registry.ErrUnreachable) {
		t.Errorf("Blob and ReadRange: %v, want %v", err, registry.ErrUnreachable)
	}
	if err != nil && !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Errorf("ReadRange error %q does not name the registry", err)
	}
}

func mustHash(t *testing.T, s string) v1.Hash {
	t.Helper()
	h, err := v1.NewHash(s)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// fixtureBytes returns n bytes at off of the fixture layer's blob file.
func fixtureBytes(t *testing.T, l *testenv.Layer, off, n int64) []byte {
	t.Helper()
	f, err := l.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

// openBlob opens fixture layer l of the image at ref through c.
func openBlob(t *testing.T, ctx context.Context, c *registry.Client, ref string, l *testenv.Layer) *registry.Blob {
	t.Helper()
	b, err := c.Blob(ctx, parseRef(t, ref).Context(), mustHash(t, l.Digest), l.Size)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// readBlob reads n bytes at off of fixture layer l of the image at ref.
func readBlob(t *testing.T, ctx context.Context, c *registry.Client, ref string, l *testenv.Layer, off, n int64) []byte {
	t.Helper()
	got, err := readRange(ctx, openBlob(t, ctx, c, ref, l), off, n)
	if err != nil {
		t.Fatalf("ReadRange(%d, %d): %v", off, n, err)
	}
	return got
}

func readRange(ctx context.Context, b *registry.Blob, off, n int64) ([]byte, error) {
	rc, err := b.ReadRange(ctx, off, n)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// span is a byte range of a blob.
type span struct {
	name   string
	off, n int64
}

// spans are the ranges every ReadRange test reads from a blob of size.
func spans(size int64) []span {
	return []span{
		{"first byte", 0, 1},
		{"start", 0, 4096},
		{"middle", size / 2, min(65536, size-size/2)},
		{"odd middle", size/3 + 7, min(12345, size-size/3-7)},
		{"eStargz footer", size - 51, 51},
		{"last byte", size - 1, 1},
		{"whole blob", 0, size},
	}
}

// checkSpans reads every span of fixture layer l through b and compares
// the bytes with the blob file's.
func checkSpans(t *testing.T, ctx context.Context, b *registry.Blob, l *testenv.Layer) {
	t.Helper()
	for _, s := range spans(l.Size) {
		t.Run(s.name, func(t *testing.T) {
			got, err := readRange(ctx, b, s.off, s.n)
			if err != nil {
				t.Fatalf("ReadRange(%d, %d): %v", s.off, s.n, err)
			}
			want := fixtureBytes(t, l, s.off, s.n)
			if !bytes.Equal(got, want) {
				t.Errorf("ReadRange(%d, %d): %s", s.off, s.n, describeDiff(want, got))
			}
		})
	}
}

// describeDiff says where got, too long to print, first differs from want.
func describeDiff(want, got []byte) string {
	if len(got) != len(want) {
		return fmt.Sprintf("got %d bytes, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			return fmt.Sprintf("byte %d is %#x, want %#x", i, got[i], want[i])
		}
	}
	return "equal"
}

func TestReadRange(t *testing.T) {
	e := testEnv(t)
	ctx := testCtx(t)
	c := newClient(t)
	for _, tc := range []struct {
		img *testenv.Image
		l   int
	}{
		{e.fx.GoTree, 0},
		{e.fx.Multi, 2},
		{e.fx.Gzip, 0},
	} {
		l := tc.img.Layers[tc.l]
		t.Run(fmt.Sprintf("%s layer %d", tc.img.Name, tc.l), func(t *testing.T) {
			b := openBlob(t, ctx, c, tc.img.Ref(e.anon.Host), l)
			if b.Digest().String() != l.Digest || b.Size() != l.Size {
				t.Errorf("Blob %s of %d bytes, want %s of %d", b.Digest(), b.Size(), l.Digest, l.Size)
			}
			checkSpans(t, ctx, b, l)
		})
	}
}

func TestReadAt(t *testing.T) {
	e := testEnv(t)
	l := e.fx.GoTree.Layers[0]
	b := openBlob(t, testCtx(t), newClient(t), e.fx.GoTree.Ref(e.anon.Host), l)
	var r io.ReaderAt = b
	got := make([]byte, 1000)
	if n, err := r.ReadAt(got, l.Size-1000); err != nil || n != 1000 {
		t.Fatalf("ReadAt = %d, %v", n, err)
	}
	if want := fixtureBytes(t, l, l.Size-1000, 1000); !bytes.Equal(got, want) {
		t.Errorf("ReadAt: %s", describeDiff(want, got))
	}
}

func TestReadRangeErrors(t *testing.T) {
	e := testEnv(t)
	ctx := testCtx(t)
	c := newClient(t)
	l := e.fx.GoTree.Layers[0]
	ref := e.fx.GoTree.Ref(e.anon.Host)
	repo := parseRef(t, ref).Context()
	known := openBlob(t, ctx, c, ref, l)
	// A blob of unknown size leaves range checks to the registry.
	unsized, err := c.Blob(ctx, repo, mustHash(t, l.Digest), 0)
	if err != nil {
		t.Fatal(err)
	}
	missing, err := c.Blob(ctx, repo, mustHash(t, digestA), 100)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		b      *registry.Blob
		off, n int64
		is     error
	}{
		{name: "starts at the end", b: known, off: l.Size, n: 1},
		{name: "ends past the end", b: known, off: l.Size - 1, n: 2},
		{name: "far past the end", b: known, off: 1 << 40, n: 10},
		{name: "negative offset", b: known, off: -1, n: 10},
		{name: "empty", b: known, off: 0, n: 0},
		{name: "negative length", b: known, off: 10, n: -5},
		{name: "unknown size, starts at the end", b: unsized, off: l.Size, n: 10},
		{name: "unknown size, ends past the end", b: unsized, off: l.Size - 10, n: 20},
		{name: "unknown blob", b: missing, off: 0, n: 10, is: registry.ErrNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readRange(ctx, tc.b, tc.off, tc.n)
			if err == nil {
				t.Fatalf("ReadRange(%d, %d) = %d bytes, want an error", tc.off, tc.n, len(got))
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("ReadRange(%d, %d): %v, want %v", tc.off, tc.n, err, tc.is)
			}
			if !strings.Contains(err.Error(), tc.b.Digest().String()) {
				t.Errorf("error %q does not name the blob", err)
			}
		})
	}
}

func TestCancelledContext(t *testing.T) {
	e := testEnv(t)
	fx, host := e.fx, e.anon.Host
	l := fx.GoTree.Layers[0]
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()

	t.Run("Image", func(t *testing.T) {
		c := newClient(t)
		ref := parseRef(t, fx.GoTree.Ref(host))
		if _, err := c.Image(cancelled, ref, registry.DefaultPlatform); !errors.Is(err, context.Canceled) {
			t.Fatalf("Image with a cancelled context: %v, want %v", err, context.Canceled)
		}
		// A cancelled first call must not poison the client.
		if _, err := c.Image(testCtx(t), ref, registry.DefaultPlatform); err != nil {
			t.Fatalf("Image after a cancelled call: %v", err)
		}
	})
	t.Run("Image past its deadline", func(t *testing.T) {
		c := newClient(t)
		ref := parseRef(t, fx.GoTree.Ref(host))
		expired, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
		defer cancel()
		if _, err := c.Image(expired, ref, registry.DefaultPlatform); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Image past its deadline: %v, want %v", err, context.DeadlineExceeded)
		}
		if _, err := c.Image(testCtx(t), ref, registry.DefaultPlatform); err != nil {
			t.Fatalf("Image after a call past its deadline: %v", err)
		}
	})
	t.Run("Blob", func(t *testing.T) {
		c := newClient(t)
		repo := parseRef(t, fx.GoTree.Ref(host)).Context()
		b, err := c.Blob(cancelled, repo, mustHash(t, l.Digest), l.Size)
		if err == nil {
			_, err = readRange(cancelled, b, 0, 10)
		}
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Blob and ReadRange with a cancelled context: %v, want %v", err, context.Canceled)
		}
	})
	t.Run("ReadRange", func(t *testing.T) {
		b := openBlob(t, testCtx(t), newClient(t), fx.GoTree.Ref(host), l)
		if _, err := readRange(cancelled, b, 0, 100); !errors.Is(err, context.Canceled) {
			t.Fatalf("ReadRange with a cancelled context: %v, want %v", err, context.Canceled)
		}
	})
	t.Run("while reading the body", func(t *testing.T) {
		b := openBlob(t, testCtx(t), newClient(t), fx.GoTree.Ref(host), l)
		ctx, cancel := context.WithCancel(testCtx(t))
		defer cancel()
		rc, err := b.ReadRange(ctx, 0, l.Size)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		if _, err := io.ReadFull(rc, make([]byte, 10)); err != nil {
			t.Fatal(err)
		}
		cancel()
		if n, err := io.Copy(io.Discard, rc); !errors.Is(err, context.Canceled) {
			t.Fatalf("reading on after cancel: %d bytes, %v; want %v", n, err, context.Canceled)
		}
	})
}

// Concurrent readers of one blob, starting on a fresh client, all get their
// bytes (run with -race).
func TestConcurrentReads(t *testing.T) {
	e := testEnv(t)
	ctx := testCtx(t)
	l := e.fx.Multi.Layers[1]
	b := openBlob(t, ctx, newClient(t), e.fx.Multi.Ref(e.anon.Host), l)
	want := fixtureBytes(t, l, 0, l.Size)
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(i), 1))
			for range 8 {
				off := r.Int64N(l.Size)
				n := 1 + r.Int64N(min(l.Size-off, 64<<10))
				got, err := readRange(ctx, b, off, n)
				if err != nil {
					t.Errorf("ReadRange(%d, %d): %v", off, n, err)
					return
				}
				if !bytes.Equal(got, want[off:off+n]) {
					t.Errorf("ReadRange(%d, %d): %s", off, n, describeDiff(want[off:off+n], got))
				}
			}
		})
	}
	wg.Wait()
}

// logLines collects WithLogf output.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

func (l *logLines) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

func TestLogf(t *testing.T) {
	e := testEnv(t)
	ctx := testCtx(t)
	var log logLines
	c := newClient(t, registry.WithCredential(testUser, testPassword), registry.WithLogf(log.logf))
	ref := e.fx.GoTree.Ref(e.private.Host)
	if _, err := c.Image(ctx, parseRef(t, ref), registry.DefaultPlatform); err != nil {
		t.Fatal(err)
	}
	l := e.fx.GoTree.Layers[0]
	readBlob(t, ctx, c, ref, l, 10, 10)
	lines := log.all()
	if len(lines) == 0 {
		t.Fatal("WithLogf received nothing")
	}
	text := strings.Join(lines, "\n")
	t.Logf("log:\n%s", text)
	// The ranged GET: method, URL, the range asked for, the status.
	blobURL := "GET http://" + e.private.Host + "/v2/" + e.fx.GoTree.Name + "/blobs/" + l.Digest
	var ranged string
	for _, line := range lines {
		if strings.HasPrefix(line, blobURL) && strings.Contains(line, "bytes=10-19") {
			ranged = line
		}
	}
	if ranged == "" {
		t.Errorf("no log line starts with %q and mentions bytes=10-19", blobURL)
	} else if !strings.Contains(ranged, "206") {
		t.Errorf("ranged GET log line %q does not give the status 206", ranged)
	}
	if !strings.Contains(text, "/manifests/"+e.fx.GoTree.Tag) {
		t.Errorf("no log line for the manifest GET")
	}
	basic := "YWxpY2U6czNjcmV0" // base64("alice:s3cret")
	for _, secret := range []string{testPassword, basic, "Authorization", "Basic "} {
		if strings.Contains(text, secret) {
			t.Errorf("log shows %q", secret)
		}
	}
}

func TestRedactURL(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{in: "", want: ""},
		{in: "https://ghcr.io/v2/a/b/blobs/sha256:x", want: "https://ghcr.io/v2/a/b/blobs/sha256:x"},
		{
			in:   "https://storage.example/blobs/sha256:x?X-Amz-Credential=AKIA%2F1&X-Amz-Signature=deadbeef",
			want: "https://storage.example/blobs/sha256:x?…",
		},
		{in: "https://r.example/token?scope=repository%3Aa%3Apull&account=alice", want: "https://r.example/token?…"},
		{in: "https://r.example/v2/#frag", want: "https://r.example/v2/?…"},
		{in: "https://user:pass@r.example/v2/", want: "https://r.example/v2/"},
		{in: "https://user@r.example:5000/v2/", want: "https://r.example:5000/v2/"},
		{in: "https://user:pass@r.example?sig=1", want: "https://r.example?…"},
		{in: "https://user:pass@r.example", want: "https://r.example"},
		{in: "https://user:p%40ss@r.example/v2/", want: "https://r.example/v2/"},
		{in: "http://127.0.0.1:5000/v2/a@b/c", want: "http://127.0.0.1:5000/v2/a@b/c"},
		{in: "http://127.0.0.1:5000/v2/x?next=https://u:p@h/", want: "http://127.0.0.1:5000/v2/x?…"},
		{
			in:   "https://user:p@ss@r.example/v2/",
			want: "https://r.example/v2/",
		},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got := registry.RedactURL(tc.in)
			if got != tc.want {
				t.Errorf("RedactURL(%q) = %q, want %q", tc.in, got, tc.want)
			}
			if u, err := url.Parse(tc.in); err == nil && u.User != nil {
				if p, ok := u.User.Password(); ok && strings.Contains(got, p) {
					t.Errorf("RedactURL(%q) = %q shows the password", tc.in, got)
				}
			}
		})
	}
}

// proxy is a reverse proxy in front of the anonymous registry that lets a
// test change blob responses. It counts the blob GETs it forwarded.
type proxy struct {
	*httptest.Server
	blobGets atomic.Int64
}

// newProxy starts a proxy; rewrite changes each blob request on its way,
// modify each blob response on its way back (either may be nil).
func newProxy(t *testing.T, target string, rewrite func(*http.Request), modify func(*http.Response) error) *proxy {
	t.Helper()
	u, err := url.Parse("http://" + target)
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{}
	isBlob := func(r *http.Request) bool { return strings.Contains(r.URL.Path, "/blobs/") }
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			if isBlob(pr.In) && pr.In.Method == http.MethodGet {
				p.blobGets.Add(1)
				if rewrite != nil {
					rewrite(pr.Out)
				}
			}
		},
		ModifyResponse: func(resp *http.Response) error {
			if modify != nil && isBlob(resp.Request) {
				return modify(resp)
			}
			return nil
		},
	}
	p.Server = httptest.NewServer(rp)
	t.Cleanup(p.Close)
	return p
}

// A registry (or CDN) that ignores Range and answers 200 with the whole
// blob still yields the right bytes.
func TestReadRangeIgnoredRange(t *testing.T) {
	e := testEnv(t)
	ctx := testCtx(t)
	p := newProxy(t, e.anon.Host, func(r *http.Request) { r.Header.Del("Range") }, func(resp *http.Response) error {
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("proxy: registry answered %s to a GET without Range", resp.Status)
		}
		return nil
	})
	host := p.Listener.Addr().String()
	var log logLines
	c := newClient(t, registry.WithLogf(log.logf))
	l := e.fx.GoTree.Layers[0]
	b := openBlob(t, ctx, c, e.fx.GoTree.Ref(host), l)
	checkSpans(t, ctx, b, l)
	if n := p.blobGets.Load(); n < int64(len(spans(l.Size))) {
		t.Errorf("proxy forwarded %d blob GETs, want at least %d", n, len(spans(l.Size)))
	}
	if !strings.Contains(strings.Join(log.all(), "\n"), "ignored Range") {
		t.Errorf("no log line says the registry ignored Range")
	}
}

// A 206 whose Content-Range is not the range asked for is an error, not
// wrong bytes.
func TestReadRangeWrongContentRange(t *testing.T) {
	e := testEnv(t)
	l := e.fx.GoTree.Layers[0]
	tests := []struct {
		name   string
		modify func(first, last, total int64) string // the Content-Range to send
	}{
		{"shifted by one", func(a, z, total int64) string { return fmt.Sprintf("bytes %d-%d/%d", a+1, z+1, total) }},
		{"shorter", func(a, z, total int64) string { return fmt.Sprintf("bytes %d-%d/%d", a, z-1, total) }},
		{"longer", func(a, z, total int64) string { return fmt.Sprintf("bytes %d-%d/%d", a, z+1, total) }},
		{"missing", func(int64, int64, int64) string { return "" }},
		{"unsatisfied form", func(_, _, total int64) string { return fmt.Sprintf("bytes */%d", total) }},
		{"other unit", func(a, z, total int64) string { return fmt.Sprintf("items %d-%d/%d", a, z, total) }},
		{"garbage", func(int64, int64, int64) string { return "bytes x-y/z" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			p := newProxy(t, e.anon.Host, nil, func(resp *http.Response) error {
				if resp.StatusCode != http.StatusPartialContent {
					return nil
				}
				var a, z, total int64
				if _, err := fmt.Sscanf(resp.Header.Get("Content-Range"), "bytes %d-%d/%d", &a, &z, &total); err != nil {
					return fmt.Errorf("proxy: parsing the registry's Content-Range: %w", err)
				}
				resp.Header.Set("Content-Range", tc.modify(a, z, total))
				return nil
			})
			b := openBlob(t, ctx, newClient(t), e.fx.GoTree.Ref(p.Listener.Addr().String()), l)
			got, err := readRange(ctx, b, 1000, 100)
			if err == nil {
				t.Fatalf("ReadRange(1000, 100) = %d bytes, want an error", len(got))
			}
			if !strings.Contains(err.Error(), "Content-Range") {
				t.Errorf("error %q does not mention Content-Range", err)
			}
			if p.blobGets.Load() == 0 {
				t.Errorf("the blob GET did not go through the proxy")
			}
		})
	}
}

// storage stands in for the blob storage (S3, a CDN) a registry redirects
// blob GETs to with a signed URL. It serves one blob with Range support
// and accepts only the signature issued last.
type storage struct {
	*httptest.Server
	blob    []byte
	gets    atomic.Int64
	sawAuth atomic.Bool

	mu    sync.Mutex
	valid string // the signature accepted; "" when expired
	n     int    // signatures issued
}

func newStorage(t *testing.T, blob []byte) *storage {
	s := &storage{blob: blob}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.gets.Add(1)
		if r.Header.Get("Authorization") != "" {
			s.sawAuth.Store(true)
		}
		s.mu.Lock()
		ok := s.valid != "" && r.URL.Query().Get("X-Signature") == s.valid
		s.mu.Unlock()
		if !ok {
			http.Error(w, "signature expired", http.StatusForbidden)
			return
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(s.blob))
	}))
	t.Cleanup(s.Close)
	return s
}

// sign issues a new signed URL for the blob, making the previous one invalid.
func (s *storage) sign(digest string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	s.valid = fmt.Sprintf("secret-signature-%d", s.n)
	return s.URL + "/blobs/" + digest + "?X-Signature=" + s.valid
}

func (s *storage) expire() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.valid = ""
}

// A registry that redirects blob GETs to blob storage: the redirect is
// followed without the registry's credentials, its target is reused for
// further ranges, and a target that stops working (an expired signature)
// sends the client back to the registry for a fresh one.
func TestReadRangeRedirect(t *testing.T) {
	e := testEnv(t)
	ctx := testCtx(t)
	l := e.fx.GoTree.Layers[0]
	blob := fixtureBytes(t, l, 0, l.Size)
	st := newStorage(t, blob)
	// The proxy lets the registry check the credentials, then turns its
	// answer into a redirect.
	p := newProxy(t, e.private.Host, nil, func(resp *http.Response) error {
		if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPartialContent {
			return nil
		}
		resp.Body.Close()
		resp.Body = http.NoBody
		resp.ContentLength = 0
		resp.StatusCode, resp.Status = http.StatusTemporaryRedirect, "307 Temporary Redirect"
		resp.Header = http.Header{"Location": {st.sign(l.Digest)}}
		return nil
	})
	var log logLines
	c := newClient(t, registry.WithCredential(testUser, testPassword), registry.WithLogf(log.logf))
	b := openBlob(t, ctx, c, e.fx.GoTree.Ref(p.Listener.Addr().String()), l)

	read := func(off, n int64) {
		t.Helper()
		got, err := readRange(ctx, b, off, n)
		if err != nil {
			t.Fatalf("ReadRange(%d, %d): %v", off, n, err)
		}
		if !bytes.Equal(got, blob[off:off+n]) {
			t.Fatalf("ReadRange(%d, %d): %s", off, n, describeDiff(blob[off:off+n], got))
		}
	}
	counts := func(wantRegistry, wantStorage int64) {
		t.Helper()
		got := [2]int64{p.blobGets.Load(), st.gets.Load()}
		if diff := cmp.Diff([2]int64{wantRegistry, wantStorage}, got); diff != "" {
			t.Errorf("[registry blob GETs, storage GETs] (-want +got):\n%s", diff)
		}
	}

	read(0, 100)
	counts(1, 1)
	read(l.Size-51, 51)
	read(l.Size/2, 4096)
	counts(1, 3) // straight to storage
	st.expire()
	read(1000, 1000)
	counts(2, 5) // a 403 from storage, the registry again, storage again
	read(l.Size-1, 1)
	counts(2, 6)
	// Several ranges in one request go the same way: to storage while
	// the signature holds, to the registry again when it expires.
	readSpans(t, ctx, b, l, testSpans(l.Size))
	counts(2, 7)
	st.expire()
	readSpans(t, ctx, b, l, testSpans(l.Size))
	counts(3, 9)

	if st.sawAuth.Load() {
		t.Error("blob storage received an Authorization header")
	}
	text := strings.Join(log.all(), "\n")
	for _, secret := range []string{"secret-signature", testPassword, "Authorization"} {
		if strings.Contains(text, secret) {
			t.Errorf("log shows %q:\n%s", secret, text)
		}
	}
	if !strings.Contains(text, "asking the registry again") {
		t.Errorf("log does not say the redirect target stopped working:\n%s", text)
	}

	// An error while reading from the redirect target does not show the
	// signed URL either.
	t.Run("cancelled", func(t *testing.T) {
		cancelled, cancel := context.WithCancel(ctx)
		cancel()
		_, err := readRange(cancelled, b, 0, 10)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("ReadRange with a cancelled context: %v, want %v", err, context.Canceled)
		}
		if strings.Contains(err.Error(), "secret-signature") {
			t.Errorf("a cancelled read shows the signed URL: %v", err)
		}
	})
}
