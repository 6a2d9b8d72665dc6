package fetch

import (
	"cmp"
	"slices"
	"sort"

	"github.com/stargz-get/stargz-get/pkg/toc"
)

// segment is one chunk's bytes inside a member, written to one or more
// places: several when files share contents (e.g. a hardlink fetched as a
// copy beside its source), or when chunks of one file share compressed
// bytes.
type segment struct {
	chunk  toc.Chunk
	writes []segWrite
	done   bool // verified and written; a retried request skips the accounting
}

// segWrite is where a segment's bytes go: a target, at an offset.
type segWrite struct {
	t   *target
	off int64
}

// member is one compressed span of a layer blob (a gzip member, or zstd
// frames) and the segments wanted from it.
type member struct {
	offset, end int64
	codec       toc.Codec
	segments    []*segment // sorted by InnerOffset
}

// request is one HTTP request: one or more runs of consecutive members of
// one layer (several runs are asked for with one multi-range request).
type request struct {
	layer   *Layer
	members []*member // of all runs, by offset
	runs    []run
	local   bool // served from the tail read with the TOC
	// hits, when set, are chunks read from the cache (see fromCache);
	// such a request has no members.
	hits []*cacheHit
}

// run is a stretch of a layer blob downloaded in one piece: the members
// of its request from the previous run's last up to last (exclusive), and
// the gaps between them.
type run struct {
	start, end int64
	last       int
}

// bytes returns how many compressed bytes the request downloads.
func (r *request) bytes() int64 {
	var n int64
	for _, x := range r.runs {
		n += x.end - x.start
	}
	return n
}

// plan groups the chunks of targets by member, merges neighbouring
// members into runs and runs into requests. maxGap is the largest gap of
// unwanted bytes worth downloading to save a run; maxReq is the share of
// the bytes each request aims at (see below), hardCap the most a request
// holds (Options.MaxRequestBytes; a single larger member is a request of
// its own). Runs are spread
// over the jobs, at least minRunsPerRequest and at most maxRuns to a
// request. cached holds, by layer and sorted, the offsets of members whose
// chunks come from the cache: a gap holding one is never downloaded to
// join two runs (its bytes would be moved for nothing, and a new tag's
// changed files lie between such members).
func plan(targets []*target, maxGap, maxReq, hardCap int64, jobs, maxRuns int, cached map[*Layer][]int64) []*request {
	type key struct {
		layer  *Layer
		offset int64
	}
	type segKey struct {
		member            key
		innerOffset, size int64
	}
	members := make(map[key]*member, len(targets))
	segs := make(map[segKey]*segment, len(targets))
	byLayer := map[*Layer][]*member{}
	var layers []*Layer
	// Chunks mostly come in blob order: one past the highest offset seen
	// in its layer is of a member not seen yet, and needs no look-up.
	highest := map[*Layer]int64{}
	for _, t := range targets {
		for i, c := range t.source.Chunks {
			if c.Zeros {
				continue // a hole: nothing to download (see commit)
			}
			if t.skip != nil && t.skip[i] {
				continue // read from the cache
			}
			k := key{t.layer, c.Offset}
			var m *member
			h, seen := highest[t.layer]
			fresh := !seen || c.Offset > h
			if fresh {
				highest[t.layer] = c.Offset
			} else {
				m = members[k]
			}
			if m == nil {
				m = &member{offset: c.Offset, end: c.End, codec: c.Codec}
				members[k] = m
				if len(byLayer[t.layer]) == 0 {
					layers = append(layers, t.layer)
				}
				byLayer[t.layer] = append(byLayer[t.layer], m)
			}
			sk := segKey{k, c.InnerOffset, c.Size}
			var s *segment
			if !fresh {
				s = segs[sk]
			}
			if s == nil {
				s = &segment{chunk: c}
				segs[sk] = s
				m.segments = append(m.segments, s)
			}
			s.writes = append(s.writes, segWrite{t, c.FileOffset})
			t.pending++
		}
	}
	runsOf := map[*Layer][]*request{}
	nruns := 0
	// at is where the next member starts in all the members' bytes laid
	// end to end; a member belongs to the request share (of maxReq bytes)
	// its middle falls in. Cutting at those shares, not at the last member
	// boundary below the cap, makes a whole layer as many requests of about
	// equal size as there are jobs, all started at once and ending
	// together: cutting below the cap made a few more, which started only
	// as the first ones ended and ran on alone (W3: 18 requests for 16
	// jobs, the last two begun 0.5 s in).
	var at int64
	bucket := make(map[*request]int64)
	for _, l := range layers {
		ms := byLayer[l]
		slices.SortFunc(ms, func(a, b *member) int { return cmp.Compare(a.offset, b.offset) })
		// Runs first: members joined across small gaps.
		var runs []*request
		var cur *request
		for _, m := range ms {
			if len(m.segments) > 1 {
				slices.SortFunc(m.segments, func(a, b *segment) int { return cmp.Compare(a.chunk.InnerOffset, b.chunk.InnerOffset) })
			}
			share := (at + (m.end-m.offset)/2) / maxReq
			at += m.end - m.offset
			// A member in a span read ahead belongs to the span's request,
			// which its first run takes over (see Ahead); the span's bytes
			// come whatever lies between its members.
			k, ahead := l.Ahead.spanOf(m.offset)
			if ahead {
				share = -1 - int64(k)
			}
			// Members in the tail read with the TOC are served from memory,
			// in runs of their own.
			local := l.TOC.Tail != nil && m.offset >= l.TOC.TailStart
			if cur != nil && share == bucket[cur] && local == cur.local &&
				(ahead || m.offset-cur.runs[0].end <= maxGap && m.end-cur.runs[0].start <= hardCap && !holdsCached(cached[l], cur.runs[0].end, m.offset)) {
				cur.members = append(cur.members, m)
				cur.runs[0].end = m.end
				cur.runs[0].last++
				continue
			}
			cur = &request{layer: l, members: []*member{m}, runs: []run{{start: m.offset, end: m.end, last: 1}}, local: local}
			bucket[cur] = share
			runs = append(runs, cur)
		}
		runsOf[l] = runs
		nruns += len(runs)
	}
	// Then runs joined into multi-range requests, up to the caps. Few
	// requests with many ranges beat many with few: the distribution
	// registry serves the 100 ranges of the benchmark's W2 as 2 requests
	// in 16 ms, as 15 in 33 ms, and one by one in 93 ms. The size cap
	// still spreads large downloads over the jobs.
	runsPerReq := min(max((nruns+jobs-1)/jobs, minRunsPerRequest), maxRuns)
	var reqs []*request
	for _, l := range layers {
		var req *request
		for _, x := range runsOf[l] {
			// Runs in spans read ahead (negative shares) stay requests
			// of their own, to take their spans over.
			if req != nil && bucket[x] >= 0 && bucket[req] >= 0 && !x.local && !req.local && len(req.runs) < runsPerReq && (bucket[x] == bucket[req] || req.bytes()+x.bytes() <= maxReq) && req.bytes()+x.bytes() <= hardCap {
				x.runs[0].last += len(req.members)
				req.runs = append(req.runs, x.runs[0])
				req.members = append(req.members, x.members...)
				continue
			}
			req = x
			reqs = append(reqs, req)
		}
	}
	for _, r := range reqs {
		for _, m := range r.members {
			for _, s := range m.segments {
				for _, w := range s.writes {
					t := w.t
					if t.lastReq != r {
						t.lastReq = r
						t.requests++
					}
					t.compressed += m.end - m.offset
				}
			}
		}
	}
	return reqs
}

// holdsCached reports whether one of the sorted offsets offs is in
// [from, to).
func holdsCached(offs []int64, from, to int64) bool {
	i := sort.Search(len(offs), func(i int) bool { return offs[i] >= from })
	return i < len(offs) && offs[i] < to
}

// minRunsPerRequest is how many runs a multi-range request carries at
// least (when there are as many), see plan.
const minRunsPerRequest = 32

// requestCap picks the request size cap: large enough that per-request
// overhead is small, small enough that total work spreads over all jobs.
// One request per job, not two: a file of many small zstd frames (W1-zstd,
// 482 frames in 10 MB) then comes in one round of 16 parallel requests
// instead of two rounds of round trips (0.26 s -> 0.23 s at 20 ms RTT),
// and whole layers are no slower (W3 1.14 s -> 1.07 s).
func requestCap(total int64, jobs int, max, min int64) int64 {
	c := total / int64(jobs)
	if c > max {
		c = max
	}
	if c < min {
		c = min
	}
	return c
}
