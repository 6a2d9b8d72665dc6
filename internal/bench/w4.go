package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/stargz-get/stargz-get/pkg/fetch"
	"github.com/stargz-get/stargz-get/pkg/toc"
)

// W4: an image of three layers whose upper layers delete and replace what
// the lower ones have, flattened and fetched whole (issue 6).

// w4Version is the W4 group's cache key; bump it whenever planW4 or the
// ops it uses change what goes into the layers.
const w4Version = "2"

// Whiteout names from the OCI image spec.
const (
	whiteoutPrefix = ".wh."
	opaqueWhiteout = ".wh..wh..opq"
)

// goPrefix is where the W4 image keeps GOROOT.
const goPrefix = "usr/local/go"

// w4Group is the layers of the W4 image, base first.
var w4Group = &group{name: "w4", specs: w4Specs, plan: planW4, version: w4Version}

// w4Specs name and describe the W4 layers; planW4 fills in their ops.
var w4Specs = []layerSpec{
	{name: "w4-base", about: "GOROOT/src and the compile and link binaries, under usr/local/go"},
	{name: "w4-delete", about: "whiteouts of src/cmd and src/debug; src/net opaque with net/netip and net/url put back; link replaced by another binary; every 20th remaining source file replaced (1 in 7 of them with mode 0600); lib added; a symlink"},
	{name: "w4-update", about: "every 20th source file (another set) and every 4th of layer 1's replacements replaced; lib/wasm whited out; src/expvar (a directory) becomes a file and src/all.bash (a file) a directory; the symlink becomes a file; api, bin/gofmt, a hardlink and a symlink added"},
}

// Source subtrees of GOROOT/src that layer 1 deletes (whiteouts), makes
// opaque, and the file and directory whose types layer 2 changes.
var (
	w4Deleted   = []string{"cmd", "debug"}
	w4Opaque    = "net"
	w4PutBack   = []string{"net/netip", "net/url"}
	w4DirToFile = "expvar"
	w4FileToDir = "all.bash"
	w4Every     = 20 // one source file in w4Every is replaced, in each upper layer
)

// planW4 decides the ops of the three W4 layers from the files in GOROOT.
// All content is real: replacements take the contents of GOROOT/test files
// (each with contents found nowhere else in the image, so that no visible
// file shares its contents with another and a lazy fetch has nothing to
// deduplicate that a full pull would not).
func planW4(goroot string) ([]layerSpec, error) {
	toolDir, err := goToolDir(goroot)
	if err != nil {
		return nil, err
	}
	type srcFile struct {
		rel  string // GOROOT-relative, slash-separated
		mode int64
	}
	under := func(rel string, dirs ...string) bool {
		for _, d := range dirs {
			if rel == "src/"+d || strings.HasPrefix(rel, "src/"+d+"/") {
				return true
			}
		}
		return false
	}
	// Contents already in the image, and the source files that stay.
	excluded := append(slices.Clone(w4Deleted), w4Opaque, w4DirToFile, w4FileToDir)
	used := map[string]bool{}
	var cands []srcFile
	for _, top := range []string{"src", "lib", "api", "bin/gofmt", toolDir + "/compile", toolDir + "/link", toolDir + "/cover", "VERSION"} {
		err := walkFiles(goroot, top, func(rel string, fi fs.FileInfo, d string) {
			used[d] = true
			if strings.HasPrefix(rel, "src/") && !under(rel, excluded...) {
				cands = append(cands, srcFile{rel, normMode(fi)})
			}
		})
		if err != nil {
			return nil, err
		}
	}
	// The pool of replacement contents.
	var pool []string
	err = walkFiles(goroot, "test", func(rel string, fi fs.FileInfo, d string) {
		if fi.Size() > 0 && !used[d] {
			used[d] = true
			pool = append(pool, rel)
		}
	})
	if err != nil {
		return nil, err
	}
	next := 0
	take := func() (string, error) {
		if next >= len(pool) {
			return "", fmt.Errorf("GOROOT/test has only %d files with distinct contents, too few for the replacements", len(pool))
		}
		next++
		return pool[next-1], nil
	}
	g := func(rel string) string { return goPrefix + "/" + rel }
	tool := func(name string) string { return g(toolDir + "/" + name) }

	var base, del, upd []op
	base = append(base,
		op{kind: opTree, name: g("src"), src: "src"},
		op{kind: opFile, name: tool("compile"), src: toolDir + "/compile"},
		op{kind: opFile, name: tool("link"), src: toolDir + "/link"},
	)

	for _, d := range w4Deleted {
		del = append(del, op{kind: opWhiteout, name: g("src/" + d)})
	}
	del = append(del, op{kind: opDir, name: g("src/" + w4Opaque)}, op{kind: opOpaque, name: g("src/" + w4Opaque)})
	for _, d := range w4PutBack {
		del = append(del, op{kind: opTree, name: g("src/" + d), src: "src/" + d})
	}
	del = append(del, op{kind: opFile, name: tool("link"), src: toolDir + "/cover"})
	var repl1 []srcFile
	for i, c := range cands {
		if i%w4Every != 0 {
			continue
		}
		src, err := take()
		if err != nil {
			return nil, err
		}
		mode := c.mode
		if len(repl1)%7 == 3 {
			mode = 0o600
		}
		del = append(del, op{kind: opFile, name: g(c.rel), src: src, mode: mode})
		repl1 = append(repl1, c)
	}
	del = append(del,
		op{kind: opTree, name: g("lib"), src: "lib"},
		op{kind: opSymlink, name: g("VERSION"), link: "src/internal/goversion/goversion.go"},
	)

	for i, c := range cands {
		if i%w4Every != w4Every/2 {
			continue
		}
		src, err := take()
		if err != nil {
			return nil, err
		}
		upd = append(upd, op{kind: opFile, name: g(c.rel), src: src, mode: c.mode})
	}
	for j, c := range repl1 {
		if j%4 != 0 {
			continue
		}
		src, err := take()
		if err != nil {
			return nil, err
		}
		upd = append(upd, op{kind: opFile, name: g(c.rel), src: src, mode: c.mode})
	}
	dirToFile, err := take()
	if err != nil {
		return nil, err
	}
	fileToDir, err := take()
	if err != nil {
		return nil, err
	}
	upd = append(upd,
		op{kind: opWhiteout, name: g("lib/wasm")},
		op{kind: opFile, name: g("src/" + w4DirToFile), src: dirToFile},
		op{kind: opDir, name: g("src/" + w4FileToDir)},
		op{kind: opFile, name: g("src/" + w4FileToDir + "/README"), src: fileToDir},
		op{kind: opFile, name: g("VERSION"), src: "VERSION"},
		op{kind: opTree, name: g("api"), src: "api"},
		op{kind: opFile, name: g("bin/gofmt"), src: "bin/gofmt"},
		op{kind: opHardlink, name: "usr/local/bin/gofmt", link: g("bin/gofmt")},
		op{kind: opSymlink, name: g("bin/link"), link: "../" + toolDir + "/link"},
	)
	for _, must := range []string{"src/" + w4FileToDir, "src/" + w4DirToFile, "lib/wasm", "VERSION", "bin/gofmt"} {
		if _, err := os.Stat(filepath.Join(goroot, filepath.FromSlash(must))); err != nil {
			return nil, fmt.Errorf("GOROOT lacks %s, which W4 needs: %w", must, err)
		}
	}
	sps := slices.Clone(w4Specs)
	sps[0].ops, sps[1].ops, sps[2].ops = base, del, upd
	return sps, nil
}

// goToolDir is GOROOT's pkg/tool/GOOS_GOARCH holding compile, link and
// cover: the running toolchain's, or else the first there is.
func goToolDir(goroot string) (string, error) {
	dirs := []string{"pkg/tool/" + runtime.GOOS + "_" + runtime.GOARCH}
	if m, _ := filepath.Glob(filepath.Join(goroot, "pkg", "tool", "*")); len(m) > 0 {
		for _, d := range m {
			dirs = append(dirs, "pkg/tool/"+filepath.Base(d))
		}
	}
	for _, d := range dirs {
		ok := true
		for _, t := range []string{"compile", "link", "cover"} {
			if _, err := os.Stat(filepath.Join(goroot, filepath.FromSlash(d), t)); err != nil {
				ok = false
			}
		}
		if ok {
			return d, nil
		}
	}
	return "", fmt.Errorf("no pkg/tool directory with compile, link and cover under %s", goroot)
}

// walkFiles calls fn, in lexical order, for every regular file at or under
// GOROOT/top with its GOROOT-relative name and the sha256 of its contents.
func walkFiles(goroot, top string, fn func(rel string, fi fs.FileInfo, digest string)) error {
	return filepath.WalkDir(filepath.Join(goroot, filepath.FromSlash(top)), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		dg, err := fileSHA256(p, nil)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(goroot, p)
		if err != nil {
			return err
		}
		fn(filepath.ToSlash(rel), fi, dg)
		return nil
	})
}

func fileSHA256(p string, buf []byte) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if buf == nil {
		buf = make([]byte, 256<<10)
	}
	h := sha256.New()
	if _, err := io.CopyBuffer(h, f, buf); err != nil {
		return "", err
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// visible is an entry of the model's flattened filesystem and the index
// of the layer providing it.
type visible struct {
	layer int
	f     File
}

// flattenModel applies the layers' ground truth in order with the OCI
// rules, written here independently of pkg/flatten: whiteouts (".wh.NAME"
// deletes NAME and all below it, ".wh..wh..opq" everything below its
// directory) apply to lower layers only; an entry replaces the one at its
// path; a non-directory replacing a directory hides all below it; a
// directory replacing a non-directory replaces it.
func flattenModel(layers [][]File) map[string]visible {
	fs := map[string]visible{}
	below := func(dir string) {
		for n := range fs {
			if strings.HasPrefix(n, dir+"/") {
				delete(fs, n)
			}
		}
	}
	for i, files := range layers {
		for _, f := range files {
			dir, base := path.Split(f.Name)
			dir = strings.TrimSuffix(dir, "/")
			switch {
			case base == opaqueWhiteout:
				below(dir)
			case strings.HasPrefix(base, whiteoutPrefix):
				t := path.Join(dir, strings.TrimPrefix(base, whiteoutPrefix))
				delete(fs, t)
				below(t)
			}
		}
		for _, f := range files {
			if strings.HasPrefix(path.Base(f.Name), whiteoutPrefix) {
				continue
			}
			if old, ok := fs[f.Name]; ok && old.f.Type == "dir" && f.Type != "dir" {
				below(f.Name)
			}
			fs[f.Name] = visible{i, f}
		}
	}
	return fs
}

// node is what a tree holds at a path, as compared between trees.
type node struct {
	typ    byte // 'f' regular, 'd' directory, 'l' symlink, '?' other
	perm   fs.FileMode
	size   int64
	digest string // regular files
	link   string // symlinks
}

func (n node) String() string {
	switch n.typ {
	case 'f':
		return fmt.Sprintf("file %v %d bytes %s", n.perm, n.size, n.digest)
	case 'd':
		return fmt.Sprintf("directory %v", n.perm)
	case 'l':
		return fmt.Sprintf("symlink -> %q", n.link)
	}
	return "other"
}

// modelTree is the tree the model's flattened view must unpack to: a
// hardlink is a regular file with its target's contents and mode.
func modelTree(vis map[string]visible) (map[string]node, error) {
	t := make(map[string]node, len(vis))
	for name, v := range vis {
		f := v.f
		switch f.Type {
		case "reg":
			t[name] = node{typ: 'f', perm: fs.FileMode(f.Mode), size: f.Size, digest: f.Digest}
		case "dir":
			t[name] = node{typ: 'd', perm: fs.FileMode(f.Mode)}
		case "symlink":
			t[name] = node{typ: 'l', link: f.Link}
		case "hardlink":
			tv, ok := vis[f.Link]
			if !ok || tv.f.Type != "reg" {
				return nil, fmt.Errorf("hardlink %s: target %s is not a visible regular file", name, f.Link)
			}
			t[name] = node{typ: 'f', perm: fs.FileMode(tv.f.Mode), size: tv.f.Size, digest: tv.f.Digest}
		default:
			return nil, fmt.Errorf("%s: unexpected type %q", name, f.Type)
		}
	}
	return t, nil
}

// readTree reads the tree under dir: every entry's type, permission bits,
// and a regular file's size and sha256 or a symlink's target.
func readTree(dir string) (map[string]node, error) {
	t := map[string]node{}
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		name := filepath.ToSlash(rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		n := node{typ: '?', perm: fi.Mode().Perm()}
		switch {
		case fi.Mode().IsRegular():
			n.typ, n.size = 'f', fi.Size()
			files = append(files, name)
		case fi.IsDir():
			n.typ = 'd'
		case fi.Mode()&fs.ModeSymlink != 0:
			n.typ, n.perm = 'l', 0
			if n.link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		t[name] = n
		return nil
	})
	if err != nil {
		return nil, err
	}
	digests := make([]string, len(files))
	const workers = 4
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 256<<10)
			for i := w; i < len(files); i += workers {
				d, err := fileSHA256(filepath.Join(dir, filepath.FromSlash(files[i])), buf)
				if err != nil {
					errs[w] = err
					return
				}
				digests[i] = d
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	for i, name := range files {
		n := t[name]
		n.digest = digests[i]
		t[name] = n
	}
	return t, nil
}

// diffTrees returns nil when got has exactly want's entries with the same
// type, permission bits, contents and link targets, else an error listing
// the differences (up to 20).
func diffTrees(want, got map[string]node, wantName, gotName string) error {
	var bad []string
	for name, w := range want {
		g, ok := got[name]
		switch {
		case !ok:
			bad = append(bad, fmt.Sprintf("%s: missing from %s (want %s)", name, gotName, w))
		case g != w:
			bad = append(bad, fmt.Sprintf("%s: %s has %s, %s has %s", name, gotName, g, wantName, w))
		}
	}
	for name, g := range got {
		if _, ok := want[name]; !ok {
			bad = append(bad, fmt.Sprintf("%s: in %s (%s), not in %s", name, gotName, g, wantName))
		}
	}
	if len(bad) == 0 {
		return nil
	}
	sort.Strings(bad)
	n := len(bad)
	if n > 20 {
		bad = append(bad[:20], fmt.Sprintf("... and %d more", n-20))
	}
	return fmt.Errorf("%s differs from %s in %d of %d entries:\n  %s", gotName, wantName, n, len(want), strings.Join(bad, "\n  "))
}

// flatInfo is what W4 knows about its image besides the workload.
type flatInfo struct {
	model    map[string]visible
	ref      map[string]node // the reference tree: the baseline's unpack, checked against the model
	full     int64           // all layer blobs: what the full pull downloads
	distinct int64           // like needed, with files of identical contents counted once
	tocs     int64           // footers + TOCs of all layers
	regular  int             // visible regular files (hardlinks not counted)
	regBytes int64           // their uncompressed bytes
	hidden   []int64         // per layer: bytes of its regular files that are not visible
	// What sg-fetch's defaults add to needed: the part of each layer's
	// first tail read (toc.DefaultTailBytes) beyond its footer and TOC,
	// and the unwanted bytes in gaps of up to fetch.DefaultMaxGap between
	// visible members, which its planner merges across (not counting the
	// request size cap, which splits some merges).
	tailExtra, gapExtra int64
	// runs is how many runs of adjacent visible members there are: the
	// fewest range requests that download no hidden bytes.
	runs   int
	lsFlat counts // sg-ls --flatten through the proxy, no RTT
}

// visibleNeeded is what an ideal lazy flatten moves: each layer's footer
// and TOC, plus the compressed spans of the distinct gzip members holding
// the chunks of the visible regular files (in the layer that provides
// each). It also fills in the per-layer hidden bytes and the variant with
// identical contents counted once.
func (fi *flatInfo) visibleNeeded(ctx context.Context, layers []*Layer) (needed int64, members int, err error) {
	type member struct {
		layer int
		off   int64
	}
	spans := map[member]int64{}
	distinct := map[member]int64{}
	seen := map[string]bool{}
	names := make([]string, 0, len(fi.model))
	for n := range fi.model {
		names = append(names, n)
	}
	sort.Strings(names)
	fi.regular, fi.regBytes, fi.tocs, fi.full = 0, 0, 0, 0
	for _, n := range names {
		v := fi.model[n]
		if v.f.Type != "reg" {
			continue
		}
		fi.regular++
		fi.regBytes += v.f.Size
		t, err := layers[v.layer].readTOC(ctx)
		if err != nil {
			return 0, 0, err
		}
		e, ok := t.Lookup(n)
		if !ok {
			return 0, 0, fmt.Errorf("%s is not in the TOC of layer %s", n, layers[v.layer].Name)
		}
		first := !seen[v.f.Digest]
		seen[v.f.Digest] = true
		for _, c := range e.Chunks {
			m := member{v.layer, c.Offset}
			spans[m] = c.End - c.Offset
			if first {
				distinct[m] = c.End - c.Offset
			}
		}
	}
	fi.hidden = make([]int64, len(layers))
	fi.tailExtra, fi.gapExtra, fi.runs = 0, 0, 0
	for i, l := range layers {
		t, err := l.readTOC(ctx)
		if err != nil {
			return 0, 0, err
		}
		fi.tocs += l.Size - t.Offset
		fi.tailExtra += max(0, min(toc.DefaultTailBytes, l.Size)-(l.Size-t.Offset))
		var offs []int64
		for m := range spans {
			if m.layer == i {
				offs = append(offs, m.off)
			}
		}
		slices.Sort(offs)
		for j := range offs {
			if j == 0 {
				fi.runs++
				continue
			}
			gap := offs[j] - (offs[j-1] + spans[member{i, offs[j-1]}])
			if gap > 0 {
				fi.runs++
			}
			if gap > 0 && gap <= fetch.DefaultMaxGap {
				fi.gapExtra += gap
			}
		}
		fi.full += l.Size
		for _, f := range l.Files {
			if v, ok := fi.model[f.Name]; f.Type == "reg" && (!ok || v.layer != i) {
				fi.hidden[i] += f.Size
			}
		}
	}
	needed, fi.distinct = fi.tocs, fi.tocs
	for _, n := range spans {
		needed += n
	}
	for _, n := range distinct {
		fi.distinct += n
	}
	return needed, len(spans), nil
}

// layerFiles is the ground truth of each layer, base first.
func layerFiles(layers []*Layer) [][]File {
	out := make([][]File, len(layers))
	for i, l := range layers {
		out[i] = l.Files
	}
	return out
}

// prepareFlat prepares W4: the model of the flattened image, sg-ls
// --flatten's listing (checked against the model), the reference tree (the
// baseline's unpack straight from the registry, checked against the
// model), and the visible content's compressed size.
func (b *bench) prepareFlat(ctx context.Context, w *workload) error {
	fi := w.flat
	fi.model = flattenModel(layerFiles(w.layers))
	want, err := modelTree(fi.model)
	if err != nil {
		return fmt.Errorf("model of the W4 image: %w", err)
	}
	out, err := b.sgls(ctx, "--flatten", b.registryImageRef(w.repo))
	if err != nil {
		return err
	}
	ents, err := b.writeEntries(w, out, b.proxyImageRef(w.repo), nil)
	if err != nil {
		return err
	}
	if err := checkListing(ents, fi.model, w.layers); err != nil {
		return fmt.Errorf("sg-ls --flatten %s: %w", b.registryImageRef(w.repo), err)
	}

	dir, err := os.MkdirTemp(b.cfg.outBase, "stargz-get-bench-ref-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cmd := exec.CommandContext(ctx, b.self, "baseline", "-image", b.registryImageRef(w.repo), dir)
	cmd.Env = childEnv()
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("reference unpack: %w\n%s", err, tail(string(out), 2000))
	}
	if fi.ref, err = readTree(dir); err != nil {
		return err
	}
	if err := diffTrees(want, fi.ref, "the model of the image's layers", "the baseline's unpacked tree"); err != nil {
		return err
	}

	if w.needed, w.members, err = fi.visibleNeeded(ctx, w.layers); err != nil {
		return err
	}
	var unc int64
	var hidden []string
	for i, l := range w.layers {
		unc += l.UncompressedSize
		var reg int64
		for _, f := range l.Files {
			if f.Type == "reg" {
				reg += f.Size
			}
		}
		hidden = append(hidden, fmt.Sprintf("layer %d %s of %s (%.0f%%)", i, mib(fi.hidden[i]), mib(reg), 100*float64(fi.hidden[i])/float64(max(reg, 1))))
	}
	w.what = fmt.Sprintf("the image %s flattened (%d layers, %s uncompressed, %s of blobs): %d visible entries, %d regular files, %s\n"+
		"    file bytes hidden by upper layers: %s\n"+
		"    full pull %s; visible content %s compressed (%d gzip members + %d footers/TOCs, %s); %s with identical contents counted once\n"+
		"    sg-fetch's defaults add up to %s: %s of %s tail reads beyond the small TOCs, %s of hidden bytes in gaps of up to %s between visible members "+
		"(downloading no hidden bytes at all takes at least %d range requests, one per run of adjacent visible members)",
		w.repo, len(w.layers), mib(unc), mb(fi.full), len(fi.model), fi.regular, mib(fi.regBytes),
		strings.Join(hidden, ", "),
		mb(fi.full), mb(w.needed), w.members, len(w.layers), mb(fi.tocs), mb(fi.distinct),
		mb(w.needed+fi.tailExtra+fi.gapExtra), mb(fi.tailExtra), kib(toc.DefaultTailBytes), mb(fi.gapExtra), kib(fetch.DefaultMaxGap), fi.runs)
	return nil
}

// checkListing compares sg-ls --flatten's entries with the model: the same
// names, each from the same layer.
func checkListing(ents []lsEntry, model map[string]visible, layers []*Layer) error {
	var bad []string
	got := map[string]bool{}
	for _, e := range ents {
		got[e.Name] = true
		v, ok := model[e.Name]
		switch {
		case !ok:
			bad = append(bad, fmt.Sprintf("%s (%s, layer %s): not visible in the model", e.Name, e.Type, e.Layer))
		case e.Layer != layers[v.layer].Digest:
			bad = append(bad, fmt.Sprintf("%s: from layer %s, the model has it from layer %d (%s)", e.Name, e.Layer, v.layer, layers[v.layer].Digest))
		}
	}
	for n, v := range model {
		if !got[n] {
			bad = append(bad, fmt.Sprintf("%s (%s, layer %d): visible in the model, not listed", n, v.f.Type, v.layer))
		}
	}
	if len(bad) == 0 {
		return nil
	}
	sort.Strings(bad)
	n := len(bad)
	if n > 20 {
		bad = append(bad[:20], fmt.Sprintf("... and %d more", n-20))
	}
	return fmt.Errorf("%d entries differ from the model of the image's layers:\n  %s", n, strings.Join(bad, "\n  "))
}
