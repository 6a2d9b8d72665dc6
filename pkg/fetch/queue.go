package fetch

import "sync"

// queue hands requests to the downloaders. Unlike a fixed list, it takes
// requests while it is being worked on: a multi-range request that the
// server refuses is split into one request per range, and those go back
// into the queue so that every downloader can take one (see engine.split).
type queue struct {
	mu     sync.Mutex
	cond   sync.Cond
	items  []*request
	active int // requests taken and not yet done
}

func newQueue(reqs []*request) *queue {
	q := &queue{items: reqs}
	q.cond.L = &q.mu
	return q
}

// take returns the next request, waiting while the queue is empty but a
// request in progress may still add to it; nil when all work is done.
func (q *queue) take() *request {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.items) == 0 && q.active > 0 {
		q.cond.Wait()
	}
	if len(q.items) == 0 {
		return nil
	}
	r := q.items[0]
	q.items = q.items[1:]
	q.active++
	return r
}

// done marks a taken request finished, queueing the requests it was split
// into, if any.
func (q *queue) done(more ...*request) {
	q.mu.Lock()
	q.items = append(q.items, more...)
	q.active--
	q.mu.Unlock()
	q.cond.Broadcast()
}
