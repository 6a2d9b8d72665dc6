package fetch

import "sync"

// queue hands requests to the downloaders. Unlike a fixed list, it takes
// requests while it is being worked on: a multi-range request that the
// server refuses is split into one request per range, and those go back
// into the queue so that every downloader can take one (see engine.split);
// and a downloader that finds it empty while others are still reading
// takes over half of the longest request left (see steal.go).
type queue struct {
	mu      sync.Mutex
	cond    sync.Cond
	items   []*request
	running map[*request]bool // taken and not yet done; true when stealable
	split   func(nr *request) // accounts for a stolen request's files
}

func newQueue(reqs []*request, split func(nr *request)) *queue {
	q := &queue{items: reqs, running: map[*request]bool{}, split: split}
	q.cond.L = &q.mu
	return q
}

// take returns the next request, or half of the longest one being read,
// waiting while there is neither but a request in progress may still add
// to the queue; nil when all work is done.
func (q *queue) take() *request {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.items) == 0 && len(q.running) > 0 {
		if r := q.steal(); r != nil {
			q.running[r] = r.stealable()
			return r
		}
		q.cond.Wait()
	}
	if len(q.items) == 0 {
		return nil
	}
	r := q.items[0]
	q.items = q.items[1:]
	q.running[r] = r.stealable()
	return r
}

// steal splits the running request with the most bytes left, if any has
// enough, and returns the part split off.
func (q *queue) steal() *request {
	var victim *request
	var most int64
	for r, ok := range q.running {
		if !ok {
			continue
		}
		if n := r.remaining(); n > most {
			victim, most = r, n
		}
	}
	if victim == nil {
		return nil
	}
	nr := victim.steal()
	if nr != nil && q.split != nil {
		q.split(nr)
	}
	return nr
}

// done marks a taken request finished, queueing the requests it was split
// into, if any.
func (q *queue) done(r *request, more ...*request) {
	q.mu.Lock()
	q.items = append(q.items, more...)
	delete(q.running, r)
	q.mu.Unlock()
	q.cond.Broadcast()
}
