package toc

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/iotest"

	"github.com/containerd/stargz-snapshotter/estargz"
	digest "github.com/opencontainers/go-digest"
)

// builtTOC is an eStargz TOC built by estargz.Build from files of GOROOT.
type builtTOC struct {
	name    string
	member  []byte // the TOC's gzip member, as parseTOC reads it
	json    []byte // the TOC JSON in it
	entries int
}

// A builtSet is TOCs built once per test binary.
type builtSet struct {
	once sync.Once
	tocs []builtTOC
	err  error
}

// builtSpec says how to build a TOC.
type builtSpec struct {
	name  string
	dir   string // under GOROOT/src
	extra bool
	// chunkSize and minChunkSize are estargz.Writer's (0 for defaults).
	chunkSize, minChunkSize int
}

var (
	// testTOCs are TOCs built from GOROOT/src/cmd/go (about 1,600
	// entries) and from GOROOT/src/encoding with extra kinds of entries
	// (links, devices, xattrs, owners), in small chunks or with small
	// files sharing members.
	testTOCs = builtSet{}
	testSpec = []builtSpec{
		{"cmd-go", "cmd/go", false, 0, 0},
		{"encoding-chunked", "encoding", true, 4096, 0},
		{"encoding-minchunk", "encoding", true, 0, 64 << 10},
	}
	// benchTOCs is the TOC of all of GOROOT/src (about 13,000 entries,
	// 4 MB of JSON).
	benchTOCs = builtSet{}
	benchSpec = []builtSpec{{"goroot-src", "", false, 1 << 20, 0}}
)

// get builds the TOCs of specs, once.
func (s *builtSet) get(tb testing.TB, specs []builtSpec) []builtTOC {
	tb.Helper()
	s.once.Do(func() {
		for _, b := range specs {
			t, err := buildTOC(filepath.Join(runtime.GOROOT(), "src", b.dir), b.extra, b.chunkSize, b.minChunkSize)
			if err != nil {
				s.err = fmt.Errorf("building %s: %w", b.name, err)
				return
			}
			t.name = b.name
			s.tocs = append(s.tocs, t)
		}
	})
	if s.err != nil {
		tb.Fatal(s.err)
	}
	return s.tocs
}

// buildTOC builds an eStargz layer of the files under root and returns
// its TOC. With extra, it adds links, devices, owners and xattrs.
func buildTOC(root string, extra bool, chunkSize, minChunkSize int) (builtTOC, error) {
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	n := 0
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if !fi.Mode().IsRegular() && !fi.IsDir() {
			return nil
		}
		h, err := tar.FileInfoHeader(fi, "")
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		h.Name = filepath.ToSlash(rel)
		if fi.IsDir() {
			h.Name += "/"
		}
		h.Uid, h.Gid, h.Uname, h.Gname = 0, 0, "root", "root"
		if extra && n%7 == 3 {
			h.Uid, h.Gid, h.Uname, h.Gname = 1000+n, 2000+n, fmt.Sprintf("user%d", n), "staff"
		}
		if extra && n%5 == 1 {
			h.PAXRecords = map[string]string{
				"SCHILY.xattr.user.n":           fmt.Sprint(n),
				"SCHILY.xattr.security.capable": "\x00\x01\xff binary",
			}
			h.Format = tar.FormatPAX
		}
		n++
		if err := tw.WriteHeader(h); err != nil {
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
		return builtTOC{}, err
	}
	if extra {
		for _, h := range []*tar.Header{
			{Typeflag: tar.TypeSymlink, Name: "link", Linkname: "json/decode.go", Mode: 0o777},
			{Typeflag: tar.TypeLink, Name: "hard", Linkname: "json/encode.go", Mode: 0o644},
			{Typeflag: tar.TypeChar, Name: "dev/null", Devmajor: 1, Devminor: 3, Mode: 0o666},
			{Typeflag: tar.TypeBlock, Name: "dev/sda", Devmajor: 8, Devminor: 0, Mode: 0o660, Uid: 6, Gid: 6},
			{Typeflag: tar.TypeFifo, Name: "fifo", Mode: 0o600},
			{Typeflag: tar.TypeReg, Name: "ünïcødé 日本/文件.txt", Size: 3, Mode: 0o644},
		} {
			if err := tw.WriteHeader(h); err != nil {
				return builtTOC{}, err
			}
			if h.Size > 0 {
				if _, err := tw.Write([]byte("abc")); err != nil {
					return builtTOC{}, err
				}
			}
		}
	}
	if err := tw.Close(); err != nil {
		return builtTOC{}, err
	}
	// The data is stored (only its offsets are in the TOC); the TOC is
	// compressed below as estargz does by default.
	var out bytes.Buffer
	w := estargz.NewWriterLevel(&out, gzip.NoCompression)
	w.ChunkSize, w.MinChunkSize = chunkSize, minChunkSize
	if err := w.AppendTar(&tb); err != nil {
		return builtTOC{}, err
	}
	tocDigest, err := w.Close()
	if err != nil {
		return builtTOC{}, err
	}
	data := out.Bytes()
	f, err := parseFooter(data, int64(len(data)))
	if err != nil {
		return builtTOC{}, err
	}
	member := data[f.tocOffset:f.tocEnd]
	jr, err := (&estargz.GzipDecompressor{}).DecompressTOC(bytes.NewReader(member))
	if err != nil {
		return builtTOC{}, err
	}
	js, err := io.ReadAll(jr)
	if err != nil {
		return builtTOC{}, err
	}
	if got := digest.FromBytes(js); got != tocDigest {
		return builtTOC{}, fmt.Errorf("TOC digest %s, estargz says %s", got, tocDigest)
	}
	var j estargz.JTOC
	if err := json.Unmarshal(js, &j); err != nil {
		return builtTOC{}, err
	}
	var m bytes.Buffer
	dgst, err := estargz.NewGzipCompressor().WriteTOCAndFooter(&m, f.tocOffset, &j, nil)
	if err != nil {
		return builtTOC{}, err
	}
	if dgst != tocDigest {
		return builtTOC{}, fmt.Errorf("rewritten TOC digest %s, estargz.Writer said %s", dgst, tocDigest)
	}
	member = m.Bytes()[:m.Len()-estargz.FooterSize]
	return builtTOC{member: member, json: js, entries: len(j.Entries)}, nil
}

// parseTOCV1 is parseTOC as it was, with estargz's decompressor and
// encoding/json: the reference the new one must match.
func parseTOCV1(r io.Reader, maxJSON int64) (*estargz.JTOC, digest.Digest, error) {
	jr, err := (&estargz.GzipDecompressor{}).DecompressTOC(r)
	if err != nil {
		return nil, "", fmt.Errorf("reading TOC: %w", err)
	}
	defer jr.Close()
	lim := &io.LimitedReader{R: jr, N: maxJSON + 1}
	d := digest.Canonical.Digester()
	tee := io.TeeReader(lim, d.Hash())
	overLimit := func() error {
		return fmt.Errorf("TOC JSON is over the limit of %d bytes decompressed (raise it with --max-toc-json-bytes)", maxJSON)
	}
	var j estargz.JTOC
	if err := json.NewDecoder(tee).Decode(&j); err != nil {
		if lim.N <= 0 {
			return nil, "", overLimit()
		}
		return nil, "", fmt.Errorf("parsing TOC JSON: %w", err)
	}
	if _, err := io.Copy(io.Discard, tee); err != nil {
		return nil, "", fmt.Errorf("decompressing TOC: %w", err)
	}
	if lim.N <= 0 {
		return nil, "", overLimit()
	}
	return &j, d.Digest(), nil
}

// decodeV1 decodes as parseTOC did, with encoding/json's Decoder.
func decodeV1(data []byte) (*estargz.JTOC, error) {
	var j estargz.JTOC
	if err := json.NewDecoder(bytes.NewReader(data)).Decode(&j); err != nil {
		return nil, err
	}
	return &j, nil
}

// readers are ways to hand decodeTOC its input, to exercise its refills.
var readers = []struct {
	name string
	wrap func(io.Reader) io.Reader
}{
	{"whole", func(r io.Reader) io.Reader { return r }},
	{"bytewise", iotest.OneByteReader},
	{"halves", iotest.HalfReader},
	{"eof-with-data", iotest.DataErrReader},
}

// checkDecode checks that decodeTOC decodes data as encoding/json does,
// or fails where it fails, however the input is read.
func checkDecode(t *testing.T, data []byte) {
	t.Helper()
	want, werr := decodeV1(data)
	for _, rd := range readers {
		got, err := decodeTOC(rd.wrap(bytes.NewReader(data)))
		switch {
		case (err == nil) != (werr == nil):
			t.Fatalf("%s: decodeTOC(%q) error %v, encoding/json error %v", rd.name, abbrev(data), err, werr)
		case err == nil && !reflect.DeepEqual(got, want):
			t.Fatalf("%s: decodeTOC(%q) =\n%s\nencoding/json gives\n%s", rd.name, abbrev(data), dump(got), dump(want))
		}
	}
}

// checkParse checks that parseTOC reads the TOC member as the old
// parseTOC did: same JTOC and digest, or an error for both.
func checkParse(t *testing.T, member []byte, maxJSON int64) {
	t.Helper()
	want, wantDgst, werr := parseTOCV1(bytes.NewReader(member), maxJSON)
	got, dgst, err := parseTOC(bytes.NewReader(member), maxJSON)
	switch {
	case (err == nil) != (werr == nil):
		t.Fatalf("parseTOC error %v, old parseTOC error %v", err, werr)
	case err == nil && !reflect.DeepEqual(got, want):
		t.Fatalf("parseTOC's JTOC differs from the old parseTOC's")
	case dgst != wantDgst:
		t.Fatalf("parseTOC digest %s, old parseTOC %s", dgst, wantDgst)
	}
}

func abbrev(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "..."
	}
	return string(b)
}

func dump(j *estargz.JTOC) string {
	if j == nil {
		return "nil"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "version %d, %d entries (nil %v)\n", j.Version, len(j.Entries), j.Entries == nil)
	for i, e := range j.Entries {
		if i == 20 {
			b.WriteString("...\n")
			break
		}
		fmt.Fprintf(&b, "  %+v\n", e)
	}
	return b.String()
}

// tocMember makes a TOC gzip member holding js as the TOC JSON.
func tocMember(t testing.TB, js []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	tw := tar.NewWriter(zw)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: estargz.TOCTarName, Size: int64(len(js)), Mode: 0o444}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(js); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestDecodeTOCBuilt(t *testing.T) {
	seen := map[string]bool{}
	for _, b := range testTOCs.get(t, testSpec) {
		for k := range entryFields {
			seen[k] = seen[k] || bytes.Contains(b.json, []byte(`"`+k+`": `))
		}
		t.Run(b.name, func(t *testing.T) {
			t.Logf("%d entries, %d bytes of JSON, %d compressed", b.entries, len(b.json), len(b.member))
			checkDecode(t, b.json)
			checkParse(t, b.member, DefaultMaxTOCJSONBytes)
			// The same TOC without indentation.
			var j estargz.JTOC
			if err := json.Unmarshal(b.json, &j); err != nil {
				t.Fatal(err)
			}
			compact, err := json.Marshal(&j)
			if err != nil {
				t.Fatal(err)
			}
			checkDecode(t, compact)
		})
	}
	for k, ok := range seen {
		if !ok {
			t.Errorf("no built TOC has %q", k)
		}
	}
}

func TestParseTOCLimit(t *testing.T) {
	b := testTOCs.get(t, testSpec)[1]
	n := int64(len(b.json))
	for _, max := range []int64{1, 100, n / 2, n - 1, n, n + 1} {
		t.Run(fmt.Sprint(max), func(t *testing.T) {
			checkParse(t, b.member, max)
			_, _, err := parseTOC(bytes.NewReader(b.member), max)
			if over := max < n; over != (err != nil && strings.Contains(err.Error(), "--max-toc-json-bytes")) {
				t.Errorf("limit %d on %d bytes: error %v", max, n, err)
			}
		})
	}
	// Bytes after the JSON value still count, and are digested.
	js := append(bytes.Clone(b.json), "\n  trailing bytes"...)
	m := tocMember(t, js)
	checkParse(t, m, int64(len(js)))
	checkParse(t, m, int64(len(js))-1)
	if _, dgst, err := parseTOC(bytes.NewReader(m), int64(len(js))); err != nil || dgst != digest.FromBytes(js) {
		t.Errorf("TOC with trailing bytes: digest %s, error %v; want %s", dgst, err, digest.FromBytes(js))
	}
}

func TestParseTOCBadMember(t *testing.T) {
	good := tocMember(t, []byte(`{"version":1,"entries":[]}`))
	var other bytes.Buffer
	zw := gzip.NewWriter(&other)
	tw := tar.NewWriter(zw)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "other.json", Size: 2})
	tw.Write([]byte("{}"))
	tw.Close()
	zw.Close()
	for name, member := range map[string][]byte{
		"empty":        nil,
		"not gzip":     []byte("{}"),
		"truncated":    good[:len(good)/2],
		"other name":   other.Bytes(),
		"corrupt data": append(append(bytes.Clone(good[:20]), 0xff, 0xff, 0xff), good[23:]...),
	} {
		t.Run(name, func(t *testing.T) {
			if _, _, err := parseTOC(bytes.NewReader(member), DefaultMaxTOCJSONBytes); err == nil {
				t.Errorf("no error")
			}
			if _, _, err := parseTOCV1(bytes.NewReader(member), DefaultMaxTOCJSONBytes); err == nil {
				t.Errorf("the old parseTOC had no error")
			}
		})
	}
}

// edgeCases are hostile and unusual TOC JSON texts.
var edgeCases = []string{
	// Top level.
	``, `   `, `null`, ` null `, `nullx`, `nul`, `{}`, `[]`, `"x"`, `1`, `-1`, `true`, `false`,
	`{"version":1,"entries":[]}`, `{"version":2}`, `{"entries":null}`, `{"entries":[null]}`,
	`{"entries":[null,{"name":"a"},null]}`, `{"entries":[{}]}`, `{"entries":[1]}`, `{"entries":["x"]}`,
	`{"entries":[[]]}`, `{"entries":[true]}`, `{"entries":{}}`, `{"entries":"x"}`, `{"entries":1}`,
	`{"entries":true}`, `{"version":"1"}`, `{"version":1.5}`, `{"version":null}`, `{"version":[]}`,
	"\t\r\n {\n\t\"entries\" \r:\n[ { } ]\n}\n",
	// Unknown keys, skipped whole.
	`{"foo":{"a":[1,2,{"b":null}],"c":"\u00e9\ud800"},"entries":[{"name":"a","bar":[true,false,null,"s",-1.5e+3,0,{}]}],"baz":[]}`,
	`{"entries":[{"NumLink":3,"-":1,"numlink":4,"nextOffset":5,"children":{},"chunkTopIndex":1}]}`,
	// Keys in other case, escaped, or folding through Unicode.
	`{"VERSION":2,"Entries":[{"NAME":"a","Type":"reg","SIZE":3,"LinkName":"x","USERNAME":"u","chunkdigest":"d","modTime":"m","DevMajor":1,"devminor":2,"UID":3,"Gid":4,"XATTRS":{"a":"YQ=="}}]}`,
	"{\"entries\":[{\"\u017fize\":5,\"lin\u212aName\":\"k\",\"nAme\":\"n\",\"\u0130nnerOffset\":7,\"\u0131nneroffset\":8}]}",
	`{"entries":[{"\u017fize":5,"na\u006de":"x","\u0074ype":"t","name\u0000":"y"}]}`,
	`{"entries":[{"name ":"a","nam":"b","names":"c","":"d"}]}`,
	// Duplicate keys: the last wins, and entries and xattrs merge.
	`{"entries":[{"name":"a","name":"b","size":1,"size":null,"type":"x","type":null}]}`,
	`{"version":1,"version":2,"version":null}`,
	`{"entries":[{"name":"a","size":5},{"name":"b"},{"name":"c"}],"entries":[{"name":"x"}],"entries":[{"type":"reg"},{"mode":1},{"uid":2},{"gid":3}]}`,
	`{"entries":[{"name":"a"}],"entries":null,"entries":[{"size":1}]}`,
	`{"entries":[{"name":"a"}],"entries":[],"entries":[{"size":1}]}`,
	`{"entries":[{"name":"a"},{"name":"b"}],"entries":[null],"entries":[{},{}]}`,
	`{"entries":[{"name":"a"},{"name":"b"}],"entries":[{},null],"entries":[{},{}]}`,
	`{"entries":[{"xattrs":{"a":"YQ==","b":"Yg=="},"xattrs":{"b":"Yw==","c":""}}]}`,
	`{"entries":[{"xattrs":{"a":"YQ=="},"xattrs":null}]}`,
	`{"entries":[{"xattrs":{"a":"YQ=="},"xattrs":{}}]}`,
	`{"entries":[{"digest":"sha256:1","chunkDigest":"sha256:1"},{"chunkDigest":"sha256:2","digest":"sha256:2"},{"digest":"x","chunkDigest":"y","digest":"y"}]}`,
	`{"entries":[{"digest":"a\u0062","chunkDigest":"ab"},{"digest":"\u00e9","chunkDigest":"é"},{"digest":"a","chunkDigest":null},{"digest":"a","chunkDigest":1}]}`,
	// Xattrs.
	`{"entries":[{"xattrs":{"user.a":"aGVsbG8=","user.b":"","user.c":null,"user.d":[1,2,255],"user.e":[],"user.f":[null],"user.g":[0,null,7]}}]}`,
	`{"entries":[{"xattrs":{"a":"!!"}}]}`, `{"entries":[{"xattrs":{"a":"YQ"}}]}`, `{"entries":[{"xattrs":{"a":"YQ="}}]}`,
	`{"entries":[{"xattrs":{"a":"aGVs\nbG8=","b":"aGVs\r\nbG8=","c":"aGVs\/bG8=","d":"aGVs bG8="}}]}`,
	`{"entries":[{"xattrs":{"a":[256]}}]}`, `{"entries":[{"xattrs":{"a":[-1]}}]}`, `{"entries":[{"xattrs":{"a":[-0]}}]}`,
	`{"entries":[{"xattrs":{"a":[1.0]}}]}`, `{"entries":[{"xattrs":{"a":[1e1]}}]}`, `{"entries":[{"xattrs":{"a":["1"]}}]}`,
	`{"entries":[{"xattrs":{"a":[true]}}]}`, `{"entries":[{"xattrs":{"a":[[]]}}]}`, `{"entries":[{"xattrs":{"a":{}}}]}`,
	`{"entries":[{"xattrs":{"a":1}}]}`, `{"entries":[{"xattrs":{"a":true}}]}`, `{"entries":[{"xattrs":"YQ=="}]}`,
	`{"entries":[{"xattrs":[]}]}`, `{"entries":[{"xattrs":1}]}`, `{"entries":[{"xattrs":true}]}`,
	"{\"entries\":[{\"xattrs\":{\"a\\ud800\":\"YQ==\",\"\xff\":\"Yg==\",\"\":\"\",\"a\":\"Yw==\",\"A\":\"ZA==\"}}]}",
	// Strings: invalid UTF-8, escapes, surrogates.
	"{\"entries\":[{\"name\":\"a\xffb\xc3\",\"type\":\"\xed\xa0\x80\",\"linkName\":\"\xf4\x90\x80\x80\",\"userName\":\"\xc0\xaf\"}]}",
	`{"entries":[{"name":"\ud800","type":"\ud800\udc00","linkName":"\udc00\ud800","userName":"\ud800x","groupName":"\ud800\u0041"}]}`,
	`{"entries":[{"name":"\ud800\\u0041","type":"\uDBFF\uDFFF","linkName":"\ud800\ud800\udc00","digest":"\u0000\u001f\u007f"}]}`,
	`{"entries":[{"name":"\u00e9\/\b\f\n\r\t\"\\","type":"é日本🎉","modtime":"\u65e5\u672c"}]}`,
	"{\"entries\":[{\"name\":\"\x7f\xef\xbf\xbd\",\"type\":\"\xef\xbf\xbd\\ufffd\"}]}",
	`{"entries":[{"name":"\x"}]}`, `{"entries":[{"name":"\u12"}]}`, `{"entries":[{"name":"\u12g4"}]}`, `{"entries":[{"name":"\'"}]}`,
	"{\"entries\":[{\"name\":\"a\x01\"}]}", "{\"entries\":[{\"name\":\"a\n\"}]}", "{\"entries\":[{\"name\":\"a\x00\"}]}",
	// Numbers.
	`{"entries":[{"size":9223372036854775807,"offset":-9223372036854775808,"mode":-1,"uid":-2147483649,"gid":2147483648}]}`,
	`{"entries":[{"size":9223372036854775808}]}`, `{"entries":[{"size":-9223372036854775809}]}`,
	`{"entries":[{"size":99999999999999999999}]}`, `{"entries":[{"size":18446744073709551616}]}`,
	`{"entries":[{"size":1.0}]}`, `{"entries":[{"size":1e3}]}`, `{"entries":[{"size":1E+3}]}`, `{"entries":[{"size":-0}]}`,
	`{"entries":[{"size":-0.0}]}`, `{"entries":[{"size":-}]}`, `{"entries":[{"size":01}]}`, `{"entries":[{"size":1.}]}`,
	`{"entries":[{"size":.5}]}`, `{"entries":[{"size":+1}]}`, `{"entries":[{"size":1e}]}`, `{"entries":[{"size":0x10}]}`,
	`{"entries":[{"size":"1"}]}`, `{"entries":[{"size":true}]}`, `{"entries":[{"size":[]}]}`, `{"entries":[{"size":{}}]}`,
	`{"entries":[{"uid":9223372036854775807,"devMajor":-9223372036854775808}]}`, `{"entries":[{"chunkSize":0,"chunkOffset":0}]}`,
	// Wrong types for strings.
	`{"entries":[{"name":1}]}`, `{"entries":[{"name":true}]}`, `{"entries":[{"name":false}]}`, `{"entries":[{"name":{}}]}`,
	`{"entries":[{"name":[]}]}`, `{"entries":[{"modtime":0}]}`,
	// Nulls everywhere.
	`{"version":null,"entries":[{"name":null,"type":null,"size":null,"modtime":null,"linkName":null,"mode":null,"uid":null,"gid":null,"userName":null,"groupName":null,"offset":null,"innerOffset":null,"devMajor":null,"devMinor":null,"xattrs":null,"digest":null,"chunkOffset":null,"chunkSize":null,"chunkDigest":null}]}`,
	// After the value: not read.
	`{"entries":[]} garbage`, `{"entries":[]}}`, `{}{}`, "{}\x00", `{}]`, `null null`,
	// Syntax errors.
	`{"a" 1}`, `{"a":1,}`, `{,}`, `{"entries":[{},]}`, `{"entries":[{}{}]}`, `{"a":[1 2]}`, `{'a':1}`,
	`{"a":tru}`, `{"a":nul}`, `{"a":falsey}`, `{"a":nulll}`, `{"a":t}`, "\xef\xbb\xbf{}", "\v{}", `{"a":1]`, `{"a":[}`,
	`{"entries":[{"name":"a"]}`, `{"entries":[{"name":"a"}}`, `{"entries":[{"name"}]}`, `{"entries":[{"name":}]}`,
	`{"entries":[{"name":"a",}]}`, `{"entries":[{1:2}]}`, `{"entries":[{"a":1 "b":2}]}`, `{"a":"b":"c"}`, `{"a"::1}`,
	`{"entries":[{"xattrs":{"a":"YQ==",}}]}`, `{"entries":[{"xattrs":{"a":[1,]}}]}`, `{"entries":[{"xattrs":{"a":[1 2]}}]}`,
	`{"entries":[{"name":"a","x":[1,2,]}]}`, `{"entries":[{"x":{"a":1,}}]}`, `{"entries":[{"x":[}]}]}`,
	// Valid values in unknown keys after an error of type, and the reverse.
	`{"entries":[{"size":"x","name":"a"}]}`, `{"entries":[{"name":"a","size":"x"}]} trailing`, `{"entries":[{"size":"x"}],"a":[}`,
	// Truncated.
	`{`, `{"`, `{"entries`, `{"entries"`, `{"entries":`, `{"entries":[`, `{"entries":[{`, `{"entries":[{"name":"a`,
	`{"entries":[{"name":"a\`, `{"entries":[{"name":"a\u00`, `{"entries":[{"size":12`, `{"entries":[{"size":-`,
	`{"entries":[{"size":1.`, `{"entries":[{"size":1e`, `{"entries":[{"name":nu`, `{"entries":[{}]`, `{"entries":[{}],"x":tr`,
}

func TestDecodeTOCEdgeCases(t *testing.T) {
	for i, s := range edgeCases {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			checkDecode(t, []byte(s))
			checkParse(t, tocMember(t, []byte(s)), DefaultMaxTOCJSONBytes)
		})
	}
}

// smallTOC is a TOC with an entry of each kind, indented as estargz
// writes it.
func smallTOC(t testing.TB) []byte {
	t.Helper()
	js, err := json.MarshalIndent(&estargz.JTOC{Version: 1, Entries: []*estargz.TOCEntry{
		{Name: "./", Type: "dir", Mode: 0o755, ModTime3339: "2026-01-01T00:00:00Z"},
		{Name: "a/b", Type: "reg", Size: 9, Offset: 100, Digest: "sha256:ab", ChunkDigest: "sha256:ab", Uname: "root", Gname: "wheel", ModTime3339: "2026-01-01T00:00:00Z",
			Xattrs: map[string][]byte{"user.x": {1, 2}, "user.empty": {}, "security.\u00e9": []byte("\xff\x00")}},
		{Name: "a/b", Type: "chunk", Offset: 200, ChunkOffset: 4, ChunkSize: 5, InnerOffset: 3, ChunkDigest: "sha256:cd"},
		{Name: "l\u2028\u00e9\"\\\n", Type: "symlink", LinkName: "a/b", UID: 1, GID: 2, DevMajor: 3, DevMinor: 4, Mode: -1, Size: -9223372036854775808},
	}}, "", "\t")
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// TestDecodeTOCTruncated checks every prefix of a TOC: all but the whole
// fail.
func TestDecodeTOCTruncated(t *testing.T) {
	full := smallTOC(t)
	for i := 0; i <= len(full); i++ {
		checkDecode(t, full[:i])
	}
}

func TestParseInt(t *testing.T) {
	for _, s := range []string{
		"0", "-0", "1", "-1", "42", "9223372036854775807", "-9223372036854775808", "9223372036854775808",
		"-9223372036854775809", "18446744073709551615", "18446744073709551616", "99999999999999999999",
		"922337203685477580", "9223372036854775800", "9223372036854775810", "1.5", "1e3", "-", "00012",
	} {
		want, err := strconv.ParseInt(s, 10, 64)
		got, ok := parseInt([]byte(s))
		if ok != (err == nil) || ok && got != want {
			t.Errorf("parseInt(%s) = %d, %v; strconv.ParseInt says %d, %v", s, got, ok, want, err)
		}
	}
}

// TestDecodeTOCDepth checks that nesting past encoding/json's limit fails.
func TestDecodeTOCDepth(t *testing.T) {
	// The top object and the entries array are 2 levels, an entry 3.
	for _, n := range []int{9997, 9998, 9999} {
		js := `{"entries":[{"x":` + strings.Repeat("[", n) + strings.Repeat("]", n) + `}]}`
		checkDecode(t, []byte(js))
		js = `{"x":` + strings.Repeat(`{"a":`, n) + "1" + strings.Repeat("}", n) + `}`
		checkDecode(t, []byte(js))
	}
}

// TestDecodeTOCAllFields sets every field that encoding/json fills and
// checks that decodeTOC fills it too: a field estargz adds would fail it.
func TestDecodeTOCAllFields(t *testing.T) {
	e := &estargz.TOCEntry{}
	v := reflect.ValueOf(e).Elem()
	n := 0
	for i := 0; i < v.NumField(); i++ {
		f := v.Type().Field(i)
		if !f.IsExported() || f.Tag.Get("json") == "-" {
			continue
		}
		n++
		switch fv := v.Field(i); fv.Kind() {
		case reflect.String:
			fv.SetString(fmt.Sprintf("value of %s", f.Name))
		case reflect.Int, reflect.Int64:
			fv.SetInt(int64(1000 + i))
		case reflect.Map:
			fv.Set(reflect.ValueOf(map[string][]byte{"user." + f.Name: []byte(f.Name)}))
		default:
			t.Fatalf("TOCEntry.%s is a %s, which decodeTOC does not decode", f.Name, fv.Kind())
		}
	}
	if n != len(entryFields) {
		t.Errorf("TOCEntry has %d JSON fields, decodeTOC knows %d", n, len(entryFields))
	}
	js, err := json.Marshal(&estargz.JTOC{Version: 7, Entries: []*estargz.TOCEntry{e, {}}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeTOC(bytes.NewReader(js))
	if err != nil {
		t.Fatal(err)
	}
	if want := (&estargz.JTOC{Version: 7, Entries: []*estargz.TOCEntry{e, {}}}); !reflect.DeepEqual(got, want) {
		t.Errorf("decodeTOC(%s) =\n%s\nwant\n%s", js, dump(got), dump(want))
	}
	checkDecode(t, js)
}

func TestDecodeTOCReadError(t *testing.T) {
	boom := errors.New("boom")
	js := `{"version":1,"entries":[{"name":"a"}]}`
	for i := 0; i < len(js); i++ {
		_, err := decodeTOC(io.MultiReader(strings.NewReader(js[:i]), iotest.ErrReader(boom)))
		if !errors.Is(err, boom) {
			t.Errorf("input cut at %d by a read error: error %v, want %v", i, err, boom)
		}
	}
	if _, err := decodeTOC(io.MultiReader(strings.NewReader(js), iotest.ErrReader(boom))); err != nil {
		t.Errorf("read error after the value: %v", err)
	}
}

func FuzzDecodeTOC(f *testing.F) {
	for _, s := range edgeCases {
		f.Add([]byte(s))
	}
	f.Add(smallTOC(f))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecode(t, data)
		// The same as an entry, where the fields are.
		checkDecode(t, append(append([]byte(`{"entries":[`), data...), "]}"...))
	})
}

// BenchmarkParseTOC parses the TOC of GOROOT/src (about 13,000 entries,
// 4 MB of JSON) with the old parseTOC (estargz's decompressor and
// encoding/json) and the new one; MB/s is of JSON.
func BenchmarkParseTOC(b *testing.B) {
	t := benchTOCs.get(b, benchSpec)[0]
	for _, p := range []struct {
		name  string
		parse func(io.Reader, int64) (*estargz.JTOC, digest.Digest, error)
	}{
		{"encoding-json", parseTOCV1},
		{"decodeTOC", parseTOC},
	} {
		b.Run(p.name, func(b *testing.B) {
			b.SetBytes(int64(len(t.json)))
			b.ReportAllocs()
			for b.Loop() {
				j, _, err := p.parse(bytes.NewReader(t.member), DefaultMaxTOCJSONBytes)
				if err != nil || len(j.Entries) != t.entries {
					b.Fatalf("%v, %d entries", err, len(j.Entries))
				}
			}
		})
	}
}

// BenchmarkDecodeTOC decodes the JSON alone.
func BenchmarkDecodeTOC(b *testing.B) {
	t := benchTOCs.get(b, benchSpec)[0]
	b.Run("encoding-json", func(b *testing.B) {
		b.SetBytes(int64(len(t.json)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := decodeV1(t.json); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decodeTOC", func(b *testing.B) {
		b.SetBytes(int64(len(t.json)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := decodeTOC(bytes.NewReader(t.json)); err != nil {
				b.Fatal(err)
			}
		}
	})
}
