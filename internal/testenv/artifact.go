package testenv

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/registry/remote"
)

// ArtifactFile is one file of an artifact fixture: a layer titled Title.
type ArtifactFile struct {
	Title     string
	MediaType string
	Digest    string
	Size      int64
	// Path is where its bytes are on disk.
	Path string
}

// Artifact is an OCI artifact as `oras push` makes it: an image manifest
// with an artifactType, the empty config, and one layer per file with its
// org.opencontainers.image.title annotation.
type Artifact struct {
	Name         string // repository
	Tag          string
	ArtifactType string
	Files        []ArtifactFile
	// ImageSpec10 packs an image-spec v1.0 manifest, as `oras push
	// --image-spec v1.0` does: no artifactType field, and a config of
	// media type ArtifactType instead of the empty config.
	ImageSpec10 bool
	// Digest is the manifest's digest, set by Push.
	Digest string
}

// Ref returns the artifact's reference on the registry at host.
func (a *Artifact) Ref(host string) string { return host + "/" + a.Name + ":" + a.Tag }

// File returns the file titled title.
func (a *Artifact) File(title string) *ArtifactFile {
	for i := range a.Files {
		if a.Files[i].Title == title {
			return &a.Files[i]
		}
	}
	return nil
}

// Artifacts are the artifact fixtures.
type Artifacts struct {
	// Files holds BigTitle (a blob of BigSize incompressible but
	// deterministic bytes), an ELF binary of the Go toolchain, a text file,
	// a tar.gz of Go sources, and two docs/ titles.
	Files *Artifact
	// Hostile has titles that try to escape the output directory or are
	// otherwise unusable, and duplicate titles.
	Hostile *Artifact
	// GoRoot is the GOROOT the real files come from.
	GoRoot string
}

// Artifact fixture constants.
const (
	BigTitle    = "big.bin"
	ToolTitle   = "bin/tool"
	NotesTitle  = "notes.txt"
	BundleTitle = "bundle.tar.gz"
	// BigSize is over 64 MiB and not a multiple of any segment size.
	BigSize            = 64<<20 + 12345
	TestArtifactType   = "application/vnd.stargz-get.test.bundle"
	orasDefaultFileMT  = "application/vnd.oci.image.layer.v1.tar"
	artifactsVersion   = "1"
	artifactsJSON      = "artifacts.json"
	hostileLongNameLen = 256
)

// BuildArtifacts builds (once per cache) the artifact fixtures' files.
func BuildArtifacts(cacheDir string) (*Artifacts, error) {
	goroot, err := GoRoot()
	if err != nil {
		return nil, err
	}
	h := sha256.Sum256([]byte(artifactsVersion + "\n" + runtime.Version() + "\n" + goroot))
	key := "artifacts-" + hex.EncodeToString(h[:6])
	var a *Artifacts
	load := func(dir string) error {
		raw, err := os.ReadFile(filepath.Join(dir, artifactsJSON))
		if err != nil {
			return err
		}
		a = &Artifacts{}
		if err := json.Unmarshal(raw, a); err != nil {
			return err
		}
		for _, art := range []*Artifact{a.Files, a.Hostile} {
			for i := range art.Files {
				art.Files[i].Path = filepath.Join(dir, filepath.Base(art.Files[i].Path))
				if fi, err := os.Stat(art.Files[i].Path); err != nil || fi.Size() != art.Files[i].Size {
					return fmt.Errorf("artifact file %s missing or truncated", art.Files[i].Path)
				}
			}
		}
		return nil
	}
	_, err = CachedSet(cacheDir, key, load, func(dir string) error { return buildArtifacts(dir, goroot) })
	return a, err
}

func buildArtifacts(dir, goroot string) error {
	n := 0
	add := func(art *Artifact, title, mt string, write func(w io.Writer) error) error {
		n++
		p := filepath.Join(dir, fmt.Sprintf("blob-%d", n))
		f, err := os.Create(p)
		if err != nil {
			return err
		}
		h := sha256.New()
		cw := &countWriter{w: io.MultiWriter(f, h)}
		if err := write(cw); err != nil {
			f.Close()
			return fmt.Errorf("writing artifact file %q: %w", title, err)
		}
		if err := f.Close(); err != nil {
			return err
		}
		art.Files = append(art.Files, ArtifactFile{Title: title, MediaType: mt, Digest: "sha256:" + hex.EncodeToString(h.Sum(nil)), Size: cw.n, Path: p})
		return nil
	}
	copyFile := func(src string) func(io.Writer) error {
		return func(w io.Writer) error {
			f, err := os.Open(src)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = io.Copy(w, f)
			return err
		}
	}
	tool, err := elfTool(goroot)
	if err != nil {
		return err
	}
	a := &Artifacts{GoRoot: goroot}
	files := &Artifact{Name: "artifacts/files", Tag: "v1", ArtifactType: TestArtifactType}
	a.Files = files
	steps := []error{
		add(files, BigTitle, orasDefaultFileMT, func(w io.Writer) error {
			// ChaCha8 output: incompressible, and the same every build.
			rng := rand.NewChaCha8([32]byte{'s', 'g'})
			_, err := io.CopyN(w, rng, BigSize)
			return err
		}),
		add(files, ToolTitle, orasDefaultFileMT, copyFile(tool)),
		add(files, NotesTitle, "text/plain", copyFile(filepath.Join(goroot, "LICENSE"))),
		add(files, BundleTitle, orasDefaultFileMT, func(w io.Writer) error { return tarGz(w, goroot, "src/fmt") }),
		add(files, "docs/fmt.go", orasDefaultFileMT, copyFile(filepath.Join(goroot, "src/fmt/doc.go"))),
		add(files, "docs/errors.go", orasDefaultFileMT, copyFile(filepath.Join(goroot, "src/errors/errors.go"))),
	}
	hostile := &Artifact{Name: "artifacts/hostile", Tag: "v1", ArtifactType: TestArtifactType}
	a.Hostile = hostile
	text := func(s string) func(io.Writer) error {
		return func(w io.Writer) error { _, err := io.WriteString(w, s); return err }
	}
	for _, t := range []struct{ title, body string }{
		{"ok.txt", "fine\n"},
		{"../x", "dot-dot\n"},
		{"/etc/passwd", "absolute\n"},
		{"a/../../b", "climb\n"},
		{"", "empty title\n"},
		{"nul\x00name", "nul\n"},
		{strings.Repeat("n", hostileLongNameLen), "long\n"},
		{"dup.txt", "first\n"},
		{"dup.txt", "second\n"},
		{"same.txt", "same\n"},
		{"same.txt", "same\n"},
	} {
		steps = append(steps, add(hostile, t.title, "text/plain", text(t.body)))
	}
	for _, err := range steps {
		if err != nil {
			return err
		}
	}
	raw, err := json.Marshal(a)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, artifactsJSON), raw, 0o644)
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// elfTool returns a real ELF binary of the Go toolchain.
func elfTool(goroot string) (string, error) {
	dirs, _ := filepath.Glob(filepath.Join(goroot, "pkg", "tool", "*"))
	sort.Strings(dirs)
	for _, d := range dirs {
		for _, name := range []string{"vet", "asm", "link", "compile"} {
			p := filepath.Join(d, name)
			f, err := os.Open(p)
			if err != nil {
				continue
			}
			magic := make([]byte, 4)
			_, err = io.ReadFull(f, magic)
			f.Close()
			if err == nil && bytes.Equal(magic, []byte("\x7fELF")) {
				return p, nil
			}
		}
	}
	return "", fmt.Errorf("no ELF binary under %s/pkg/tool", goroot)
}

// tarGz writes a tar.gz of the tree goroot/rel, with names under
// path.Base(rel), as `tar czf` would.
func tarGz(w io.Writer, goroot, rel string) error {
	zw := gzip.NewWriter(w)
	tw := tar.NewWriter(zw)
	base := filepath.Join(goroot, filepath.FromSlash(rel))
	err := filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		r, _ := filepath.Rel(filepath.Dir(base), p)
		hdr, err := tar.FileInfoHeader(fi, "")
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(r)
		if d.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uname, hdr.Gname, hdr.Uid, hdr.Gid = "", "", 0, 0
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return zw.Close()
}

// Push pushes the artifact to the registry at host (plain HTTP, anonymous)
// as `oras push` does: each file as a blob, then a v1.1 manifest packed by
// oras.PackManifest with the artifact type and the empty config (v1.0
// with a config typed ArtifactType when ImageSpec10), tagged.
func (a *Artifact) Push(ctx context.Context, host string) error {
	repo, err := remote.NewRepository(host + "/" + a.Name)
	if err != nil {
		return err
	}
	repo.PlainHTTP = true
	var layers []ocispec.Descriptor
	for _, f := range a.Files {
		desc := ocispec.Descriptor{
			MediaType:   f.MediaType,
			Digest:      digest.Digest(f.Digest),
			Size:        f.Size,
			Annotations: map[string]string{ocispec.AnnotationTitle: f.Title},
		}
		if exists, err := repo.Exists(ctx, desc); err != nil {
			return fmt.Errorf("pushing %s: %w", f.Title, err)
		} else if !exists {
			r, err := os.Open(f.Path)
			if err != nil {
				return err
			}
			err = repo.Push(ctx, desc, r)
			r.Close()
			if err != nil {
				return fmt.Errorf("pushing %q: %w", f.Title, err)
			}
		}
		layers = append(layers, desc)
	}
	version := oras.PackManifestVersion1_1
	if a.ImageSpec10 {
		version = oras.PackManifestVersion1_0
	}
	desc, err := oras.PackManifest(ctx, repo, version, a.ArtifactType, oras.PackManifestOptions{
		Layers:              layers,
		ManifestAnnotations: map[string]string{ocispec.AnnotationCreated: "2026-01-01T00:00:00Z"},
	})
	if err != nil {
		return fmt.Errorf("packing manifest of %s: %w", a.Name, err)
	}
	if err := repo.Tag(ctx, desc, a.Tag); err != nil {
		return fmt.Errorf("tagging %s: %w", a.Name, err)
	}
	a.Digest = desc.Digest.String()
	return nil
}
