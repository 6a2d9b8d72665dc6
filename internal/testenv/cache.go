package testenv

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// CachedSet makes sure cacheDir/set-KEY holds a complete set of built
// files and returns its path. load reads a set from a directory and fails
// when it is missing or incomplete; build writes one into an empty
// directory. A set is built in a temporary directory and renamed into
// place, so a set that is present is complete; when several processes
// build at once (the test packages of one "go test ./..."), the first to
// rename wins and the others use its set.
func CachedSet(cacheDir, key string, load func(dir string) error, build func(dir string) error) (string, error) {
	dir := filepath.Join(cacheDir, "set-"+key)
	if load(dir) == nil {
		return dir, nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", fmt.Errorf("creating cache dir: %w", err)
	}
	removeStaleBuilds(cacheDir)
	tmp, err := os.MkdirTemp(cacheDir, "build-"+key+"-")
	if err != nil {
		return "", fmt.Errorf("creating build dir: %w", err)
	}
	defer os.RemoveAll(tmp) // a no-op after a successful rename
	if err := build(tmp); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, dir); err != nil {
		// Another process won the race, or a broken set is in the way.
		if load(dir) == nil {
			return dir, nil
		}
		if rerr := os.RemoveAll(dir); rerr != nil {
			return "", fmt.Errorf("replacing broken set: %w", rerr)
		}
		if err := os.Rename(tmp, dir); err != nil {
			return "", fmt.Errorf("installing set: %w", err)
		}
	}
	return dir, load(dir)
}

// removeStaleBuilds removes build directories left by killed builds.
func removeStaleBuilds(cacheDir string) {
	ents, _ := os.ReadDir(cacheDir)
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "build-") {
			continue
		}
		if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > time.Hour {
			os.RemoveAll(filepath.Join(cacheDir, e.Name()))
		}
	}
}

// GoRoot returns the GOROOT of the go command, else of this binary: the
// real files fixtures and benchmark layers are built from.
func GoRoot() (string, error) {
	if goCmd, err := goTool(); err == nil {
		out, err := exec.Command(goCmd, "env", "GOROOT").Output()
		if root := strings.TrimSpace(string(out)); err == nil && root != "" {
			return root, nil
		}
	}
	if root := runtime.GOROOT(); root != "" { //nolint:staticcheck // only a fallback
		return root, nil
	}
	return "", errors.New("finding GOROOT: no go command and no GOROOT")
}
