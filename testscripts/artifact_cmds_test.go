package testscripts

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
)

// sentbytes PROXY SIZE FACTOR: the proxy named PROXY (e.g. SLOWART) has
// sent at least SIZE and at most FACTOR times SIZE body bytes so far.
func (w *world) sentbytes(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 3 || neg {
		ts.Fatalf("usage: sentbytes PROXY SIZE FACTOR")
	}
	p := w.artRegs.Proxies[args[0]]
	if p == nil {
		ts.Fatalf("no proxy %s", args[0])
	}
	size, err1 := strconv.ParseInt(args[1], 10, 64)
	factor, err2 := strconv.ParseFloat(args[2], 64)
	if err1 != nil || err2 != nil {
		ts.Fatalf("usage: sentbytes PROXY SIZE FACTOR")
	}
	got := p.BodyBytes()
	ts.Logf("%s sent %d body bytes for a %d-byte blob (%.3fx)", args[0], got, size, float64(got)/float64(size))
	if got < size || float64(got) > factor*float64(size) {
		ts.Fatalf("%s sent %d bytes, want between %d and %.0f", args[0], got, size, factor*float64(size))
	}
}

// waitstate DIR BYTES: wait (up to a minute) until a download state file
// in DIR records at least BYTES downloaded bytes.
func waitstate(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 || neg {
		ts.Fatalf("usage: waitstate DIR BYTES")
	}
	want, err := strconv.ParseInt(args[1], 10, 64)
	if err != nil {
		ts.Fatalf("usage: waitstate DIR BYTES")
	}
	dir := ts.MkAbs(args[0])
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		states, _ := filepath.Glob(filepath.Join(dir, ".sg-*.state"))
		for _, p := range states {
			var st struct{ Done []int64 }
			raw, _ := os.ReadFile(p)
			if json.Unmarshal(raw, &st) == nil {
				var n int64
				for _, d := range st.Done {
					n += d
				}
				if n >= want {
					ts.Logf("%s records %d bytes", filepath.Base(p), n)
					return
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	ts.Fatalf("no state file in %s recorded %d bytes within a minute", dir, want)
}

// sha FILE DIGEST: FILE's sha256 is DIGEST ("sha256:<hex>"). FILE may be
// a glob matching exactly one file.
func sha(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: sha FILE DIGEST")
	}
	matches, _ := filepath.Glob(ts.MkAbs(args[0]))
	if len(matches) != 1 {
		ts.Fatalf("%s matches %d files, want 1", args[0], len(matches))
	}
	f, err := os.Open(matches[0])
	if err != nil {
		ts.Fatalf("%v", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		ts.Fatalf("%v", err)
	}
	got := "sha256:" + hex.EncodeToString(h.Sum(nil))
	if (got == args[1]) == neg {
		ts.Fatalf("%s has digest %s, want %s%s", args[0], got, map[bool]string{true: "not "}[neg], args[1])
	}
}

// perm FILE MODE: FILE's permission bits are MODE (octal).
func perm(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 || neg {
		ts.Fatalf("usage: perm FILE MODE")
	}
	fi, err := os.Stat(ts.MkAbs(args[0]))
	if err != nil {
		ts.Fatalf("%v", err)
	}
	if got := fmt.Sprintf("%04o", fi.Mode().Perm()); got != args[1] {
		ts.Fatalf("%s has mode %s, want %s", args[0], got, args[1])
	}
}

// checkgosrc DIR REL: DIR holds the files of GOROOT/REL with the same
// contents, and nothing else.
func (w *world) checkgosrc(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 || neg {
		ts.Fatalf("usage: checkgosrc DIR REL")
	}
	want := filepath.Join(w.arts.GoRoot, filepath.FromSlash(args[1]))
	got := ts.MkAbs(args[0])
	var bad []string
	n := 0
	_ = filepath.WalkDir(want, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(want, p)
		a, _ := os.ReadFile(p)
		b, err := os.ReadFile(filepath.Join(got, rel))
		if err != nil || !bytes.Equal(a, b) {
			bad = append(bad, rel)
		}
		n++
		return nil
	})
	m := 0
	_ = filepath.WalkDir(got, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			m++
		}
		return nil
	})
	if len(bad) > 0 || n != m || n == 0 {
		ts.Fatalf("%s differs from GOROOT/%s: %d files there, %d here; differing: %s", args[0], args[1], n, m, strings.Join(bad[:min(len(bad), 10)], ", "))
	}
}
