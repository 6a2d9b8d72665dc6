//go:build goexperiment.jsonv2

package toc

import (
	"bytes"
	jsonv1 "encoding/json"
	"encoding/json/v2"
	"fmt"
	"testing"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/google/go-cmp/cmp"
)

// Run with GOEXPERIMENT=jsonv2 (Go 1.26):
//
//	GOEXPERIMENT=jsonv2 go test -run TestJSONv2 -bench DecodeTOCLibraries ./pkg/toc
//
// It measures decodeTOC against encoding/json/v2 (and v1) on TOCs of
// about 20,000 and 100,000 entries, to decide whether the hand-written
// decoder still earns its place (see doc.go).

// scaledTOC returns the JSON of GOROOT/src's TOC with its entries
// repeated under different directories until there are at least n.
func scaledTOC(tb testing.TB, n int) []byte {
	t := benchTOCs.get(tb, benchSpec)[0]
	var j estargz.JTOC
	if err := jsonv1.Unmarshal(t.json, &j); err != nil {
		tb.Fatal(err)
	}
	out := estargz.JTOC{Version: j.Version}
	for k := 0; len(out.Entries) < n; k++ {
		for _, e := range j.Entries {
			c := *e
			c.Name = fmt.Sprintf("copy%d/%s", k, e.Name)
			out.Entries = append(out.Entries, &c)
		}
	}
	b, err := jsonv1.Marshal(out)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// decodeV2 decodes like encoding/json (v1): names matched without regard
// to case, as decodeTOC does.
func decodeV2(data []byte) (*estargz.JTOC, error) {
	var j estargz.JTOC
	if err := json.Unmarshal(data, &j, json.MatchCaseInsensitiveNames(true)); err != nil {
		return nil, err
	}
	return &j, nil
}

func TestJSONv2SameTOC(t *testing.T) {
	data := scaledTOC(t, 20_000)
	want, err := decodeTOC(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeV2(data)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(dump(want), dump(got)); diff != "" {
		t.Errorf("encoding/json/v2 decodes the TOC differently (-decodeTOC +v2):\n%s", diff)
	}
}

func BenchmarkDecodeTOCLibraries(b *testing.B) {
	for _, n := range []int{20_000, 100_000} {
		data := scaledTOC(b, n)
		for _, d := range []struct {
			name   string
			decode func([]byte) (*estargz.JTOC, error)
		}{
			{"decodeTOC", func(p []byte) (*estargz.JTOC, error) { return decodeTOC(bytes.NewReader(p)) }},
			{"json-v2", decodeV2},
			{"json-v1", decodeV1},
		} {
			b.Run(fmt.Sprintf("%dk/%s", n/1000, d.name), func(b *testing.B) {
				b.SetBytes(int64(len(data)))
				b.ReportAllocs()
				for b.Loop() {
					j, err := d.decode(data)
					if err != nil || len(j.Entries) < n {
						b.Fatalf("%v", err)
					}
				}
			})
		}
	}
}
