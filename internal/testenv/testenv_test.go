package testenv

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"
)

// TestFixturesInRegistry builds the fixtures, checks their ground truth
// against the blobs, pushes them to a real registry with and without
// Basic auth and reads them back.
func TestFixturesInRegistry(t *testing.T) {
	if _, err := RegistryBinary(); err != nil {
		t.Fatal(err)
	}
	cache := t.TempDir()
	start := time.Now()
	fx, err := BuildFixtures(cache)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, l := range fx.Layers() {
		total += l.Size
	}
	t.Logf("built fixtures in %v: %d layers, %d blob bytes", time.Since(start), len(fx.Layers()), total)

	t.Run("cache", func(t *testing.T) {
		again, err := BuildFixtures(cache)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(fx, again); diff != "" {
			t.Errorf("reused fixtures differ (-built +reused):\n%s", diff)
		}
	})

	t.Run("groundtruth", func(t *testing.T) { checkGroundTruth(t, fx) })

	anon, err := StartRegistry(RegistryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeRegistry(t, anon) })
	users := map[string]string{"alice": "s3cret"}
	private, err := StartRegistry(RegistryOptions{Users: users})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeRegistry(t, private) })

	ctx := context.Background()
	for _, tc := range []struct {
		name       string
		reg        *Registry
		user, pass string
	}{
		{"anonymous", anon, "", ""},
		{"htpasswd", private, "alice", "s3cret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			refs, err := fx.Push(ctx, tc.reg.Host, tc.user, tc.pass)
			if err != nil {
				t.Fatalf("%v\nregistry log:\n%s", err, tc.reg.Log())
			}
			wantRefs := map[string]string{
				"fixtures/zstdchunked":      tc.reg.Host + "/fixtures/zstdchunked:v1",
				"fixtures/zstdchunked-bare": tc.reg.Host + "/fixtures/zstdchunked-bare:v1",
				"fixtures/zstdestargz":      tc.reg.Host + "/fixtures/zstdestargz:v1",
				"fixtures/plainzstd":        tc.reg.Host + "/fixtures/plainzstd:v1",
				"fixtures/zmixed":           tc.reg.Host + "/fixtures/zmixed:v1",
				"fixtures/gotree":           tc.reg.Host + "/fixtures/gotree:v1",
				"fixtures/minchunk":         tc.reg.Host + "/fixtures/minchunk:v1",
				"fixtures/multi":            tc.reg.Host + "/fixtures/multi:v1",
				"fixtures/plaingzip":        tc.reg.Host + "/fixtures/plaingzip:v1",
				"fixtures/multiarch":        tc.reg.Host + "/fixtures/multiarch:v1",
				"fixtures/hostile":          tc.reg.Host + "/fixtures/hostile:v1",
				"fixtures/unpinned":         tc.reg.Host + "/fixtures/unpinned:v1",
				"fixtures/layered":          tc.reg.Host + "/fixtures/layered:v1",
				"fixtures/mixed":            tc.reg.Host + "/fixtures/mixed:v1",
				"fixtures/plainbig":         tc.reg.Host + "/fixtures/plainbig:v1",
				"fixtures/craneappend":      tc.reg.Host + "/fixtures/craneappend:v1",
				"fixtures/hostilegzip":      tc.reg.Host + "/fixtures/hostilegzip:v1",
			}
			if diff := cmp.Diff(wantRefs, refs); diff != "" {
				t.Errorf("Push refs (-want +got):\n%s", diff)
			}
			auth := authn.Anonymous
			if tc.user != "" {
				auth = &authn.Basic{Username: tc.user, Password: tc.pass}
			}
			opts := []remote.Option{remote.WithContext(ctx), remote.WithAuth(auth)}
			for _, img := range fx.Images() {
				checkImage(t, img, img.Ref(tc.reg.Host), opts)
			}
			checkIndex(t, fx.Index, tc.reg.Host, opts)
			checkRange(t, tc.reg.Host, fx.GoTree, tc.user, tc.pass, http.StatusPartialContent)
		})
	}

	t.Run("unauthorized", func(t *testing.T) {
		resp, err := http.Get("http://" + private.Host + "/v2/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic ") {
			t.Errorf("GET /v2/ without credentials: %s, WWW-Authenticate %q; want 401 with a Basic challenge",
				resp.Status, resp.Header.Get("WWW-Authenticate"))
		}
		for _, auth := range []authn.Authenticator{authn.Anonymous, &authn.Basic{Username: "alice", Password: "wrong"}} {
			ref, err := name.ParseReference(fx.GoTree.Ref(private.Host), name.Insecure)
			if err != nil {
				t.Fatal(err)
			}
			_, err = remote.Image(ref, remote.WithAuth(auth))
			var terr *transport.Error
			if !errors.As(err, &terr) || terr.StatusCode != http.StatusUnauthorized {
				t.Errorf("remote.Image with %T: error %v, want a 401 transport.Error", auth, err)
			}
		}
		checkRange(t, private.Host, fx.GoTree, "", "", http.StatusUnauthorized)
	})

	t.Run("cancelled", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := fx.Push(cctx, anon.Host, "", ""); !errors.Is(err, context.Canceled) {
			t.Errorf("Push with a cancelled context: %v, want context.Canceled", err)
		}
	})

	t.Run("restart", func(t *testing.T) {
		r, err := StartRegistry(RegistryOptions{})
		if err != nil {
			t.Fatal(err)
		}
		closeRegistry(t, r)
		if err := r.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		if _, err := http.Get("http://" + r.Host + "/v2/"); err == nil {
			t.Errorf("registry at %s still answers after Close", r.Host)
		}
	})
}

func closeRegistry(t *testing.T, r *Registry) {
	t.Helper()
	if err := r.Close(); err != nil {
		t.Error(err)
	}
}

// checkGroundTruth unpacks every layer with archive/tar and compares the
// result with the layer's Files through CheckTree, and checks details the
// tests of other packages rely on.
func checkGroundTruth(t *testing.T, fx *Fixtures) {
	for _, img := range append(fx.Images(), fx.Index.Images...) {
		if img == fx.Hostile || img == fx.HostileGzip {
			continue // its names would make this naive untar write outside dir
		}
		for i, l := range img.Layers {
			dir := t.TempDir()
			if err := untarLayer(l, dir); err != nil {
				t.Fatalf("%s layer %d: %v", img.Name, i, err)
			}
			if err := CheckTree(dir, l.Files, nil); err != nil {
				t.Errorf("%s layer %d: %v", img.Name, i, err)
			}
			if diffID, size, err := uncompressedDigest(l); err != nil {
				t.Fatal(err)
			} else if diffID != l.DiffID || size != l.UncompressedSize {
				t.Errorf("%s layer %d: uncompressed %s, %d bytes; recorded %s, %d bytes", img.Name, i, diffID, size, l.DiffID, l.UncompressedSize)
			}
			for _, f := range l.Files {
				if f.Name == "" || strings.HasPrefix(f.Name, "/") || strings.HasPrefix(f.Name, "./") ||
					strings.HasSuffix(f.Name, "/") || strings.Contains(f.Name, "landmark") {
					t.Errorf("%s layer %d: bad ground truth name %q", img.Name, i, f.Name)
				}
			}
		}
	}

	files := fx.GoTree.Files()
	byName := map[string]File{}
	for _, f := range files {
		byName[f.Name] = f
	}
	for _, want := range []File{
		{Name: "usr/local/go/empty", Type: "reg", Mode: 0o644, Digest: "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
		{Name: "usr/local/go/link-to-net", Type: "symlink", Mode: 0o777, LinkName: "src/net"},
		{Name: "usr/local/go/bin/hardlinked", Type: "hardlink", Mode: 0o644, LinkName: "usr/local/go/src/net/net.go"},
		{Name: "usr/local/go/deep/a/b/c/d/e/f/g/h/i/j", Type: "dir", Mode: 0o755},
	} {
		if diff := cmp.Diff(want, byName[want.Name]); diff != "" {
			t.Errorf("GoTree entry (-want +got):\n%s", diff)
		}
	}
	for _, n := range []string{"usr/local/go/bin/hello.sh", "usr/local/go/pkg/tool/compile"} {
		if f := byName[n]; f.Mode != 0o755 || f.Type != "reg" {
			t.Errorf("GoTree %s: %+v, want an executable regular file", n, f)
		}
	}
	if n := len(files); n < 2000 {
		t.Errorf("GoTree has %d entries, want at least 2000", n)
	}
	if f := byName["usr/local/go/pkg/tool/compile"]; f.Size <= 3*estargzChunkSize {
		t.Errorf("compile is %d bytes, want more than 3 chunks", f.Size)
	}
	if _, ok := byName["usr/local/go/misc/name with space ü.txt"]; !ok {
		t.Errorf("GoTree lacks the file with a space in its name")
	}

	// Want and the names filter of CheckTree.
	net := Want(files, "usr/local/go/src/net/")
	if len(net) < 100 || net[0].Name != "usr/local/go/src/net" {
		t.Errorf("Want(src/net): %d entries starting with %+v", len(net), net[0])
	}
	for _, f := range net {
		if f.Name != "usr/local/go/src/net" && !strings.HasPrefix(f.Name, "usr/local/go/src/net/") {
			t.Errorf("Want(src/net) returned %s", f.Name)
		}
	}
	if got := len(Want(files, "")); got != len(files) {
		t.Errorf("Want(\"\") = %d entries, want %d", got, len(files))
	}

	// A tree with mistakes is reported, one line each.
	dir := t.TempDir()
	if err := untarLayer(fx.GoTree.Layers[0], dir); err != nil {
		t.Fatal(err)
	}
	names := []string{"usr/local/go/VERSION", "usr/local/go/bin/hardlinked", "usr/local/go/link-to-net", "usr/local/go/bin/hello.sh", "usr/local/go/empty"}
	if err := CheckTree(dir, files, names); err != nil {
		t.Errorf("CheckTree of a good tree: %v", err)
	}
	p := func(n string) string { return filepath.Join(dir, filepath.FromSlash(n)) }
	mustDo(t, os.WriteFile(p("usr/local/go/VERSION"), []byte("go0.0"), 0o644))
	mustDo(t, os.Remove(p("usr/local/go/link-to-net")))
	mustDo(t, os.Symlink("src/crypto", p("usr/local/go/link-to-net")))
	mustDo(t, os.Chmod(p("usr/local/go/bin/hello.sh"), 0o644))
	mustDo(t, os.Remove(p("usr/local/go/empty")))
	err := CheckTree(dir, files, names)
	if err == nil {
		t.Fatal("CheckTree of a broken tree: no error")
	}
	for _, want := range []string{
		"usr/local/go/VERSION: size",
		`usr/local/go/link-to-net: symlink to "src/crypto", want "src/net"`,
		"usr/local/go/bin/hello.sh: mode 0644, want 0755",
		"usr/local/go/empty: missing",
		"4 of 5 entries differ",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("CheckTree error lacks %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "hardlinked") {
		t.Errorf("CheckTree reports the intact hardlink:\n%v", err)
	}

	// The MinChunk layer really shares gzip members between files.
	l := fx.MinChunk.Layers[0]
	f, err := l.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := estargz.Open(io.NewSectionReader(f, 0, l.Size))
	if err != nil {
		t.Fatal(err)
	}
	inner := 0
	for _, f := range l.Files {
		if e, ok := r.Lookup(f.Name); ok && e.InnerOffset > 0 {
			inner++
		}
	}
	if inner == 0 {
		t.Error("MinChunk: no TOC entry with innerOffset")
	}
}

// decompressLayer returns the tar stream of layer l's blob r: gunzipped,
// or decompressed from zstd (skipping the skippable frames of TOC,
// tar-split and footer) for zstd media types.
func decompressLayer(l *Layer, r io.Reader) (io.Reader, error) {
	if l.MediaType == MediaTypeLayerZstd {
		zr, err := zstd.NewReader(r)
		if err != nil {
			return nil, err
		}
		return zr.IOReadCloser(), nil
	}
	return gzip.NewReader(r)
}

// uncompressedDigest returns "sha256:<hex>" and the size of the gunzipped
// blob.
func uncompressedDigest(l *Layer) (string, int64, error) {
	f, err := l.Open()
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	zr, err := decompressLayer(l, f)
	if err != nil {
		return "", 0, err
	}
	h := sha256.New()
	n, err := io.Copy(h, zr)
	if err != nil {
		return "", 0, err
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), n, nil
}

func mustDo(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// untarLayer unpacks a layer blob into dir with archive/tar, skipping the
// eStargz TOC and landmark entries. Hardlinks become real hard links.
func untarLayer(l *Layer, dir string) error {
	f, err := l.Open()
	if err != nil {
		return err
	}
	defer f.Close()
	zr, err := decompressLayer(l, f)
	if err != nil {
		return err
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		switch h.Name {
		case estargz.TOCTarName, estargz.PrefetchLandmark, estargz.NoPrefetchLandmark:
			continue
		}
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
			err = os.Chmod(p, os.FileMode(h.Mode).Perm())
		case tar.TypeReg:
			var out *os.File
			out, err = os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode).Perm())
			if err == nil {
				_, err = io.Copy(out, tr)
				if cerr := out.Close(); err == nil {
					err = cerr
				}
			}
		case tar.TypeSymlink:
			err = os.Symlink(h.Linkname, p)
		case tar.TypeLink:
			err = os.Link(filepath.Join(dir, filepath.FromSlash(h.Linkname)), p)
		default:
			err = fmt.Errorf("unexpected tar entry type %q", h.Typeflag)
		}
		if err != nil {
			return fmt.Errorf("unpacking %s: %w", h.Name, err)
		}
	}
}

// checkImage reads img back from the registry and compares manifest,
// config and a blob with what was built.
func checkImage(t *testing.T, img *Image, refStr string, opts []remote.Option) {
	t.Helper()
	ref, err := name.ParseReference(refStr, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	ri, err := remote.Image(ref, opts...)
	if err != nil {
		t.Fatalf("%s: %v", refStr, err)
	}
	checkV1Image(t, img, ri)
}

func checkV1Image(t *testing.T, img *Image, ri v1.Image) {
	t.Helper()
	d, err := ri.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if d.String() != img.Digest {
		t.Errorf("%s: manifest digest %s, want %s", img.Name, d, img.Digest)
	}
	m, err := ri.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.MediaType != types.OCIManifestSchema1 || m.Config.MediaType != types.OCIConfigJSON {
		t.Errorf("%s: media types %s / config %s, want OCI", img.Name, m.MediaType, m.Config.MediaType)
	}
	var want []v1.Descriptor
	var diffIDs []v1.Hash
	for _, l := range img.Layers {
		want = append(want, v1.Descriptor{
			MediaType:   types.MediaType(l.MediaType),
			Size:        l.Size,
			Digest:      v1.Hash{Algorithm: "sha256", Hex: strings.TrimPrefix(l.Digest, "sha256:")},
			Annotations: l.Annotations(),
		})
		diffIDs = append(diffIDs, v1.Hash{Algorithm: "sha256", Hex: strings.TrimPrefix(l.DiffID, "sha256:")})
		if l.Format == FormatEStargz && !l.NoAnnotations {
			if l.TOCDigest == "" || l.Annotations()[estargz.StoreUncompressedSizeAnnotation] != strconv.FormatInt(l.UncompressedSize, 10) {
				t.Errorf("%s: eStargz layer %s lacks annotations", img.Name, l.Digest)
			}
		} else if l.Format == FormatZstdChunked && !l.NoAnnotations {
			if l.Annotations()["io.github.containers.zstd-chunked.manifest-checksum"] == "" && l.Annotations()["io.containers.zstd-chunked.manifest-checksum"] == "" {
				t.Errorf("%s: zstd:chunked layer %s lacks its manifest-checksum annotation", img.Name, l.Digest)
			}
		} else if len(l.Annotations()) != 0 {
			t.Errorf("%s: layer without annotations has %v", img.Name, l.Annotations())
		}
	}
	if diff := cmp.Diff(want, m.Layers, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("%s: layer descriptors (-want +got):\n%s", img.Name, diff)
	}
	cfg, err := ri.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.OS + "/" + cfg.Architecture; got != img.Platform {
		t.Errorf("%s: config platform %s, want %s", img.Name, got, img.Platform)
	}
	if diff := cmp.Diff(diffIDs, cfg.RootFS.DiffIDs); diff != "" {
		t.Errorf("%s: diff_ids (-want +got):\n%s", img.Name, diff)
	}
	// The smallest layer's bytes equal the blob on disk (ggcr checks the
	// digest while reading).
	small := img.Layers[0]
	for _, l := range img.Layers {
		if l.Size < small.Size {
			small = l
		}
	}
	h, _ := v1.NewHash(small.Digest)
	rl, err := ri.LayerByDigest(h)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := rl.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatalf("%s: reading blob %s: %v", img.Name, small.Digest, err)
	}
	wantBlob, err := os.ReadFile(small.BlobPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, wantBlob) {
		t.Errorf("%s: blob %s differs from %s", img.Name, small.Digest, small.BlobPath)
	}
}

// checkIndex reads the index back and checks its platform images.
func checkIndex(t *testing.T, ix *Index, host string, opts []remote.Option) {
	t.Helper()
	ref, err := name.ParseReference(ix.Ref(host), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	ri, err := remote.Index(ref, opts...)
	if err != nil {
		t.Fatalf("%s: %v", ref, err)
	}
	if d, _ := ri.Digest(); d.String() != ix.Digest {
		t.Errorf("%s: index digest %s, want %s", ix.Name, d, ix.Digest)
	}
	im, err := ri.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if im.MediaType != types.OCIImageIndex || len(im.Manifests) != len(ix.Images) {
		t.Fatalf("%s: index %s with %d manifests, want OCI with %d", ix.Name, im.MediaType, len(im.Manifests), len(ix.Images))
	}
	for i, img := range ix.Images {
		desc := im.Manifests[i]
		if desc.Platform == nil || desc.Platform.OS+"/"+desc.Platform.Architecture != img.Platform ||
			desc.Digest.String() != img.Digest || desc.MediaType != types.OCIManifestSchema1 {
			t.Errorf("%s: manifest %d: %+v, want %s %s", ix.Name, i, desc, img.Platform, img.Digest)
		}
		child, err := ri.Image(desc.Digest)
		if err != nil {
			t.Fatal(err)
		}
		checkV1Image(t, img, child)
		// The child is also reachable by its own reference.
		checkImage(t, img, img.Ref(host), opts)
		found := false
		for _, f := range img.Files() {
			if f.Name == "platform.txt" {
				found = true
			}
		}
		if !found {
			t.Errorf("%s %s: no platform.txt", ix.Name, img.Platform)
		}
	}
}

// checkRange asks for the first 100 bytes of the image's first layer with
// a Range request and expects wantStatus; for 206, those bytes.
func checkRange(t *testing.T, host string, img *Image, user, pass string, wantStatus int) {
	t.Helper()
	l := img.Layers[0]
	req, err := http.NewRequest(http.MethodGet, "http://"+host+"/v2/"+img.Name+"/blobs/"+l.Digest, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Range", "bytes=0-99")
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != wantStatus {
		t.Fatalf("Range GET %s: %s, want %d", req.URL, resp.Status, wantStatus)
	}
	if wantStatus != http.StatusPartialContent {
		return
	}
	if len(body) != 100 || resp.Header.Get("Content-Range") != fmt.Sprintf("bytes 0-99/%d", l.Size) {
		t.Fatalf("Range GET %s: %d bytes, Content-Range %q; want 100 bytes of %d", req.URL, len(body), resp.Header.Get("Content-Range"), l.Size)
	}
	f, err := l.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := make([]byte, 100)
	if _, err := io.ReadFull(f, want); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(body, want) {
		t.Errorf("Range GET %s: bytes differ from the blob", req.URL)
	}
}

func TestRegistryBinaryEnv(t *testing.T) {
	dir := t.TempDir()
	notExec := filepath.Join(dir, "registry")
	mustDo(t, os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644))
	for _, tc := range []struct {
		path    string
		wantErr bool
	}{
		{notExec, true},
		{filepath.Join(dir, "missing"), true},
		{dir, true},
	} {
		t.Setenv(RegistryBinEnv, tc.path)
		got, err := RegistryBinary()
		if (err != nil) != tc.wantErr {
			t.Errorf("RegistryBinary with %s=%s: %q, %v", RegistryBinEnv, tc.path, got, err)
		}
	}
	mustDo(t, os.Chmod(notExec, 0o755))
	t.Setenv(RegistryBinEnv, notExec)
	if got, err := RegistryBinary(); err != nil || got != notExec {
		t.Errorf("RegistryBinary with an executable: %q, %v; want %q", got, err, notExec)
	}
}
