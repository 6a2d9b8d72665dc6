package sgfetch_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stargz-get/stargz-get/internal/sgfetch"
	"github.com/stargz-get/stargz-get/internal/testenv"
	"github.com/stargz-get/stargz-get/pkg/wire"
)

// Registries refuse multi-range requests in different ways (GCR 400,
// GHCR's blob CDN 501, zot and object stores 416, S3 and proxy caches the
// whole blob, some servers only the first range as a plain 206). sg-fetch
// must still fetch every file, verified; read the ranges it did not get in
// parallel; and not ask that registry for several ranges again in the run.
func TestMultiRangeRefused(t *testing.T) {
	multi := func(r *http.Request) bool { return strings.Contains(r.Header.Get("Range"), ",") }
	single := func(r *http.Request) bool {
		rng := r.Header.Get("Range")
		return rng != "" && !strings.Contains(rng, ",")
	}
	blobs := testenv.MatchBlobs
	// Single ranges are slowed down, so that reading them one after
	// another and reading them in parallel look different to the proxy.
	slow := testenv.Rule{Match: testenv.MatchAll(blobs, single), Fault: testenv.Fault{Latency: 40 * time.Millisecond}}
	for _, tc := range []struct {
		name string
		rule testenv.Rule
		cdn  int // blob storage behind a redirect refuses several ranges with this
		log  string
	}{
		{name: "400 (GCR)", rule: testenv.Rule{Match: testenv.MatchAll(blobs, multi), Fault: testenv.Fault{Status: http.StatusBadRequest}}, log: "answered 400 Bad Request to a request for"},
		{name: "501", rule: testenv.Rule{Match: testenv.MatchAll(blobs, multi), Fault: testenv.Fault{Status: http.StatusNotImplemented}}, log: "answered 501 Not Implemented"},
		{name: "416 (zot, object stores)", rule: testenv.Rule{Match: testenv.MatchAll(blobs, multi), Fault: testenv.Fault{Status: http.StatusRequestedRangeNotSatisfiable}}, log: "answered 416"},
		{name: "whole blob (S3, proxy cache miss)", rule: testenv.Rule{Match: testenv.MatchAll(blobs, multi), Fault: testenv.Fault{IgnoreRange: true}}, log: "answered 200 OK"},
		{name: "first range only, plain 206", rule: testenv.Rule{Match: testenv.MatchAll(blobs, multi), Fault: testenv.Fault{FirstRange: true}}, log: "only"},
		{name: "CDN behind a redirect answers 501 (GHCR)", rule: testenv.Rule{Match: blobs, Fault: testenv.Fault{Redirect: true}}, cdn: http.StatusNotImplemented, log: "answered 501 Not Implemented"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			proxy, err := testenv.StartFaultProxy(reg.Host)
			if err != nil {
				t.Fatal(err)
			}
			defer proxy.Close()
			if tc.cdn != 0 {
				proxy.Storage.RefuseMultiRange(tc.cdn)
			}
			// Every 20th non-empty regular file of two layers of the
			// layered image and of GoTree: scattered ranges in three blobs.
			var args []string
			var names []string
			layer := fixtures.GoTree.Layers[0]
			n := 0
			for _, f := range layer.Files {
				if f.Type == "reg" && f.Size > 0 {
					if n++; n%20 == 0 {
						names = append(names, f.Name)
					}
				}
			}
			image := proxy.Host + "/" + fixtures.GoTree.Name + ":" + fixtures.GoTree.Tag
			out := t.TempDir()
			args = append([]string{"-v", "-o", out, "-j", "4", image, "0"}, names...)
			if tc.cdn == 0 {
				proxy.Add(slow)
			}
			proxy.Add(tc.rule)
			var stdout, stderr bytes.Buffer
			if err := sgfetch.Run(context.Background(), args, strings.NewReader(""), &stdout, &stderr); err != nil {
				t.Fatalf("sg-fetch: %v\n%s", err, tail(stderr.String()))
			}
			fetched := 0
			for _, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
				var r wire.Result
				if err := json.Unmarshal([]byte(line), &r); err != nil {
					t.Fatalf("result %q: %v", line, err)
				}
				if r.Status == wire.StatusFetched {
					fetched++
				}
			}
			if fetched != len(names) {
				t.Errorf("%d of %d files fetched", fetched, len(names))
			}
			if err := testenv.CheckTree(out, layer.Files, names); err != nil {
				t.Error(err)
			}
			if !strings.Contains(stderr.String(), tc.log) {
				t.Errorf("no log line says %q:\n%s", tc.log, tail(stderr.String()))
			}
			if got := strings.Count(stderr.String(), "for one range at a time from now on"); got != 1 {
				t.Errorf("%d log lines say the registry is asked range by range, want 1", got)
			}

			// No multi-range request once a refusal was answered.
			var refusedAt time.Time
			var singles []testenv.Seen
			seen := proxy.Seen()
			if tc.cdn != 0 {
				seen = nil // the storage is asked directly; count its refusals
				if got := proxy.Storage.Refused(); len(got) == 0 {
					t.Errorf("blob storage refused nothing; the multi-range request did not reach it")
				}
			}
			for _, s := range seen {
				switch {
				case s.Path == "" || !strings.Contains(s.Path, "/blobs/"):
				case strings.Contains(s.Range, ","):
					if !refusedAt.IsZero() && s.Start.After(refusedAt) {
						t.Errorf("a multi-range request (%.40s...) went out after the registry refused one", s.Range)
					}
					if refusedAt.IsZero() || s.Answered.Before(refusedAt) {
						refusedAt = s.Answered
					}
				case s.Range != "":
					singles = append(singles, s)
				}
			}
			if tc.cdn == 0 {
				if max := overlap(singles); max < 2 {
					t.Errorf("at most %d single-range requests at a time after the refusal, want them in parallel", max)
				}
			}
		})
	}
}

// overlap returns the largest number of requests in flight at once.
func overlap(ss []testenv.Seen) int {
	type ev struct {
		at time.Time
		d  int
	}
	var evs []ev
	for _, s := range ss {
		evs = append(evs, ev{s.Start, 1}, ev{s.Answered, -1})
	}
	sort.Slice(evs, func(i, j int) bool {
		if evs[i].at.Equal(evs[j].at) {
			return evs[i].d < evs[j].d
		}
		return evs[i].at.Before(evs[j].at)
	})
	cur, best := 0, 0
	for _, e := range evs {
		cur += e.d
		best = max(best, cur)
	}
	return best
}

func tail(s string) string {
	if len(s) > 3000 {
		return "..." + s[len(s)-3000:]
	}
	return s
}
