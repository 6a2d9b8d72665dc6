// Command demo shows the stargz-get pipeline end to end on a fresh machine:
// it starts the CNCF distribution registry on a loopback port, builds and
// pushes sample images made from the Go toolchain's own files (eStargz,
// zstd:chunked, plain gzip, two versions of one image, and an OCI artifact
// pushed as `oras push` does), and runs sg-layers, sg-ls and sg-fetch
// against them in a shell, printing each command and its output.
//
// Every step runs with SG_CACHE_DIR inside the demo's temp directory, so
// the seek index the plain gzip steps build does not touch the user's
// cache.
//
//	go run ./internal/demo           # run the demo and clean up
//	go run ./internal/demo -keep     # leave the registry up to explore
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/stargz-get/stargz-get/internal/testenv"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "demo: error: %v\n", err)
		os.Exit(1)
	}
}

// step is one shell command of the demo; note, when set, is printed
// before it as a comment saying what the next steps show. With count set,
// the demo prints after it how many blob bytes the registry sent for it,
// as the counting proxy in front of the registry saw them.
type step struct {
	note  string
	cmd   string
	count bool
}

// steps are the demo's commands, in order. They use the variables run
// exports (IMAGE, ZSTD, PLAIN, ...). The plain gzip steps must keep their
// order: the error and the early stop come before sg-ls builds the layer's
// seek index, the lazy reads after.
var steps = []step{
	{"eStargz: one layer of 16 MB, listed from its TOC, files fetched by their chunks", `sg-layers $IMAGE`, false},
	{"", `sg-ls $IMAGE 0 | head -n 3`, false},
	{"", `sg-ls $IMAGE 0 | jq -r 'select(.type == "reg") | .size' | awk '{n++; s+=$1} END {print n " files, " s " bytes in the layer"}'`, false},
	{"", `sg-layers $IMAGE | sg-ls | grep '"name":"usr/local/go/src/net/http/[a-z]*\.go"' | sg-fetch -o $OUT | tail -n 2`, false},
	{"", `sg-fetch -o $OUT $IMAGE 0 usr/local/go/pkg/tool/compile | jq -c '{name, size, status, verified, compressedBytes, requests}'`, true},
	{"", `find $OUT -type f | wc -l; du -sh $OUT`, false},

	{"one file to stdout, checked chunk by chunk against the TOC (its fetch result goes to stderr, dropped here); the TOC's digest of it",
		`sg-fetch -o - $IMAGE usr/local/go/pkg/tool/compile 2>/dev/null | sha256sum; sg-ls $IMAGE 0 | jq -r 'select(.name == "usr/local/go/pkg/tool/compile") | .digest'`, false},
	{"a directory as one tar stream",
		`sg-fetch --tar -o - $IMAGE usr/local/go/src/net/http | tar -t | head -n 5`, false},

	{"a three-layer image whose upper layers delete and replace files: its flattened view, and its root filesystem fetched lazily",
		`sg-layers $LAYERED | jq -c '{index, size, format}'`, false},
	{"", `sg-ls --flatten $LAYERED | jq -r 'select(.name | startswith("etc/") or startswith("opaque/")) | "\(.name)  from layer \(.layer[7:19])"'`, false},
	{"", `sg-fetch -o $ROOTFS $LAYERED / | jq -s '{entries: length, fetched: map(select(.status == "fetched")) | length, compressedBytes: map(.compressedBytes // 0) | add}'; cat $ROOTFS/etc/remove-me`, false},

	{"two versions of one image compared from their TOCs alone: what changed from A to B",
		`sg-ls --diff $DIFFA $DIFFB | jq -c '{name, change, type, size, before: .before.size}' | head`, false},

	{"zstd:chunked (as podman pushes it): one file of several chunks, only its zstd frames",
		`sg-layers $ZSTD | jq -c '{index, size, mediaType, format}'`, false},
	{"", `sg-fetch -o $OUT $ZSTD usr/local/go/pkg/tool/asm | jq -c '{name, size, status, verified, compressedBytes, requests}'`, true},

	{"a plain gzip layer (no TOC, as most images are): without --allow-full-layers it is an error, on purpose, with a hint",
		`sg-ls $PLAIN 0; echo "exit status $?"`, false},
	{"with it, sg-fetch streams the layer from its start and stops after the file: what moves is the layer up to the file plus the read-ahead segments in flight (up to 8 of 2 MiB). The digest of a layer not read to its end cannot be checked: a warning says so",
		`sg-fetch --allow-full-layers -o $OUT $PLAIN usr/local/go/src/bufio/scan.go | jq -c 'del(.ref, .layer, .path, .digest)'`, true},
	{"sg-ls --allow-full-layers reads the whole layer once and keeps a seek index of it in the cache ($SG_CACHE_DIR)",
		`sg-ls --allow-full-layers $PLAIN 0 | grep -c .; du -sh $SG_CACHE_DIR`, true},
	{"from then on the layer is indexed: sg-ls reads no blob bytes, and sg-fetch reads a file from the nearest checkpoint, without --allow-full-layers",
		`sg-ls $PLAIN 0 | jq -c 'select(.name == "usr/local/go/src/net/net.go") | {name, size, layerSize, indexed}'`, true},
	{"", `sg-ls $PLAIN 0 | grep '"name":"usr/local/go/src/net/net.go"' | sg-fetch -o $OUT | jq -c '{name, size, status, verified, compressedBytes, requests}'`, true},

	{"an OCI artifact pushed as oras push does: its layers are files named by their titles",
		`sg-layers $ARTIFACT | jq -c '{index, title, mediaType, size, format}'`, false},
	{"", `sg-layers $ARTIFACT | jq -c 'select(.title | test("^docs/"))' | sg-fetch -o $ARTDIR | jq -c '{title, path, status, verified}'`, false},
	{"", `sg-fetch -o $ARTDIR $ARTIFACT 'bin/*' '*.txt' | jq -c '{title, status, verified}'; ls -l $ARTDIR/bin | tail -n +2; find $ARTDIR -type f | sort`, false},
}

func run() error {
	keep := flag.Bool("keep", false, "keep the registry running after the demo until Ctrl-C")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	work, err := os.MkdirTemp("", "stargz-get-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	say("building the tools")
	bin := filepath.Join(work, "bin")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin+string(filepath.Separator), "./cmd/...")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("building the tools (run the demo from the repository root): %w", err)
	}

	say("building sample images from real files under GOROOT (cached after the first run)")
	cacheDir := filepath.Join(os.TempDir(), "stargz-get-fixtures")
	fx, err := testenv.BuildFixtures(cacheDir)
	if err != nil {
		return err
	}
	diff, err := testenv.BuildDiffPair(cacheDir)
	if err != nil {
		return err
	}
	art, err := smallArtifact(filepath.Join(work, "artifact-files"), fx.GoRoot)
	if err != nil {
		return err
	}
	say("starting the distribution registry %s on loopback (built once from the Go module proxy)", testenv.RegistryVersion)
	reg, err := testenv.StartRegistry(testenv.RegistryOptions{})
	if err != nil {
		return err
	}
	defer reg.Close()
	if _, err := fx.Push(ctx, reg.Host, "", ""); err != nil {
		return err
	}
	for _, img := range []*testenv.Image{diff.A, diff.B} {
		if err := testenv.PushImage(ctx, reg.Host, img); err != nil {
			return err
		}
	}
	if err := art.Push(ctx, reg.Host); err != nil {
		return fmt.Errorf("pushing the sample artifact: %w", err)
	}
	// The tools talk to the registry through a proxy that only counts the
	// blob bytes it passes on (no faults are set).
	proxy, err := testenv.StartFaultProxy(reg.Host)
	if err != nil {
		return err
	}
	defer proxy.Close()
	host := proxy.Host

	run := steps
	if _, err := exec.LookPath("jq"); err != nil {
		say("jq is not installed: skipping the steps that use it (apt-get install jq)")
		run = nil
		for _, s := range steps {
			if !strings.Contains(s.cmd, "jq") {
				run = append(run, s)
			}
		}
	}
	vars := [][2]string{
		{"IMAGE", fx.GoTree.Ref(host)},
		{"LAYERED", fx.Layered.Ref(host)},
		{"DIFFA", diff.A.Ref(host)},
		{"DIFFB", diff.B.Ref(host)},
		{"ZSTD", fx.ZstdChunked.Ref(host)},
		{"PLAIN", fx.PlainBig.Ref(host)},
		{"ARTIFACT", art.Ref(host)},
		{"OUT", filepath.Join(work, "out")},
		{"ROOTFS", filepath.Join(work, "rootfs")},
		{"ARTDIR", filepath.Join(work, "artifact")},
		{"SG_CACHE_DIR", filepath.Join(work, "cache")},
	}
	env := append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	fmt.Println()
	var exports []string
	for _, v := range vars {
		env = append(env, v[0]+"="+v[1])
		exports = append(exports, v[0]+"="+v[1])
		fmt.Printf("%s=%s\n", v[0], v[1])
	}
	for _, s := range run {
		if s.note != "" {
			fmt.Printf("\n# %s\n", s.note)
		}
		fmt.Printf("\n$ %s\n", s.cmd)
		cmd := exec.CommandContext(ctx, "bash", "-o", "pipefail", "-c", s.cmd)
		cmd.Env = env
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
		proxy.BlobBytes(true)
		_ = cmd.Run() // the plain gzip error step fails on purpose; its output says why
		if s.count {
			fmt.Printf("[blob bytes the registry sent for this step: %s]\n", mb(proxy.BlobBytes(false)))
		}
	}
	if *keep {
		fmt.Printf("\nThe registry stays up until Ctrl-C. In another shell:\n  export PATH=%s:$PATH %s\n", bin, strings.Join(exports, " "))
		<-ctx.Done()
	}
	return nil
}

// smallArtifact writes a few files from goroot into dir and returns them
// as an artifact to push the way `oras push` does (testenv's artifact
// fixtures include a 64 MiB blob, too slow for a first run of the demo):
// GOROOT's LICENSE as notes.txt, two Go sources under docs/, and gofmt as
// bin/gofmt when GOROOT has it.
func smallArtifact(dir, goroot string) (*testenv.Artifact, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	a := &testenv.Artifact{Name: "demo/tools", Tag: "v1", ArtifactType: "application/vnd.stargz-get.demo.tools"}
	files := []struct{ title, mediaType, src string }{
		{"notes.txt", "text/plain", "LICENSE"},
		{"docs/fmt.go", "application/vnd.oci.image.layer.v1.tar", "src/fmt/doc.go"},
		{"docs/errors.go", "application/vnd.oci.image.layer.v1.tar", "src/errors/errors.go"},
		{"bin/gofmt", "application/vnd.oci.image.layer.v1.tar", "bin/gofmt"},
	}
	for i, f := range files {
		src := filepath.Join(goroot, filepath.FromSlash(f.src))
		if f.title == "bin/gofmt" {
			if _, err := os.Stat(src); err != nil {
				continue // a GOROOT without gofmt: the artifact has no binary
			}
		}
		dst := filepath.Join(dir, fmt.Sprintf("file-%d", i))
		sum, size, err := copyHashed(dst, src)
		if err != nil {
			return nil, fmt.Errorf("preparing artifact file %q: %w", f.title, err)
		}
		a.Files = append(a.Files, testenv.ArtifactFile{Title: f.title, MediaType: f.mediaType, Digest: sum, Size: size, Path: dst})
	}
	return a, nil
}

// copyHashed copies src to dst and returns the sha256 digest and size of
// what it copied.
func copyHashed(dst, src string) (string, int64, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", 0, err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return "", 0, err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(out, h), in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", 0, fmt.Errorf("copying %s: %w", src, err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), n, nil
}

// mb formats n bytes for people: "587708 (0.6 MB)".
func mb(n int64) string {
	return fmt.Sprintf("%d (%.1f MB)", n, float64(n)/1e6)
}

func say(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "demo: "+format+"\n", args...)
}
