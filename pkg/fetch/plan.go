package fetch

import (
	"sort"

	"github.com/stargz-get/stargz-get/pkg/toc"
)

// segment is one chunk's bytes inside a member, written to one or more
// targets (several when files share contents, e.g. a hardlink fetched as a
// copy beside its source).
type segment struct {
	chunk   toc.Chunk
	targets []*target
	done    bool // verified and written; a retried request skips the accounting
}

// member is one gzip member of a layer blob and the segments wanted from it.
type member struct {
	offset, end int64
	segments    []*segment // sorted by InnerOffset
}

// request is one HTTP Range request: consecutive members of one layer.
type request struct {
	layer      *Layer
	start, end int64
	members    []*member
	local      bool // served from the tail read with the TOC
}

// plan groups the chunks of targets by member and merges members into
// requests. maxGap is the largest gap of unwanted bytes worth downloading to
// save a request; maxReq caps a request's size (a single larger member is a
// request of its own).
func plan(targets []*target, maxGap, maxReq int64) []*request {
	type key struct {
		layer  *Layer
		offset int64
	}
	members := map[key]*member{}
	segs := map[key]map[[2]int64]*segment{}
	byLayer := map[*Layer][]*member{}
	var layers []*Layer
	for _, t := range targets {
		for _, c := range t.source.Chunks {
			k := key{t.layer, c.Offset}
			m, ok := members[k]
			if !ok {
				m = &member{offset: c.Offset, end: c.End}
				members[k] = m
				segs[k] = map[[2]int64]*segment{}
				if len(byLayer[t.layer]) == 0 {
					layers = append(layers, t.layer)
				}
				byLayer[t.layer] = append(byLayer[t.layer], m)
			}
			sk := [2]int64{c.InnerOffset, c.Size}
			s, ok := segs[k][sk]
			if !ok {
				s = &segment{chunk: c}
				segs[k][sk] = s
				m.segments = append(m.segments, s)
			}
			s.targets = append(s.targets, t)
			t.pending++
		}
	}
	var reqs []*request
	for _, l := range layers {
		ms := byLayer[l]
		sort.Slice(ms, func(i, j int) bool { return ms[i].offset < ms[j].offset })
		var cur *request
		for _, m := range ms {
			sort.Slice(m.segments, func(i, j int) bool { return m.segments[i].chunk.InnerOffset < m.segments[j].chunk.InnerOffset })
			// Members in the tail read with the TOC are served from memory,
			// in requests of their own.
			local := l.TOC.Tail != nil && m.offset >= l.TOC.TailStart
			if cur != nil && m.offset-cur.end <= maxGap && m.end-cur.start <= maxReq && local == cur.local {
				cur.members = append(cur.members, m)
				cur.end = m.end
				continue
			}
			cur = &request{layer: l, start: m.offset, end: m.end, members: []*member{m}, local: local}
			reqs = append(reqs, cur)
		}
	}
	for _, r := range reqs {
		for _, m := range r.members {
			for _, s := range m.segments {
				for _, t := range s.targets {
					t.requests[r] = struct{}{}
					t.compressed += m.end - m.offset
				}
			}
		}
	}
	return reqs
}

// requestCap picks the request size cap: large enough that per-request
// overhead is small, small enough that total work spreads over all jobs.
func requestCap(total int64, jobs int, max, min int64) int64 {
	c := total / int64(jobs*2)
	if c > max {
		c = max
	}
	if c < min {
		c = min
	}
	return c
}
