// Package testscripts runs the stargz-get tools end to end, as a user
// would from a shell, against the real distribution registry and eStargz
// fixture images built from real files (see internal/testenv).
//
// Each script in testdata/ pins one user-visible behaviour. The registry
// and fixtures are started once per test run and exported to scripts as:
//
//	REG        host:port of an anonymous registry
//	AUTHREG    host:port of a registry with htpasswd Basic auth (alice:s3cret)
//	GOTREE     one-layer eStargz image of Go toolchain files
//	MINCHUNK   eStargz image built with a minimum chunk size (innerOffset)
//	MULTI      three-layer eStargz image
//	PLAINGZIP  plain gzip (not eStargz) image
//	MULTIARCH  index with linux/amd64 and linux/arm64 images
//	HOSTILE    a layer whose TOC tries to write outside the output directory
//	UNPINNED   an eStargz image without the TOC digest annotation
//	LAYERED    three layers with whiteouts, an opaque directory, replacements
//	MIXED      eStargz, plain gzip, eStargz layers
//	ZSTDCHUNKED  a zstd:chunked layer written by containers/storage
//	ZSTDBARE     the same layer with its zstd:chunked annotations dropped
//	ZSTDESTARGZ  the same files as zstd:chunked written by estargz
//	PLAINZSTD    a plain tar+zstd layer (no TOC)
//	ZMIXED     eStargz, zstd:chunked (with a whiteout), plain zstd layers
//	PLAINBIG   a ~30 MB plain gzip layer (src/bufio, toolchain binaries, src/net)
//	CRANEAPPEND  a gzip layer made as "crane append" makes them
//	HOSTILEGZIP  HOSTILE's tar as a plain gzip layer
//	*_L0...    layer digests of each image, e.g. GOTREE_L0, MULTI_L2
//	DIFFA, DIFFB  two versions of one image for sg-ls --diff (see
//	           testenv.DiffPair); DIFFROOTB is DIFFB unpacked
//	AUTHGOTREE GOTREE on AUTHREG
//	TOKENREG, TLSREG, FLAKYGOTREE, ...  token auth, TLS and fault proxies:
//	           see testenv.ScriptRegistries
//	ARTIFACT, HOSTILEART, CONFIGART, NORANGEART, SLOWART, ...  oras-pushed
//	           artifacts and fault proxies: see testenv.ArtifactRegistries
//	GOROOT_FIXTURES  the GOROOT the artifact files come from
//
// Custom commands: checktree (compare a directory with a fixture's ground
// truth), checklist (compare an sg-ls listing with it), notemp (no temp
// files left behind), checkflat and checkroot (compare a flattened listing
// or directory with the layered fixture unpacked by a reference unpacker),
// checkdiff (compare sg-ls --diff DIFFA DIFFB with the two images unpacked
// and compared path by path), expand (write a file with $VARS expanded, for
// hand-written input records); for artifacts sha, perm, moved, waitstate
// and checkgosrc (see artifact_cmds_test.go). Set UPDATE_SCRIPTS=1 to update cmp'd files.
package testscripts

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/stargz-get/stargz-get/internal/sgfetch"
	"github.com/stargz-get/stargz-get/internal/sglayers"
	"github.com/stargz-get/stargz-get/internal/sgls"
	"github.com/stargz-get/stargz-get/internal/testenv"
	"github.com/stargz-get/stargz-get/pkg/blob"
	"github.com/stargz-get/stargz-get/pkg/cache"
	"github.com/stargz-get/stargz-get/pkg/gzindex"
	"github.com/stargz-get/stargz-get/pkg/toc"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"sg-layers": func() { os.Exit(sglayers.Main()) },
		"sg-ls":     func() { os.Exit(sgls.Main()) },
		"sg-fetch":  func() { os.Exit(sgfetch.Main()) },
	})
}

// world is what every script runs against, set up once.
type world struct {
	fx      *testenv.Fixtures
	rootfs  string // the layered fixture unpacked by the reference unpacker
	reg     *testenv.Registry
	authReg *testenv.Registry
	more    *testenv.ScriptRegistries
	arts    *testenv.Artifacts
	artRegs *testenv.ArtifactRegistries
	env     []string
}

// theWorld is the world of the TestScripts run in progress, for the
// commands that are not methods of it.
var theWorld *world

func setupWorld() (*world, error) {
	fx, err := testenv.BuildFixtures(filepath.Join(os.TempDir(), "stargz-get-fixtures"))
	if err != nil {
		return nil, err
	}
	w := &world{fx: fx}
	if w.rootfs, err = os.MkdirTemp("", "stargz-get-rootfs-"); err != nil {
		return nil, err
	}
	if err := testenv.UnpackImage(fx.Layered, w.rootfs); err != nil {
		return nil, err
	}
	if w.reg, err = testenv.StartRegistry(testenv.RegistryOptions{}); err != nil {
		return nil, err
	}
	if w.authReg, err = testenv.StartRegistry(testenv.RegistryOptions{Users: map[string]string{"alice": "s3cret"}}); err != nil {
		w.reg.Close()
		return nil, err
	}
	ctx := context.Background()
	if _, err := fx.Push(ctx, w.reg.Host, "", ""); err != nil {
		w.close()
		return nil, err
	}
	if _, err := fx.Push(ctx, w.authReg.Host, "alice", "s3cret"); err != nil {
		w.close()
		return nil, err
	}
	if w.more, err = testenv.StartScriptRegistries(ctx, fx, w.reg.Host); err != nil {
		w.close()
		return nil, err
	}
	w.env = append(w.env, w.more.Vars...)
	diffVars, err := setupDiff(ctx, w.reg.Host)
	if err != nil {
		w.close()
		return nil, err
	}
	w.env = append(w.env, diffVars...)
	if err := setupTags(ctx, w.reg.Host); err != nil {
		w.close()
		return nil, err
	}
	if w.arts, err = testenv.BuildArtifacts(filepath.Join(os.TempDir(), "stargz-get-fixtures")); err != nil {
		w.close()
		return nil, err
	}
	if w.artRegs, err = testenv.StartArtifactRegistries(ctx, w.arts, w.reg.Host); err != nil {
		w.close()
		return nil, err
	}
	w.env = append(w.env, w.artRegs.Vars...)
	w.env = append(w.env, "GOROOT_FIXTURES="+w.arts.GoRoot)
	add := func(k, v string) { w.env = append(w.env, k+"="+v) }
	add("REG", w.reg.Host)
	add("AUTHREG", w.authReg.Host)
	add("AUTHGOTREE", fx.GoTree.Ref(w.authReg.Host))
	for name, img := range map[string]*testenv.Image{"GOTREE": fx.GoTree, "MINCHUNK": fx.MinChunk, "MULTI": fx.Multi, "PLAINGZIP": fx.Gzip, "HOSTILE": fx.Hostile, "UNPINNED": fx.Unpinned, "LAYERED": fx.Layered, "MIXED": fx.Mixed,
		"ZSTDCHUNKED": fx.ZstdChunked, "ZSTDBARE": fx.ZstdNoAnnotations, "ZSTDESTARGZ": fx.ZstdEStargz, "PLAINZSTD": fx.PlainZstd, "ZMIXED": fx.ZMixed,
		"PLAINBIG": fx.PlainBig, "CRANEAPPEND": fx.CraneAppend, "HOSTILEGZIP": fx.HostileGzip} {
		add(name, img.Ref(w.reg.Host))
		add(name+"_MANIFEST", img.Digest)
		for i, l := range img.Layers {
			add(fmt.Sprintf("%s_L%d", name, i), l.Digest)
			add(fmt.Sprintf("%s_L%d_TOC", name, i), l.TOCDigest)
		}
	}
	add("MULTIARCH", fx.Index.Ref(w.reg.Host))
	for _, img := range fx.Index.Images {
		arch := strings.ToUpper(strings.ReplaceAll(img.Platform, "/", "_"))
		add("MULTIARCH_"+arch+"_MANIFEST", img.Digest)
	}
	return w, nil
}

func (w *world) close() {
	closeDiff()
	if w.rootfs != "" {
		os.RemoveAll(w.rootfs)
	}
	if w.reg != nil {
		w.reg.Close()
	}
	if w.authReg != nil {
		w.authReg.Close()
	}
	if w.more != nil {
		w.more.Close()
	}
	if w.artRegs != nil {
		w.artRegs.Close()
	}
}

func TestScripts(t *testing.T) {
	// Set up for each run, not once per process: -count=2 runs it again
	// after the first run's registries are closed. The fixtures are
	// built once and cached on disk.
	w, err := setupWorld()
	if err != nil {
		t.Fatalf("setting up registry and fixtures: %v", err)
	}
	t.Cleanup(w.close)
	theWorld = w
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata",
		RequireExplicitExec: true,
		UpdateScripts:       os.Getenv("UPDATE_SCRIPTS") != "",
		Setup: func(e *testscript.Env) error {
			e.Vars = append(e.Vars, w.env...)
			// Each script has its own cache (HOME is not writable).
			e.Setenv("SG_CACHE_DIR", filepath.Join(e.WorkDir, "sg-cache"))
			// The modification time of every fixture entry, in seconds.
			e.Setenv("FIXTURE_MTIME", strconv.FormatInt(testenv.ModTime.Unix(), 10))
			return nil
		},
		Condition: func(cond string) (bool, error) {
			if cond == "root" {
				return os.Geteuid() == 0, nil
			}
			return false, fmt.Errorf("unknown condition %q", cond)
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"checktree":    w.checktree,
			"checklist":    w.checklist,
			"notemp":       notemp,
			"expand":       expand,
			"checkflat":    w.checkflat,
			"checkpresent": w.checkpresent,
			"checkroot":    w.checkroot,
			"checkdiff":    checkdiff,
			"moved":        w.moved,
			"sentbytes":    w.sentbytes,
			"waitstate":    waitstate,
			"sha":          sha,
			"perm":         perm,
			"checkgosrc":   w.checkgosrc,
			"forgeindex":   forgeindex,
			"forgewindow":  forgewindow,
			"movedchunks":  movedchunks,
			"corruptchunk": corruptchunk,
		},
	})
}

// groundTruth returns the ground truth entries of a fixture ("gotree",
// "minchunk", "multi", "multiarch-amd64", ...) or of one of its layers
// ("multi:1"), with the digests of the layers they come from.
func (w *world) groundTruth(ts *testscript.TestScript, spec string) ([]testenv.File, []string) {
	name, layer, hasLayer := strings.Cut(spec, ":")
	var img *testenv.Image
	switch name {
	case "gotree":
		img = w.fx.GoTree
	case "minchunk":
		img = w.fx.MinChunk
	case "multi":
		img = w.fx.Multi
	case "plaingzip":
		img = w.fx.Gzip
	case "mixed":
		img = w.fx.Mixed
	case "plainbig":
		img = w.fx.PlainBig
	case "plainzstd":
		img = w.fx.PlainZstd
	case "craneappend":
		img = w.fx.CraneAppend
	case "hostilegzip":
		img = w.fx.HostileGzip
	case "hostile":
		img = w.fx.Hostile
	case "unpinned":
		img = w.fx.Unpinned
	case "zstdchunked":
		img = w.fx.ZstdChunked
	case "zstdestargz":
		img = w.fx.ZstdEStargz
	case "zmixed":
		img = w.fx.ZMixed
	case "tagsv1", "tagsv2":
		img = tagsImage(name)
	default:
		for _, i := range w.fx.Index.Images {
			if name == "multiarch-"+strings.TrimPrefix(i.Platform, "linux/") {
				img = i
			}
		}
	}
	if img == nil {
		ts.Fatalf("unknown fixture %q", spec)
	}
	layers := img.Layers
	if hasLayer {
		var i int
		if _, err := fmt.Sscan(layer, &i); err != nil || i < 0 || i >= len(img.Layers) {
			ts.Fatalf("bad layer in %q", spec)
		}
		layers = layers[i : i+1]
	}
	var files []testenv.File
	var digests []string
	for _, l := range layers {
		for _, f := range l.Files {
			files = append(files, f)
			digests = append(digests, l.Digest)
		}
	}
	return files, digests
}

// checktree [-exact] DIR FIXTURE [PREFIX...]
//
// DIR must hold the fixture's entries at or under each PREFIX (all of them
// without a PREFIX) with the right types, modes, contents and link
// targets. With -exact, DIR must hold nothing else either.
func (w *world) checktree(ts *testscript.TestScript, neg bool, args []string) {
	exact := len(args) > 0 && args[0] == "-exact"
	if exact {
		args = args[1:]
	}
	if len(args) < 2 {
		ts.Fatalf("usage: checktree [-exact] DIR FIXTURE [PREFIX...]")
	}
	dir := ts.MkAbs(args[0])
	truth, _ := w.groundTruth(ts, args[1])
	prefixes := args[2:]
	if len(prefixes) == 0 {
		prefixes = []string{""}
	}
	var want []testenv.File
	for _, p := range prefixes {
		want = append(want, testenv.Want(truth, p)...)
	}
	var names []string
	for _, f := range want {
		names = append(names, f.Name)
	}
	err := testenv.CheckTree(dir, truth, names)
	if err == nil && exact {
		err = onlyThese(dir, want)
	}
	switch {
	case neg && err == nil:
		ts.Fatalf("%s matches the ground truth, but should not", dir)
	case !neg && err != nil:
		ts.Fatalf("%v", err)
	}
}

// onlyThese reports entries under dir that are neither wanted nor a parent
// directory of a wanted entry.
func onlyThese(dir string, want []testenv.File) error {
	ok := map[string]bool{}
	for _, f := range want {
		for n := f.Name; n != "." && n != ""; n = filepath.Dir(n) {
			ok[n] = true
		}
	}
	var extra []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel != "." && !ok[filepath.ToSlash(rel)] {
			extra = append(extra, rel)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(extra) > 0 {
		sort.Strings(extra)
		return fmt.Errorf("%s holds %d unexpected entries: %s", dir, len(extra), strings.Join(extra[:min(len(extra), 10)], ", "))
	}
	return nil
}

// checklist FILE FIXTURE
//
// FILE, an sg-ls listing, must list every entry of the fixture's layers
// exactly once, under the right layer, with its type, size, mode, link
// target and digest, and nothing else (landmark files, listed with --all,
// are tolerated).
func (w *world) checklist(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: checklist FILE FIXTURE")
	}
	truth, layers := w.groundTruth(ts, args[1])
	want := map[string]testenv.File{}
	for i, f := range truth {
		want[layers[i]+" "+f.Name] = f
	}
	var bad []string
	seen := map[string]bool{}
	for i, line := range strings.Split(strings.TrimSpace(ts.ReadFile(args[0])), "\n") {
		var e struct {
			Layer, Name, Type, LinkName, Digest string
			Size, Mode                          int64
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			ts.Fatalf("%s line %d: %v", args[0], i+1, err)
		}
		key := e.Layer + " " + e.Name
		if seen[key] {
			bad = append(bad, key+": listed twice")
		}
		seen[key] = true
		f, ok := want[key]
		if !ok {
			if e.Name != ".prefetch.landmark" && e.Name != ".no.prefetch.landmark" {
				bad = append(bad, key+": not in the fixture")
			}
			continue
		}
		got := testenv.File{Name: e.Name, Type: e.Type, Mode: e.Mode & 0o7777, Size: e.Size, LinkName: e.LinkName, Digest: e.Digest}
		if f.Type == "hardlink" {
			got.Size, got.Digest = f.Size, f.Digest // the TOC records contents on the target
		}
		if got != f {
			bad = append(bad, fmt.Sprintf("%s: listed %+v, fixture has %+v", e.Name, got, f))
		}
	}
	for k := range want {
		if !seen[k] {
			bad = append(bad, k+": missing")
		}
	}
	sort.Strings(bad)
	switch {
	case neg && len(bad) == 0:
		ts.Fatalf("%s matches the fixture, but should not", args[0])
	case !neg && len(bad) > 0:
		ts.Fatalf("%s differs from fixture %s in %d entries:\n%s", args[0], args[1], len(bad), strings.Join(bad[:min(len(bad), 20)], "\n"))
	}
}

// notemp DIR: no temp files (.sg-*.tmp) anywhere under DIR.
func notemp(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 || neg {
		ts.Fatalf("usage: notemp DIR")
	}
	dir := ts.MkAbs(args[0])
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), ".sg-") {
			ts.Fatalf("temp file left behind: %s", p)
		}
		return nil
	})
}

// expand IN OUT: write IN with $VARS and ${VARS} expanded to OUT.
func expand(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 || neg {
		ts.Fatalf("usage: expand IN OUT")
	}
	out := os.Expand(ts.ReadFile(args[0]), ts.Getenv)
	if err := os.WriteFile(ts.MkAbs(args[1]), []byte(out), 0o644); err != nil {
		ts.Fatalf("%v", err)
	}
}

// checkflat FILE layered: FILE lists (one name a line) exactly the paths
// the reference unpacker makes of the layered fixture.
func (w *world) checkflat(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 || args[1] != "layered" || neg {
		ts.Fatalf("usage: checkflat FILE layered")
	}
	var want []string
	_ = filepath.WalkDir(w.rootfs, func(p string, d fs.DirEntry, err error) error {
		if rel, _ := filepath.Rel(w.rootfs, p); err == nil && rel != "." {
			want = append(want, filepath.ToSlash(rel))
		}
		return nil
	})
	got := strings.Fields(ts.ReadFile(args[0]))
	sort.Strings(want)
	sort.Strings(got)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		ts.Fatalf("flattened listing differs from the reference unpack:\n got %d: %v\nwant %d: %v", len(got), diffNames(got, want), len(want), diffNames(want, got))
	}
}

// diffNames returns the names in a that are not in b.
func diffNames(a, b []string) []string {
	in := map[string]bool{}
	for _, n := range b {
		in[n] = true
	}
	var out []string
	for _, n := range a {
		if !in[n] {
			out = append(out, n)
		}
	}
	return out
}

// checkroot DIR layered: DIR is the tree the reference unpacker makes of
// the layered fixture: names, types, modes, contents, link targets.
func (w *world) checkroot(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 || args[1] != "layered" || neg {
		ts.Fatalf("usage: checkroot DIR layered")
	}
	if err := testenv.CompareTrees(w.rootfs, ts.MkAbs(args[0])); err != nil {
		ts.Fatalf("%v", err)
	}
}

// moved PROXY [zero | early FIXTURE PATH | whole FIXTURE | span FIXTURE PATH | most FIXTURE K]
//
// Prints the blob bytes the COUNT* proxy PROXY has sent since the last
// moved ("moved N bytes") and starts counting again. With a check, fails
// unless they are: none (zero); no more than the compressed end of PATH's
// entry in the one-layer plain gzip FIXTURE plus the read-ahead of one
// window of stream segments and the footer probe (early), and less than the
// layer; the layer once (whole), give or take the footer probe; no more than
// 1.1 times the span of the layer from the nearest checkpoint before
// PATH's header to the block boundary after its end (span); no more than K
// times the layer (most).
func (w *world) moved(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 1 || neg {
		ts.Fatalf("usage: moved PROXY [zero | early FIXTURE PATH | whole FIXTURE | span FIXTURE PATH]")
	}
	p := w.more.Counters[args[0]]
	if p == nil {
		ts.Fatalf("no counting proxy %q", args[0])
	}
	n := p.BlobBytes(true)
	fmt.Fprintf(ts.Stdout(), "moved %d bytes\n", n)
	if len(args) == 1 {
		return
	}
	check := func(ok bool, format string, a ...any) {
		if !ok {
			ts.Fatalf("moved %d blob bytes: %s", n, fmt.Sprintf(format, a...))
		}
	}
	layer := func(fixture string) (*testenv.Layer, *gzindex.Index) {
		img := w.image(ts, fixture)
		l := img.Layers[0]
		f, err := os.Open(l.BlobPath)
		ts.Check(err)
		defer f.Close()
		ix, err := gzindex.Build(f, l.Digest, l.Size)
		ts.Check(err)
		return l, ix
	}
	entry := func(ix *gzindex.Index, name string) gzindex.Entry {
		for _, e := range ix.Entries {
			if strings.TrimSuffix(e.Name, "/") == name {
				return e
			}
		}
		ts.Fatalf("no %s in the layer", name)
		return gzindex.Entry{}
	}
	// What finding out that a layer is not eStargz costs: its tail, read
	// for a footer and TOC, and a footer probe.
	const probe = toc.DefaultTailBytes + 1024
	switch args[1] {
	case "zero":
		check(n == 0, "want none")
	case "most":
		l := w.image(ts, args[2]).Layers[0]
		var k int64
		fmt.Sscan(args[3], &k)
		check(k > 0 && n <= k*l.Size, "want at most %d times the layer's %d", k, l.Size)
	case "whole":
		l, _ := layer(args[2])
		check(n >= l.Size && n <= l.Size+probe, "want the layer's %d once", l.Size)
	case "early":
		l, ix := layer(args[2])
		e := entry(ix, args[3])
		_, end := ix.Span(e.Data+e.Size, e.Data+e.Size)
		// The stream's segments grow from blob.FirstSegmentBytes to
		// blob.DefaultSegmentBytes; a window of them is in flight.
		var segEnds []int64
		for off, s := int64(0), int64(blob.FirstSegmentBytes); off < l.Size; s = min(2*s, blob.DefaultSegmentBytes) {
			off = min(off+s, l.Size)
			segEnds = append(segEnds, off)
		}
		k := sort.Search(len(segEnds), func(i int) bool { return segEnds[i] >= end })
		bound := segEnds[min(k+blob.DefaultWindow-1, len(segEnds)-1)] + probe
		check(n <= bound && n < l.Size, "want at most %d (%s ends at compressed byte %d) and less than the layer's %d", bound, args[3], end, l.Size)
	case "span":
		_, ix := layer(args[2])
		e := entry(ix, args[3])
		off, end := ix.Span(e.Header, e.Data+e.Size)
		check(float64(n) <= 1.1*float64(end-off), "want at most 1.1 times the span %d-%d (%d bytes)", off, end, end-off)
	default:
		ts.Fatalf("unknown check %q", args[1])
	}
}

// forgeindex CACHEDIR LAYER NAME1 NAME2: rewrite the cached seek index of
// LAYER, validly stored, with the names of the regular
// files NAME1 and NAME2 swapped, as an index that does not describe its
// layer would be.
func forgeindex(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 4 || neg {
		ts.Fatalf("usage: forgeindex CACHEDIR LAYER NAME1 NAME2")
	}
	c, _, ix := cachedIndex(ts, args[0], args[1])
	var a, z *gzindex.Entry
	for i := range ix.Entries {
		switch strings.TrimPrefix(ix.Entries[i].Name, "./") {
		case args[2]:
			a = &ix.Entries[i]
		case args[3]:
			z = &ix.Entries[i]
		}
	}
	if a == nil || z == nil {
		ts.Fatalf("no %s or %s in the index", args[2], args[3])
	}
	a.Name, z.Name = z.Name, a.Name
	b, err := ix.Marshal()
	ts.Check(err)
	ts.Check(c.Put("gzindex", args[1], b))
}

// cachedIndex opens the cache in dir and reads the seek index of layer
// from it, as stored and unmarshalled.
func cachedIndex(ts *testscript.TestScript, dir, layer string) (*cache.Cache, []byte, *gzindex.Index) {
	c, err := cache.Open(ts.MkAbs(dir))
	ts.Check(err)
	b, ok := c.Get("gzindex", layer)
	if !ok {
		ts.Fatalf("no index of %s cached", layer)
	}
	ix, err := gzindex.Unmarshal(b, layer, mustSize(ts, b))
	ts.Check(err)
	return c, b, ix
}

// forgewindow CACHEDIR LAYER: flip a byte of the last checkpoint window in
// the cached seek index of LAYER, and store it again under a correct cache
// digest, so that only the window's own digest can tell.
func forgewindow(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 || neg {
		ts.Fatalf("usage: forgewindow CACHEDIR LAYER")
	}
	c, b, ix := cachedIndex(ts, args[0], args[1])
	var last *gzindex.Checkpoint
	for i := range ix.Checkpoints {
		if ix.Checkpoints[i].WindowZ > 0 {
			last = &ix.Checkpoints[i]
		}
	}
	if last == nil {
		ts.Fatalf("the index of %s has no checkpoint with a window", args[1])
	}
	b = bytes.Clone(b)
	b[16+last.WindowAt+last.WindowZ/2] ^= 0x55
	ts.Check(c.Put("gzindex", args[1], b))
}

// mustSize reads the layer size an index records, so that Unmarshal's
// check passes for the index as it is. A version 2 index is 8 bytes of
// magic, the length of its windows section (8 bytes, big-endian), the
// section, then gzip-compressed JSON lines, the first naming the layer.
func mustSize(ts *testscript.TestScript, b []byte) int64 {
	if len(b) < 16 {
		ts.Fatalf("seek index of %d bytes", len(b))
	}
	n := binary.BigEndian.Uint64(b[8:16])
	if n > uint64(len(b)-16) {
		ts.Fatalf("seek index: windows section past its end")
	}
	zr, err := gzip.NewReader(bytes.NewReader(b[16+n:]))
	ts.Check(err)
	var hdr struct{ Size int64 }
	ts.Check(json.NewDecoder(zr).Decode(&hdr))
	return hdr.Size
}

// image returns a fixture image by its script name.
func (w *world) image(ts *testscript.TestScript, name string) *testenv.Image {
	switch name {
	case "plainbig":
		return w.fx.PlainBig
	case "plaingzip":
		return w.fx.Gzip
	case "craneappend":
		return w.fx.CraneAppend
	case "gotree":
		return w.fx.GoTree
	}
	ts.Fatalf("unknown fixture %q", name)
	return nil
}

// checkpresent DIR FIXTURE: every file and link under DIR (whatever a run
// that was cut short left) equals the fixture's entry of that name.
func (w *world) checkpresent(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 || neg {
		ts.Fatalf("usage: checkpresent DIR FIXTURE")
	}
	dir := ts.MkAbs(args[0])
	truth, _ := w.groundTruth(ts, args[1])
	var names []string
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			names = append(names, filepath.ToSlash(rel))
		}
		return nil
	})
	if len(names) == 0 {
		ts.Fatalf("%s holds no files", dir)
	}
	if err := testenv.CheckTree(dir, truth, names); err != nil {
		ts.Fatalf("%v", err)
	}
}
