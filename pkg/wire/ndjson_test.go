package wire_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/google/go-cmp/cmp"

	"github.com/stargz-get/stargz-get/pkg/wire"
)

// Realistic values, taken from the GoTree fixture.
const (
	testRef      = "localhost:5000/fixtures/gotree:v1"
	testManifest = "sha256:8b6e498bd8e38d55e10c67b756a5e51a6851cbdfbdd4dcdd5168d789dd40e079"
	testLayer    = "sha256:8518038b783e6e92aae2a3104199d92b333503209e5a21a62ee0c8e3a652f1a3"
	testTOC      = "sha256:5ef3adfa06f4b5e8b3688bb9354a39accbe76bfa92ac0d323a347b8721216e0a"
	testFile     = "sha256:35a3d5047c156a1395c4c197fad5a99e123567a12ae7bc08ba7d5c723281ae03"
)

// Input lines used by several tests.
const (
	layerLine = `{"ref":"` + testRef + `","manifest":"` + testManifest + `","platform":"linux/amd64","index":0,"digest":"` + testLayer + `","size":16058577,"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","format":"estargz","tocDigest":"` + testTOC + `","uncompressedSize":48829952}`
	netLine   = `{"ref":"` + testRef + `","layer":"` + testLayer + `","name":"usr/local/go/src/net/net.go","type":"reg","size":28354,"mode":420,"digest":"` + testFile + `","chunks":1}`
	dirLine   = `{"ref":"` + testRef + `","layer":"` + testLayer + `","name":"usr/local/go","type":"dir","mode":493}`
)

var (
	layerRec = &wire.Layer{
		Ref: testRef, Manifest: testManifest, Platform: "linux/amd64", Index: 0,
		Digest: testLayer, Size: 16058577, MediaType: "application/vnd.oci.image.layer.v1.tar+gzip",
		Format: wire.FormatEStargz, TOCDigest: testTOC, UncompressedSize: 48829952,
	}
	netRec = &wire.Entry{
		Ref: testRef, Layer: testLayer, Name: "usr/local/go/src/net/net.go", Type: wire.TypeReg,
		Size: 28354, Mode: 0o644, Digest: testFile, Chunks: 1,
	}
	dirRec = &wire.Entry{Ref: testRef, Layer: testLayer, Name: "usr/local/go", Type: wire.TypeDir, Mode: 0o755}
)

// step is the outcome of one Decode call: a record, or a *LineError
// flattened to its line number and message.
type step struct {
	Rec  any
	Line int    // of a *LineError
	Err  string // the error's text; in a want, a substring of it
}

// decodeAll calls Decode with a fresh record from newRec until io.EOF,
// recording every outcome. Decoding goes on after errors, which shows that
// the decoder resynchronizes on the next line. It fails the test on an
// error that is not a *LineError, or when a call neither returns io.EOF
// nor moves on to a later line.
func decodeAll(t *testing.T, dec *wire.Decoder, newRec func() any) []step {
	t.Helper()
	var steps []step
	for range 1000 {
		prev := dec.Line()
		rec := newRec()
		err := dec.Decode(rec)
		if err == io.EOF {
			return steps
		}
		if dec.Line() <= prev {
			t.Fatalf("Decode returned %v without moving past line %d", err, prev)
		}
		if err != nil {
			var le *wire.LineError
			if !errors.As(err, &le) {
				t.Fatalf("Decode error %v (%T) is not a *wire.LineError", err, err)
			}
			if le.Line != dec.Line() {
				t.Errorf("LineError.Line = %d, Decoder.Line() = %d", le.Line, dec.Line())
			}
			steps = append(steps, step{Line: le.Line, Err: err.Error()})
			continue
		}
		steps = append(steps, step{Rec: rec})
	}
	t.Fatal("Decode did not reach io.EOF after 1000 calls")
	return nil
}

// matchErrs replaces each error message in got by the want's when the
// want's is a substring of it, so that cmp.Diff shows only real
// differences.
func matchErrs(want, got []step) {
	for i := range min(len(want), len(got)) {
		if want[i].Err != "" && strings.Contains(got[i].Err, want[i].Err) {
			got[i].Err = want[i].Err
		}
	}
}

func newEntry() any  { return new(wire.Entry) }
func newLayer() any  { return new(wire.Layer) }
func newResult() any { return new(wire.Result) }

func TestDecoder(t *testing.T) {
	long := strings.Repeat("x", 100<<10) // longer than the decoder's read buffer
	longRec := &wire.Entry{Ref: testRef, Layer: testLayer, Name: long, Type: wire.TypeReg}
	longLine := `{"ref":"` + testRef + `","layer":"` + testLayer + `","name":"` + long + `","type":"reg"}`

	tests := []struct {
		name    string
		in      string
		source  string // default "stdin"
		maxLine int    // SetMaxLineBytes when not zero
		newRec  func() any
		want    []step
	}{
		{
			name:   "empty input",
			in:     "",
			newRec: newEntry,
		},
		{
			name:   "only blank lines",
			in:     "\n\n   \n\t\r\n",
			newRec: newEntry,
		},
		{
			name:   "good entries",
			in:     netLine + "\n" + dirLine + "\n",
			newRec: newEntry,
			want:   []step{{Rec: netRec}, {Rec: dirRec}},
		},
		{
			name:   "good layer",
			in:     layerLine + "\n",
			newRec: newLayer,
			want:   []step{{Rec: layerRec}},
		},
		{
			name:   "blank lines skipped",
			in:     "\n" + netLine + "\n\n  \t \n" + dirLine + "\n\n",
			newRec: newEntry,
			want:   []step{{Rec: netRec}, {Rec: dirRec}},
		},
		{
			name:   "surrounding white space",
			in:     "  \t" + netLine + " \t\n",
			newRec: newEntry,
			want:   []step{{Rec: netRec}},
		},
		{
			name: "unknown fields ignored",
			in: `{"future":{"nested":[1,2,{"x":null}]},"ref":"` + testRef + `","layer":"` + testLayer +
				`","name":"usr/local/go","type":"dir","mode":493,"chunkList":[],"priority":true}` + "\n",
			newRec: newEntry,
			want:   []step{{Rec: dirRec}},
		},
		{
			name:   "error on line 3 after two good lines",
			in:     netLine + "\n" + dirLine + "\n" + `{"ref":` + "\n",
			newRec: newEntry,
			want:   []step{{Rec: netRec}, {Rec: dirRec}, {Line: 3, Err: "stdin line 3: invalid JSON"}},
		},
		{
			name:   "blank lines count",
			in:     "\n\n" + netLine + "\n\n" + "nope\n",
			newRec: newEntry,
			want:   []step{{Rec: netRec}, {Line: 5, Err: "stdin line 5: not a JSON object"}},
		},
		{
			name:   "source names the input",
			in:     "[]\n",
			source: "entries.ndjson",
			newRec: newEntry,
			want:   []step{{Line: 1, Err: `entries.ndjson line 1: not a JSON object: "[]"`}},
		},
		{
			name:   "decoding goes on after a bad line",
			in:     netLine + "\n{\n" + dirLine + "\n",
			newRec: newEntry,
			want:   []step{{Rec: netRec}, {Line: 2, Err: "stdin line 2: invalid JSON"}, {Rec: dirRec}},
		},
		{
			name:   "not an object",
			in:     "[1,2]\n\"usr/bin/node\"\nnull\n42\ntrue\nusr/local/go/src/net/net.go\n",
			newRec: newEntry,
			want: []step{
				{Line: 1, Err: `stdin line 1: not a JSON object: "[1,2]"`},
				{Line: 2, Err: `stdin line 2: not a JSON object: "\"usr/bin/node\""`},
				{Line: 3, Err: `stdin line 3: not a JSON object: "null"`},
				{Line: 4, Err: `stdin line 4: not a JSON object: "42"`},
				{Line: 5, Err: `stdin line 5: not a JSON object: "true"`},
				{Line: 6, Err: `stdin line 6: not a JSON object: "usr/local/go/src/net/net.go"`},
			},
		},
		{
			name:   "not an object is abbreviated",
			in:     strings.Repeat("a", 100) + "\n",
			newRec: newEntry,
			want:   []step{{Line: 1, Err: `stdin line 1: not a JSON object: "` + strings.Repeat("a", 40) + `..."`}},
		},
		{
			name:   "truncated JSON",
			in:     netLine[:len(netLine)/2] + "\n",
			newRec: newEntry,
			want:   []step{{Line: 1, Err: "stdin line 1: invalid JSON"}},
		},
		{
			name:   "truncated JSON at end of input",
			in:     netLine + "\n" + netLine[:len(netLine)-1],
			newRec: newEntry,
			want:   []step{{Rec: netRec}, {Line: 2, Err: "stdin line 2: invalid JSON"}},
		},
		{
			name:   "two objects on a line",
			in:     netLine + " " + dirLine + "\n",
			newRec: newEntry,
			want:   []step{{Line: 1, Err: "stdin line 1: invalid JSON"}},
		},
		{
			name:   "object split over two lines",
			in:     "{\"ref\":\"" + testRef + "\",\n\"layer\":\"" + testLayer + "\",\"name\":\"a\"}\n",
			newRec: newEntry,
			want: []step{
				{Line: 1, Err: "stdin line 1: invalid JSON"},
				{Line: 2, Err: "stdin line 2: not a JSON object"},
			},
		},
		{
			name:   "wrong type",
			in:     `{"ref":"` + testRef + `","layer":"` + testLayer + `","name":"a","type":"reg","size":"big"}` + "\n",
			newRec: newEntry,
			want:   []step{{Line: 1, Err: `stdin line 1: field "size": cannot use JSON string as int64`}},
		},
		{
			name:   "wrong type in layer",
			in:     layerLine + "\n" + `{"ref":"r","digest":"d","index":"first"}` + "\n",
			newRec: newLayer,
			want:   []step{{Rec: layerRec}, {Line: 2, Err: `stdin line 2: field "index": cannot use JSON string as int`}},
		},
		{
			name:   "fraction for an integer",
			in:     `{"ref":"r","layer":"l","name":"a","mode":420.5}` + "\n",
			newRec: newEntry,
			want:   []step{{Line: 1, Err: `stdin line 1: field "mode": cannot use JSON number 420.5 as int64`}},
		},
		{
			name:   "xattr not base64",
			in:     `{"ref":"r","layer":"l","name":"a","xattrs":{"user.x":"%%%"}}` + "\n",
			newRec: newEntry,
			want:   []step{{Line: 1, Err: "stdin line 1: "}},
		},
		{
			name: "entry missing required fields",
			in: strings.Join([]string{
				`{}`,
				`{"layer":"` + testLayer + `","name":"a"}`,
				`{"ref":"` + testRef + `","name":"a"}`,
				`{"ref":"` + testRef + `","layer":"` + testLayer + `","type":"reg"}`,
				`{"ref":"","layer":"` + testLayer + `","name":"a"}`,
				// The root directory of a layer has an empty name.
				`{"ref":"` + testRef + `","layer":"` + testLayer + `","type":"dir"}`,
			}, "\n") + "\n",
			newRec: newEntry,
			want: []step{
				{Line: 1, Err: `stdin line 1: missing field "ref" (expected a file entry from sg-ls)`},
				{Line: 2, Err: `stdin line 2: missing field "ref" (expected a file entry from sg-ls)`},
				{Line: 3, Err: `stdin line 3: missing field "layer" (expected a file entry from sg-ls)`},
				{Line: 4, Err: `stdin line 4: missing field "name" (expected a file entry from sg-ls)`},
				{Line: 5, Err: `stdin line 5: missing field "ref" (expected a file entry from sg-ls)`},
				{Rec: &wire.Entry{Ref: testRef, Layer: testLayer, Type: wire.TypeDir}},
			},
		},
		{
			name: "layer missing required fields",
			in: strings.Join([]string{
				`{}`,
				`{"digest":"` + testLayer + `"}`,
				`{"ref":"` + testRef + `","index":2}`,
				// A directory entry is not a layer record.
				dirLine,
			}, "\n") + "\n",
			newRec: newLayer,
			want: []step{
				{Line: 1, Err: `stdin line 1: missing field "ref" (expected a layer record from sg-layers)`},
				{Line: 2, Err: `stdin line 2: missing field "ref" (expected a layer record from sg-layers)`},
				{Line: 3, Err: `stdin line 3: missing field "digest" (expected a layer record from sg-layers)`},
				{Line: 4, Err: `stdin line 4: missing field "digest" (expected a layer record from sg-layers)`},
			},
		},
		{
			name:   "layer record is not an entry",
			in:     layerLine + "\n",
			newRec: newEntry,
			want:   []step{{Line: 1, Err: `stdin line 1: missing field "layer" (expected a file entry from sg-ls)`}},
		},
		{
			name:   "result",
			in:     `{"ref":"r","layer":"l","name":"a","type":"reg","path":"out/a","size":3,"status":"fetched","verified":"toc","requests":1}` + "\n",
			newRec: newResult,
			want: []step{{Rec: &wire.Result{
				Ref: "r", Layer: "l", Name: "a", Type: wire.TypeReg, Path: "out/a", Size: 3,
				Status: wire.StatusFetched, Verified: "toc", Requests: 1,
			}}},
		},
		{
			name:    "over-long line beyond the read buffer, then a good line",
			in:      longLine + "\n" + netLine + "\n",
			maxLine: 1 << 10,
			newRec:  newEntry,
			want:    []step{{Line: 1, Err: "stdin line 1: line longer than 1024 bytes"}, {Rec: netRec}},
		},
		{
			name:    "over-long line, then a good line",
			in:      netLine + "\n" + netLine + "\n" + dirLine + "\n",
			maxLine: len(dirLine) + 1,
			newRec:  newEntry,
			want: []step{
				{Line: 1, Err: "stdin line 1: line longer than"},
				{Line: 2, Err: "stdin line 2: line longer than"},
				{Rec: dirRec},
			},
		},
		{
			name:    "over-long last line without newline",
			in:      netLine + "\n" + longLine,
			maxLine: 1 << 10,
			newRec:  newEntry,
			want:    []step{{Rec: netRec}, {Line: 2, Err: "stdin line 2: line longer than 1024 bytes"}},
		},
		{
			name:   "default limit",
			in:     `{"ref":"` + strings.Repeat("r", wire.DefaultMaxLineBytes) + `"}` + "\n" + netLine + "\n",
			newRec: newEntry,
			want:   []step{{Line: 1, Err: "stdin line 1: line longer than 1048576 bytes"}, {Rec: netRec}},
		},
		{
			name:   "line longer than the read buffer within the limit",
			in:     longLine + "\n" + netLine + "\n" + longLine,
			newRec: newEntry,
			want:   []step{{Rec: longRec}, {Rec: netRec}, {Rec: longRec}},
		},
		{
			name:   "last line without newline",
			in:     netLine + "\n" + dirLine,
			newRec: newEntry,
			want:   []step{{Rec: netRec}, {Rec: dirRec}},
		},
		{
			name:   "CRLF line endings",
			in:     netLine + "\r\n\r\n" + dirLine + "\r\n" + "[]\r\n",
			newRec: newEntry,
			want:   []step{{Rec: netRec}, {Rec: dirRec}, {Line: 4, Err: `stdin line 4: not a JSON object: "[]"`}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			source := tc.source
			if source == "" {
				source = "stdin"
			}
			dec := wire.NewDecoder(strings.NewReader(tc.in), source)
			if tc.maxLine != 0 {
				dec.SetMaxLineBytes(tc.maxLine)
			}
			got := decodeAll(t, dec, tc.newRec)
			matchErrs(tc.want, got)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Decode outcomes (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecoderLineError(t *testing.T) {
	dec := wire.NewDecoder(strings.NewReader(netLine+"\n\n"+`{"ref":"`+testRef+`","layer":"`+testLayer+`","size":"big"}`+"\n"), "stdin")
	if err := dec.Decode(new(wire.Entry)); err != nil {
		t.Fatal(err)
	}
	err := dec.Decode(new(wire.Entry))
	var le *wire.LineError
	if !errors.As(err, &le) {
		t.Fatalf("Decode error %v is not a *wire.LineError", err)
	}
	if le.Source != "stdin" || le.Line != 3 || le.Err == nil {
		t.Errorf("LineError{Source: %q, Line: %d, Err: %v}, want stdin, line 3 and an error", le.Source, le.Line, le.Err)
	}
	if !errors.Is(err, le.Err) {
		t.Errorf("errors.Is(err, err.Err) is false; LineError does not unwrap")
	}
	if err := dec.Decode(new(wire.Entry)); err != io.EOF {
		t.Errorf("Decode after the last line: %v, want io.EOF", err)
	}
}

// A failing reader is reported as such, not as a line error.
func TestDecoderReadError(t *testing.T) {
	boom := errors.New("boom")
	dec := wire.NewDecoder(io.MultiReader(strings.NewReader(netLine+"\n"+`{"ref":`), iotest.ErrReader(boom)), "stdin")
	if err := dec.Decode(new(wire.Entry)); err != nil {
		t.Fatalf("first line: %v", err)
	}
	err := dec.Decode(new(wire.Entry))
	if !errors.Is(err, boom) {
		t.Fatalf("Decode error %v, want one wrapping %v", err, boom)
	}
	if !strings.Contains(err.Error(), "stdin") {
		t.Errorf("Decode error %q does not name the input", err)
	}
}

// The example records in testdata are what the tools print; each decodes
// as its own kind and encodes back to the same line.
func TestDecodeTestdata(t *testing.T) {
	data, err := os.ReadFile("testdata/records.ndjson")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	kinds := []func() any{newLayer, newEntry, newEntry, newEntry, newEntry, newResult, newResult}
	if len(lines) != len(kinds) {
		t.Fatalf("testdata has %d lines, test knows %d", len(lines), len(kinds))
	}
	for i, line := range lines {
		rec := kinds[i]()
		if err := wire.NewDecoder(strings.NewReader(line), "testdata").Decode(rec); err != nil {
			t.Errorf("line %d: %v", i+1, err)
			continue
		}
		var buf bytes.Buffer
		if err := wire.NewEncoder(&buf).Encode(rec); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(line+"\n", buf.String()); diff != "" {
			t.Errorf("line %d encodes differently (-testdata +encoded):\n%s", i+1, diff)
		}
	}
}

// countingWriter counts Write calls.
type countingWriter struct {
	bytes.Buffer
	writes int
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.writes++
	return w.Buffer.Write(p)
}

func TestEncoderOneLinePerRecord(t *testing.T) {
	recs := []any{
		layerRec,
		netRec,
		&wire.Entry{Ref: testRef, Layer: testLayer, Name: "odd\nname\r\twith\u2028separators", Type: wire.TypeReg},
		&wire.Result{Ref: testRef, Layer: testLayer, Name: "a", Status: wire.StatusFailed, Error: "line one\nline two"},
	}
	var w countingWriter
	enc := wire.NewEncoder(&w)
	for _, r := range recs {
		if err := enc.Encode(r); err != nil {
			t.Fatal(err)
		}
	}
	if w.writes != len(recs) {
		t.Errorf("%d Write calls for %d records, want one each", w.writes, len(recs))
	}
	out := w.String()
	if !strings.HasSuffix(out, "\n") {
		t.Fatalf("output does not end in a newline: %q", out)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != len(recs) {
		t.Fatalf("%d lines for %d records:\n%s", len(lines), len(recs), out)
	}
	for i, line := range lines {
		if strings.ContainsAny(line, "\r\u2028\u2029") {
			t.Errorf("line %d holds a line separator: %q", i+1, line)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Errorf("line %d is not a JSON object: %v", i+1, err)
		}
		if strings.HasPrefix(line, " ") || strings.Contains(line, "\": ") {
			t.Errorf("line %d is pretty-printed: %s", i+1, line)
		}
	}
}

func TestEncoderNoHTMLEscaping(t *testing.T) {
	var buf bytes.Buffer
	e := &wire.Entry{Ref: "r", Layer: "l", Name: "usr/include/<a&b>.h", Type: wire.TypeReg, LinkName: "x>y"}
	if err := wire.NewEncoder(&buf).Encode(e); err != nil {
		t.Fatal(err)
	}
	got := buf.String()
	for _, want := range []string{`"name":"usr/include/<a&b>.h"`, `"linkName":"x>y"`} {
		if !strings.Contains(got, want) {
			t.Errorf("encoded %s\nwant it to contain %s", got, want)
		}
	}
	if strings.Contains(got, `\u00`) {
		t.Errorf("encoded %s\nwith HTML escapes", got)
	}
}

func TestEncoderErrors(t *testing.T) {
	if err := wire.NewEncoder(io.Discard).Encode(make(chan int)); err == nil || !strings.Contains(err.Error(), "encoding record") {
		t.Errorf("Encode(chan): %v, want an encoding error", err)
	}
	boom := errors.New("boom")
	if err := wire.NewEncoder(errWriter{boom}).Encode(netRec); !errors.Is(err, boom) {
		t.Errorf("Encode to a failing writer: %v, want %v", err, boom)
	}
}

type errWriter struct{ err error }

func (w errWriter) Write([]byte) (int, error) { return 0, w.err }

func TestRoundTrip(t *testing.T) {
	recs := []any{
		layerRec,
		&wire.Layer{Ref: "r", Digest: "d", Format: wire.FormatGzip}, // optional fields empty
		netRec,
		dirRec,
		&wire.Entry{
			Ref: testRef, Manifest: testManifest, Layer: testLayer,
			Name: "usr/local/go/misc/name with space ü.txt", Type: wire.TypeReg, Size: 12, Mode: 0o4755,
			UID: 1000, GID: 1000, UserName: "gopher", GroupName: "staff", ModTime: "2024-01-02T03:04:05Z",
			Digest: testFile, Chunks: 3, Offset: 4096, CompressedSize: 9000, ChunkOffsets: []int64{7000, 8500},
			Xattrs: map[string][]byte{
				"user.comment":        []byte("hi<&>"),
				"security.capability": {0x01, 0x00, 0x00, 0x02, 0xff, 0xfe, 0x00},
				"user.empty":          {},
			},
		},
		&wire.Entry{Ref: "r", Layer: "l", Name: "dev/null", Type: wire.TypeChar, Mode: 0o666, DevMajor: 1, DevMinor: 3},
		&wire.Entry{Ref: "r", Layer: "l", Name: "bin/sh", Type: wire.TypeSymlink, LinkName: "/usr/bin/dash"},
		&wire.Result{
			Ref: testRef, Layer: testLayer, Name: "usr/local/go/src/net/net.go", Type: wire.TypeReg,
			Path: "out/usr/local/go/src/net/net.go", Size: 28354, Digest: testFile, Status: wire.StatusFetched,
			Verified: "toc", CompressedBytes: 8211, Requests: 1, DurationMs: 12,
		},
	}
	var buf bytes.Buffer
	enc := wire.NewEncoder(&buf)
	for _, r := range recs {
		if err := enc.Encode(r); err != nil {
			t.Fatal(err)
		}
	}
	dec := wire.NewDecoder(&buf, "stdin")
	for i, want := range recs {
		got := newLike(want)
		if err := dec.Decode(got); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("record %d after Encode and Decode (-want +got):\n%s", i, diff)
		}
	}
	if err := dec.Decode(new(wire.Entry)); err != io.EOF {
		t.Errorf("Decode after the last record: %v, want io.EOF", err)
	}
}

// newLike returns a new zero record of the type rec points to.
func newLike(rec any) any {
	switch rec.(type) {
	case *wire.Layer:
		return new(wire.Layer)
	case *wire.Entry:
		return new(wire.Entry)
	case *wire.Result:
		return new(wire.Result)
	}
	panic("unknown record type")
}

// Empty optional fields are left out, so lines stay short and a consumer
// can tell "absent" from a value with jq's has().
func TestEncodeOmitsEmptyOptionalFields(t *testing.T) {
	tests := []struct {
		name string
		rec  any
		want string
	}{
		{
			name: "result",
			rec:  &wire.Result{Ref: "r", Layer: "l", Name: "a/b", Type: wire.TypeDir, Path: "out/a/b", Status: wire.StatusFetched},
			want: `{"ref":"r","layer":"l","name":"a/b","type":"dir","path":"out/a/b","size":0,"status":"fetched"}`,
		},
		{
			name: "entry",
			rec:  &wire.Entry{Ref: "r", Layer: "l", Name: "a", Type: wire.TypeReg, Xattrs: map[string][]byte{}},
			want: `{"ref":"r","layer":"l","name":"a","type":"reg","size":0,"mode":0,"uid":0,"gid":0}`,
		},
		{
			name: "layer",
			rec:  &wire.Layer{Ref: "r", Digest: "d", Format: wire.FormatUnknown},
			want: `{"ref":"r","index":0,"digest":"d","size":0,"format":"unknown"}`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := wire.NewEncoder(&buf).Encode(tc.rec); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want+"\n", buf.String()); diff != "" {
				t.Errorf("encoded line (-want +got):\n%s", diff)
			}
		})
	}

	// Every optional field set, then each cleared: its key disappears.
	full := wire.Result{
		Ref: "r", Layer: "l", Name: "a", Type: wire.TypeReg, Path: "out/a", Size: 1, Digest: "sha256:x",
		Status: wire.StatusFailed, Error: "e", Verified: "toc", CompressedBytes: 1, Requests: 1, DurationMs: 1,
	}
	optional := map[string]func(*wire.Result){
		"digest":          func(r *wire.Result) { r.Digest = "" },
		"error":           func(r *wire.Result) { r.Error = "" },
		"verified":        func(r *wire.Result) { r.Verified = "" },
		"compressedBytes": func(r *wire.Result) { r.CompressedBytes = 0 },
		"requests":        func(r *wire.Result) { r.Requests = 0 },
		"durationMs":      func(r *wire.Result) { r.DurationMs = 0 },
	}
	allKeys := keysOf(t, &full)
	for key, clear := range optional {
		r := full
		clear(&r)
		want := slices.DeleteFunc(slices.Clone(allKeys), func(k string) bool { return k == key })
		if diff := cmp.Diff(want, keysOf(t, &r)); diff != "" {
			t.Errorf("keys of a result without %s (-want +got):\n%s", key, diff)
		}
	}
}

// keysOf encodes rec and returns the keys of the object, sorted.
func keysOf(t *testing.T, rec any) []string {
	t.Helper()
	var buf bytes.Buffer
	if err := wire.NewEncoder(&buf).Encode(rec); err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Result does not check required fields (it has no Validate method), so a
// consumer of sg-fetch output gets no line error for "{}". This test pins
// down the expected behaviour and skips while Result is not a Validator.
func TestDecodeResultRequiredFields(t *testing.T) {
	if _, ok := any(new(wire.Result)).(wire.Validator); !ok {
		t.Skip("known gap: wire.Result has no Validate method, so lines lacking ref, layer, name or status are accepted")
	}
	dec := wire.NewDecoder(strings.NewReader("{}\n"), "stdin")
	err := dec.Decode(new(wire.Result))
	var le *wire.LineError
	if !errors.As(err, &le) || le.Line != 1 || !strings.Contains(err.Error(), "missing field") {
		t.Errorf("Decode({}) into a Result: %v, want a line 1 missing-field error", err)
	}
}
