package fetch

import (
	"context"
	"slices"
	"strings"
	"sync"

	"github.com/stargz-get/stargz-get/pkg/cache"
	"github.com/stargz-get/stargz-get/pkg/toc"
)

// ChunkKind is the kind of cache entry (see pkg/cache) that verified
// uncompressed chunks are kept as, each under its own sha256 digest.
const ChunkKind = "chunk"

// chunkKey returns the digest a chunk of file e is cached under: its TOC
// chunk digest, or, for a file of one chunk without one, the file's
// digest; "" for a chunk that cannot be cached (a hole, no sha256 digest).
func chunkKey(e *toc.Entry, c toc.Chunk) string {
	if c.Zeros {
		return ""
	}
	d := c.Digest
	if d == "" && e != nil && c.FileOffset == 0 && c.Size == e.Size {
		d = e.Digest
	}
	if !strings.HasPrefix(d, "sha256:") {
		return ""
	}
	return d
}

// cacheHit is a chunk of a target that Run reads from the cache.
type cacheHit struct {
	t     *target
	chunk toc.Chunk
	key   string
	loc   cache.Loc // in a pack, or (Pack "") an entry of its own
}

// cachedChunkIndex returns where the cache holds chunks, by digest: in
// packs (as Run and CachedChunks keep them) or in entries of their own
// (cache.PutContent).
func cachedChunkIndex(c *cache.Cache) map[string]cache.Loc {
	idx := c.Packed(ChunkKind)
	for k := range c.Keys(ChunkKind) {
		if idx == nil {
			idx = map[string]cache.Loc{}
		}
		idx[k] = cache.Loc{}
	}
	return idx
}

// HasChunk returns a test of whether c holds the chunk of a digest,
// listing c's chunks once; nil when c holds none.
func HasChunk(c *cache.Cache) func(digest string) bool {
	have := cachedChunkIndex(c)
	if len(have) == 0 {
		return nil
	}
	return func(d string) bool { _, ok := have[d]; return ok }
}

// loadChunk reads a chunk from where the index says it is, checked
// against its digest.
func loadChunk(c *cache.Cache, key string, loc cache.Loc) ([]byte, error) {
	if loc.Pack != "" {
		return c.LoadPacked(ChunkKind, loc, key)
	}
	return c.LoadContent(ChunkKind, key)
}

// lookupCache finds the chunks of targets the cache holds (by listing the
// chunk entries once, not by a lookup per chunk), counts them as pending
// for their targets, and returns them in requests of their own, of up to
// cacheBatch chunks or maxTaskBytes, and the offsets of their members by
// layer, sorted (see plan). skip marks the hits for plan.
func (e *engine) lookupCache(targets []*target) ([]*request, map[*Layer][]int64) {
	have := cachedChunkIndex(e.opts.Cache)
	if len(have) == 0 {
		return nil, nil
	}
	offs := map[*Layer][]int64{}
	var reqs []*request
	var cur *request
	var curBytes int64
	for _, t := range targets {
		for i, c := range t.source.Chunks {
			k := chunkKey(t.source, c)
			loc, ok := have[k]
			if k == "" || !ok {
				continue
			}
			if t.skip == nil {
				t.skip = make([]bool, len(t.source.Chunks))
			}
			t.skip[i] = true
			t.pending++
			if cur == nil || len(cur.hits) >= cacheBatch || curBytes+c.Size > maxTaskBytes {
				cur = &request{layer: t.layer}
				curBytes = 0
				reqs = append(reqs, cur)
			}
			cur.hits = append(cur.hits, &cacheHit{t: t, chunk: c, key: k, loc: loc})
			curBytes += c.Size
			offs[t.layer] = append(offs[t.layer], c.Offset)
		}
	}
	for _, o := range offs {
		slices.Sort(o)
	}
	return reqs, offs
}

// cacheBatch is how many cached chunks one downloader reads in a row.
const cacheBatch = 64

// fromCache writes the chunks of a request of cache hits into their
// targets. A chunk whose entry is gone (evicted by another run) or fails
// its digest (removed, and said under -v) is downloaded instead: fromCache
// returns the requests that fetch those.
func (e *engine) fromCache(ctx context.Context, r *request) []*request {
	var more []*request
	for _, h := range r.hits {
		if err := ctx.Err(); err != nil {
			e.segmentFailed(h.t, err)
			continue
		}
		data, err := loadChunk(e.opts.Cache, h.key, h.loc)
		if err != nil {
			e.logf("chunk at %d of %s: %v; downloading it", h.chunk.FileOffset, h.t.source.Name, err)
		}
		if data == nil || int64(len(data)) != h.chunk.Size {
			more = append(more, e.missRequest(h))
			continue
		}
		f, err := e.open(h.t)
		if err == nil && f != nil {
			_, err = f.WriteAt(data, h.chunk.FileOffset)
		}
		if err == nil {
			h.t.mu.Lock()
			h.t.cached += h.chunk.Size
			h.t.mu.Unlock()
		}
		if err != nil {
			e.segmentFailed(h.t, err)
			continue
		}
		e.segmentDone(segWrite{h.t, h.chunk.FileOffset}, &segment{chunk: h.chunk}, h.key)
	}
	return more
}

// missRequest is the request downloading a chunk the cache failed to give.
func (e *engine) missRequest(h *cacheHit) *request {
	c := h.chunk
	m := &member{offset: c.Offset, end: c.End, codec: c.Codec,
		segments: []*segment{{chunk: c, writes: []segWrite{{h.t, c.FileOffset}}}}}
	l := h.t.layer
	r := &request{layer: l, members: []*member{m}, runs: []run{{start: c.Offset, end: c.End, last: 1}},
		local: l.TOC.Tail != nil && c.Offset >= l.TOC.TailStart}
	h.t.mu.Lock()
	h.t.requests++
	h.t.compressed += c.End - c.Offset
	h.t.mu.Unlock()
	return r
}

// CachedChunks returns a ChunkSource that answers from c the chunks it
// holds, by their TOC chunk digest (each checked against it on the way
// out: an entry that fails is removed, noted through logf, and read from
// src), and asks src for the rest, keeping what src returns in c, in a
// pack that its Close method (it is an io.Closer) makes visible. A nil c
// gives src itself.
func CachedChunks(c *cache.Cache, src ChunkSource, logf func(format string, args ...any)) ChunkSource {
	if c == nil {
		return src
	}
	if logf == nil {
		logf = func(string, ...any) {}
	}
	return &cachedChunks{c: c, src: src, logf: logf}
}

type cachedChunks struct {
	c    *cache.Cache
	src  ChunkSource
	logf func(format string, args ...any)

	once  sync.Once
	packs map[string]cache.Loc // chunks in packs, read once

	mu     sync.Mutex
	pack   *cache.Pack // what is read from src is appended here
	failed bool
}

func (cc *cachedChunks) ReadChunks(ctx context.Context, l *Layer, cs []toc.Chunk, dst [][]byte) error {
	var missCS []toc.Chunk
	var missDst [][]byte
	for i, c := range cs {
		k := chunkKey(nil, c)
		if k != "" {
			cc.once.Do(func() { cc.packs = cc.c.Packed(ChunkKind) })
			// Packed first: most chunks are in packs, and a lookup of an
			// entry of its own is a failed file open each.
			loc := cc.packs[k] // Pack "" when not packed: loadChunk reads the entry
			data, err := loadChunk(cc.c, k, loc)
			if err != nil {
				cc.logf("chunk at %d of member %d: %v; downloading it", c.FileOffset, c.Offset, err)
			}
			if data != nil && len(data) == len(dst[i]) {
				copy(dst[i], data)
				continue
			}
		}
		missCS = append(missCS, c)
		missDst = append(missDst, dst[i])
	}
	if len(missCS) == 0 {
		return nil
	}
	if err := cc.src.ReadChunks(ctx, l, missCS, missDst); err != nil {
		return err
	}
	cc.mu.Lock()
	defer cc.mu.Unlock()
	for i, c := range missCS {
		// Checked against its digest by src (RemoteChunks does).
		if k := chunkKey(nil, c); k != "" && !cc.failed {
			if cc.pack == nil {
				cc.pack, _ = cc.c.NewPack(ChunkKind)
			}
			if err := cc.pack.Add(k, missDst[i]); err != nil {
				cc.failed = true
				cc.logf("keeping chunks in the cache: %v", err)
			}
		}
	}
	return nil
}

// Close makes the chunks kept visible to other runs (they are appended to
// a pack, see cache.Pack).
func (cc *cachedChunks) Close() error {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.pack == nil || cc.failed {
		return nil
	}
	err := cc.pack.Close()
	cc.pack = nil
	return err
}
