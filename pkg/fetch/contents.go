package fetch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"sync"

	"github.com/stargz-get/stargz-get/pkg/toc"
)

// File is a regular file whose contents Contents streams: an entry with
// chunks (a hardlink's source, not the hardlink) of an eStargz layer.
type File struct {
	Layer *Layer
	Entry *toc.Entry
}

// Bounds of the uncompressed bytes of one download task of Contents
// (window / jobs, so that the window holds a task per downloader): small
// files share a task (one request), large chunks are a task each.
const (
	minTaskBytes = 256 << 10
	maxTaskBytes = 4 << 20
)

// Contents writes the contents of files to w, one after the other in
// order, calling begin(i) before the first byte of files[i] (also for
// empty files). Chunks are downloaded in parallel (opts.Jobs at once) and
// written out in order as they arrive, with at most opts.Window bytes held
// at a time, so memory stays bounded whatever the file sizes. Each chunk
// is checked against its TOC digest before it is written, and each file
// against its file digest after its last byte; a mismatch stops the
// stream with an error wrapping ErrDigest (the bytes written before cannot
// be taken back).
func Contents(ctx context.Context, files []File, opts Options, begin func(i int) error, w io.Writer) error {
	opts = opts.withDefaults()
	src := opts.Chunks
	if src == nil {
		src = CachedChunks(opts.Cache, RemoteChunks(opts), opts.Logf)
		if c, ok := src.(io.Closer); ok {
			defer func() {
				if err := c.Close(); err != nil && opts.Logf != nil {
					opts.Logf("keeping chunks in the cache: %v", err)
				}
			}()
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	tasks := contentTasks(files, opts.MaxGap, min(max(opts.Window/int64(opts.Jobs), minTaskBytes), maxTaskBytes))
	budget := newBudget(opts.Window)
	jobs := make(chan struct{}, opts.Jobs)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Add(1)
	go func() { // starts tasks in order, as the window allows
		defer wg.Done()
		for _, t := range tasks {
			if !budget.take(ctx, t.bytes) {
				return
			}
			select {
			case jobs <- struct{}{}:
			case <-ctx.Done():
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-jobs }()
				t.bufs = make([][]byte, len(t.chunks))
				for i, c := range t.chunks {
					// Not pooled: a pool kept 30-40 MB more for W3 as
					// a tar stream (peak RSS 165-190 MB, against
					// 134-146) and saved no time on W1's 4 MiB chunks.
					t.bufs[i] = make([]byte, c.Size)
				}
				t.err = src.ReadChunks(ctx, t.layer, t.chunks, t.bufs)
				close(t.done)
			}()
		}
	}()
	ti, ci := 0, 0 // the next task, and the next chunk in it
	var h hash.Hash
	for i, f := range files {
		if err := begin(i); err != nil {
			return err
		}
		if len(f.Entry.Chunks) == 0 {
			continue
		}
		h = sha256.New()
		for range f.Entry.Chunks {
			t := tasks[ti]
			select {
			case <-t.done:
			case <-ctx.Done():
				return ctx.Err()
			}
			if t.err != nil {
				return fmt.Errorf("reading %s: %w", f.Entry.Name, t.err)
			}
			b := t.bufs[ci]
			if _, err := w.Write(b); err != nil {
				return err
			}
			h.Write(b)
			t.bufs[ci] = nil
			if ci++; ci == len(t.chunks) {
				budget.give(t.bytes)
				ti, ci = ti+1, 0
			}
		}
		if d := f.Entry.Digest; d != "" {
			if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != d {
				return fmt.Errorf("contents of %s: %w: got %s, TOC says %s", f.Entry.Name, ErrDigest, got, d)
			}
		} else if opts.RequireVerified {
			return fmt.Errorf("%s has no digest in its TOC, and unverified files are refused", f.Entry.Name)
		}
	}
	return nil
}

// contentTask is one download of Contents: chunks of one layer, sorted by
// offset, close enough to be one request.
type contentTask struct {
	layer  *Layer
	chunks []toc.Chunk
	bytes  int64
	done   chan struct{}
	bufs   [][]byte
	err    error
}

// contentTasks cuts the chunks of files, in order, into tasks.
func contentTasks(files []File, maxGap, taskBytes int64) []*contentTask {
	var tasks []*contentTask
	var cur *contentTask
	for _, f := range files {
		for _, c := range f.Entry.Chunks {
			if cur != nil && cur.layer == f.Layer && cur.bytes+c.Size <= taskBytes {
				last := cur.chunks[len(cur.chunks)-1]
				sorted := c.Offset > last.Offset || c.Offset == last.Offset && c.InnerOffset >= last.InnerOffset
				if sorted && c.Offset-last.End <= maxGap {
					cur.chunks = append(cur.chunks, c)
					cur.bytes += c.Size
					continue
				}
			}
			cur = &contentTask{layer: f.Layer, chunks: []toc.Chunk{c}, bytes: c.Size, done: make(chan struct{})}
			tasks = append(tasks, cur)
		}
	}
	return tasks
}

// budget counts the bytes in flight against a window.
type budget struct {
	mu    sync.Mutex
	avail int64
	max   int64
	wake  chan struct{}
}

func newBudget(n int64) *budget { return &budget{avail: n, max: n, wake: make(chan struct{}, 1)} }

// take waits until n bytes fit in the window (or the window is empty:
// one task larger than the window still runs), and reports false when
// ctx ends first.
func (b *budget) take(ctx context.Context, n int64) bool {
	for {
		b.mu.Lock()
		if b.avail >= n || b.avail == b.max {
			b.avail -= n
			b.mu.Unlock()
			return true
		}
		b.mu.Unlock()
		select {
		case <-b.wake:
		case <-ctx.Done():
			return false
		}
	}
}

func (b *budget) give(n int64) {
	b.mu.Lock()
	b.avail += n
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
}
