package wire_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/stargz-get/stargz-get/pkg/wire"
)

// FuzzDecode feeds arbitrary input to a Decoder for each record type.
// Properties: Decode never panics; every call either returns io.EOF or
// moves to a later line; every error is a *wire.LineError naming that
// line; and every record Decode accepts encodes to one line that decodes
// to an equal record.
//
// The seeds (the lines of testdata/records.ndjson and some malformed ones)
// run in every "go test"; "go test -fuzz FuzzDecode ./pkg/wire" explores.
func FuzzDecode(f *testing.F) {
	data, err := os.ReadFile("testdata/records.ndjson")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
	for line := range strings.Lines(string(data)) {
		f.Add([]byte(line))
		f.Add([]byte(strings.TrimSuffix(line, "\n")))
		f.Add([]byte(strings.ReplaceAll(line, "\n", "\r\n")))
		f.Add([]byte(line[:len(line)/2]))
	}
	for _, s := range []string{
		"",
		"\n\n \t\r\n",
		"{}",
		"[]\n{}\nnull\n",
		`{"ref":"r","layer":"l","name":"a","xattrs":{}}`,
		`{"ref":"r","layer":"l","name":"a","xattrs":{"k":null,"":""}}`,
		`{"ref":"r","layer":"l","name":"\ud800","size":-1,"mode":1e2}`,
		`{"ref":"r","digest":"d","REF":"R","Digest":"D","index":-0}`,
		`{"ref":"r","layer":"l","name":"a","size":"big"}`,
		"{\"ref\":\"r\xff\",\"layer\":\"l\",\"name\":\"\xc3\"}",
		"\ufeff{\"ref\":\"r\",\"digest\":\"d\"}",
		"\u00a0{\"ref\":\"r\",\"digest\":\"d\"}\u0085\n",
		`{"ref":"r","layer":"l","name":"a"} {"ref":"r"}`,
		`{"ref":"r","layer":"l","name":"a","status":"fetched","durationMs":9223372036854775807}`,
		`{"ref":"r","layer":"l","name":"a","size":9223372036854775808}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		for _, newRec := range []func() any{newLayer, newEntry, newResult} {
			dec := wire.NewDecoder(bytes.NewReader(in), "fuzz")
			if len(in) > 4<<10 {
				dec.SetMaxLineBytes(4 << 10) // keep long inputs fast, and exercise the limit
			}
			maxLines := bytes.Count(in, []byte("\n")) + 1
			for {
				prev := dec.Line()
				rec := newRec()
				err := dec.Decode(rec)
				if err == io.EOF {
					break
				}
				if dec.Line() <= prev || dec.Line() > maxLines {
					t.Fatalf("Decode (%v) moved from line %d to line %d of %d", err, prev, dec.Line(), maxLines)
				}
				if err != nil {
					var le *wire.LineError
					if !errors.As(err, &le) || le.Source != "fuzz" || le.Line != dec.Line() {
						t.Fatalf("Decode error %#v is not a *wire.LineError for fuzz line %d", err, dec.Line())
					}
					continue
				}
				if v, ok := rec.(wire.Validator); ok {
					if err := v.Validate(); err != nil {
						t.Fatalf("Decode accepted %+v, which does not validate: %v", rec, err)
					}
				}
				got := roundTrip(t, rec)
				if diff := cmp.Diff(rec, got, equateEmpty); diff != "" {
					t.Fatalf("record changed in Encode and Decode (-decoded +re-decoded):\n%s", diff)
				}
			}
		}
	})
}

// roundTrip encodes rec and decodes it into a new record of its type.
func roundTrip(t *testing.T, rec any) any {
	t.Helper()
	var buf bytes.Buffer
	if err := wire.NewEncoder(&buf).Encode(rec); err != nil {
		t.Fatalf("encoding a decoded record: %v", err)
	}
	line := buf.Bytes()
	if bytes.Count(line, []byte("\n")) != 1 || line[len(line)-1] != '\n' {
		t.Fatalf("encoded record is not one line: %q", line)
	}
	dec := wire.NewDecoder(bufio.NewReader(&buf), "re-encoded")
	got := newLike(rec)
	if err := dec.Decode(got); err != nil {
		t.Fatalf("decoding the re-encoded record %q: %v", line, err)
	}
	if err := dec.Decode(newLike(rec)); err != io.EOF {
		t.Fatalf("second Decode of one re-encoded record: %v, want io.EOF", err)
	}
	return got
}

// equateEmpty treats a nil and an empty Xattrs map (or value) alike: the
// encoder leaves an empty map out, which decodes as nil.
var equateEmpty = cmpopts.EquateEmpty()

// FuzzDecodeAsEncodingJSON checks that the decoder wire uses (a faster one)
// reads every line as the standard library's encoding/json does: the same
// lines are accepted, into equal records. Records that pass JSON but fail
// Validate are compared too, since Validate runs after either decoder.
func FuzzDecodeAsEncodingJSON(f *testing.F) {
	data, err := os.ReadFile("testdata/records.ndjson")
	if err != nil {
		f.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		f.Add([]byte(strings.TrimSpace(line)))
	}
	for _, s := range []string{
		`{"ref":"r","digest":"d","REF":"R","Digest":"D","index":-0}`,
		"{\"ref\":\"r\xff\",\"layer\":\"l\",\"name\":\"\xc3\"}",
		`{"ref":"r","layer":"l","name":"\ud800\udc00\ud800","size":1e2,"mode":-0}`,
		`{"ref":"r","layer":"l","name":"a","xattrs":{"k":"AAA=","k":"AA=="},"before":{"name":"b"}}`,
		`{"ref":"r","layer":"l","name":"a","size":"big"}`,
		`{"ref":"r","layer":"l","name":"a","size":null,"chunks":1.0}`,
		`{"name":"a\u0000b","NAME":"c","Name":"d"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] != '{' || bytes.ContainsAny(line, "\r\n") {
			return // not one record line: Next and DecodeLine see no such line
		}
		for _, newRec := range []func() any{newLayer, newEntry, newResult} {
			want, got := newRec(), newRec()
			stdErr := json.Unmarshal(line, want)
			dec := wire.NewDecoder(bytes.NewReader(line), "fuzz")
			_, n, err := dec.Next()
			if err != nil {
				t.Fatalf("Next: %v", err)
			}
			wireErr := dec.DecodeLine(line, n, got)
			var le *wire.LineError
			if wireErr != nil && !errors.As(wireErr, &le) {
				t.Fatalf("DecodeLine error %#v is not a *wire.LineError", wireErr)
			}
			if stdErr != nil {
				if wireErr == nil {
					t.Fatalf("wire decoded %q, which encoding/json refuses (%v), into %+v", line, stdErr, got)
				}
				continue
			}
			if wireErr != nil {
				if v, ok := want.(wire.Validator); ok && v.Validate() != nil {
					continue // refused by Validate, as it should be
				}
				t.Fatalf("wire refused %q, which encoding/json reads: %v", line, wireErr)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("records of %q differ (-encoding/json +wire):\n%s", line, diff)
			}
		}
	})
}
