package imagefs_test

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"log"

	"github.com/stargz-get/stargz-get/pkg/imagefs"
)

// Example reads a file and part of another from an image's flattened
// filesystem, downloading only the chunks that hold them.
func Example() {
	ctx := context.Background()
	fsys, err := imagefs.Open(ctx, "ghcr.io/stargz-containers/python:3.9-esgz", imagefs.WithPlatform("linux/amd64"))
	if err != nil {
		log.Fatal(err)
	}
	defer fsys.Close()

	osRelease, err := fs.ReadFile(fsys, "etc/os-release")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s", osRelease)

	f, err := fsys.Open("usr/local/bin/python3.9")
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	header := make([]byte, 4)
	if _, err := f.(io.ReaderAt).ReadAt(header, 0); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%q\n", header) // "\x7fELF"

	// The standard library modules, listed from the TOCs alone.
	matches, err := fs.Glob(fsys, "usr/local/lib/python3.9/*.py")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(matches), "modules")
}
