// Command demo shows the stargz-get pipeline end to end on a fresh machine:
// it starts the CNCF distribution registry on a loopback port, builds and
// pushes sample eStargz images made from the Go toolchain's own files, and
// runs sg-layers, sg-ls and sg-fetch against them in a shell, printing
// each command and its output.
//
//	go run ./internal/demo           # run the demo and clean up
//	go run ./internal/demo -keep     # leave the registry up to explore
package main

import (
	"context"
	"flag"
	"fmt"
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

	say("building sample eStargz images from real files under GOROOT (cached after the first run)")
	fx, err := testenv.BuildFixtures(filepath.Join(os.TempDir(), "stargz-get-fixtures"))
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
	image := fx.GoTree.Ref(reg.Host)
	out := filepath.Join(work, "out")

	steps := []string{
		`sg-layers $IMAGE`,
		`sg-ls $IMAGE 0 | head -n 3`,
		`sg-ls $IMAGE 0 | jq -r 'select(.type == "reg") | .size' | awk '{n++; s+=$1} END {print n " files, " s " bytes in the layer"}'`,
		`sg-layers $IMAGE | sg-ls | grep '"name":"usr/local/go/src/net/http/[a-z]*\.go"' | sg-fetch -o $OUT | tail -n 2`,
		`sg-fetch -o $OUT $IMAGE 0 usr/local/go/pkg/tool/compile | jq -c '{name, size, status, verified, compressedBytes, requests}'`,
		`find $OUT -type f | wc -l; du -sh $OUT`,
		`sg-ls $IMAGE 0 | grep -c . ; sg-layers $IMAGE | jq -r '"layer of \(.size) compressed bytes, format \(.format)"'`,
		`sg-layers ` + fx.Gzip.Ref(reg.Host) + ` | sg-ls; echo "exit status $?"`,
		// A three-layer image whose upper layers delete and replace files:
		// its flattened view, and its root filesystem fetched lazily.
		`sg-layers $LAYERED | jq -c '{index, size, format}'`,
		`sg-ls --flatten $LAYERED | jq -r 'select(.name | startswith("etc/") or startswith("opaque/")) | "\(.name)  from layer \(.layer[7:19])"'`,
		`sg-fetch -o $ROOTFS $LAYERED / | jq -s '{entries: length, fetched: map(select(.status == "fetched")) | length, compressedBytes: map(.compressedBytes // 0) | add}'; cat $ROOTFS/etc/remove-me`,
	}
	if _, err := exec.LookPath("jq"); err != nil {
		say("jq is not installed: skipping the steps that use it (apt-get install jq)")
		var kept []string
		for _, s := range steps {
			if !strings.Contains(s, "jq") {
				kept = append(kept, s)
			}
		}
		steps = kept
	}
	layered := fx.Layered.Ref(reg.Host)
	rootfs := filepath.Join(work, "rootfs")
	env := append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"),
		"IMAGE="+image, "OUT="+out, "LAYERED="+layered, "ROOTFS="+rootfs)
	fmt.Printf("\nIMAGE=%s\nOUT=%s\nLAYERED=%s\nROOTFS=%s\n", image, out, layered, rootfs)
	for _, s := range steps {
		fmt.Printf("\n$ %s\n", s)
		cmd := exec.CommandContext(ctx, "bash", "-o", "pipefail", "-c", s)
		cmd.Env = env
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
		_ = cmd.Run() // the last step fails on purpose; its output says why
	}
	if *keep {
		fmt.Printf("\nThe registry stays up until Ctrl-C. In another shell:\n  export PATH=%s:$PATH IMAGE=%s\n", bin, image)
		<-ctx.Done()
	}
	return nil
}

func say(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "demo: "+format+"\n", args...)
}
