package fetch

// Near the end of a fetch the downloaders run out of requests while a few
// long ones are still being read, each on one connection: W3's last 0.1 s
// ran at half the link's rate, on the two or three connections left. A
// downloader left without a request takes over the second half of the
// longest one still being read (its members from a boundary near the
// middle of what is left), and the downloader reading that one stops at
// that boundary. What it had asked for past there and not yet received
// is dropped with its connection.

// stealMin is the least a request must have left to be split: the new
// request costs a round trip before its bytes flow, and its half should
// take longer than that at one connection's rate. (A variable for tests.)
var stealMin int64 = 1 << 20

// stealable says whether r can be split by stealing: a download of one
// run, not served from memory (taken when it was queued).
func (r *request) stealable() bool {
	return r.hits == nil && !r.local && len(r.runs) == 1
}

// reading records that r's reader starts member i, and says whether it
// is still r's: false when it was stolen, and the reader is to stop.
func (r *request) reading(i int) bool {
	r.stealMu.Lock()
	defer r.stealMu.Unlock()
	if i >= r.end() {
		return false
	}
	r.at = i
	return true
}

// end returns how many of r.members are r's: all, or those before the
// first stolen.
func (r *request) end() int {
	if r.stolen > 0 {
		return r.stolen
	}
	return len(r.members)
}

// steal splits off the second half of what r has left to read, if it is
// at least stealMin bytes, and returns it as a request of its own.
func (r *request) steal() *request {
	r.stealMu.Lock()
	defer r.stealMu.Unlock()
	end := r.end()
	if r.at+1 >= end {
		return nil
	}
	from, to := r.members[r.at].offset, r.members[end-1].end
	if to-from < stealMin {
		return nil
	}
	k := r.at + 1
	for k < end-1 && r.members[k].offset < from+(to-from)/2 {
		k++
	}
	runEnd := r.members[end-1].end
	if end == len(r.members) {
		runEnd = r.runs[0].end
	}
	ms := r.members[k:end]
	r.stolen = k
	return &request{layer: r.layer, members: ms, runs: []run{{start: ms[0].offset, end: runEnd, last: len(ms)}}}
}

// remaining returns the compressed bytes r has left to read.
func (r *request) remaining() int64 {
	r.stealMu.Lock()
	defer r.stealMu.Unlock()
	end := r.end()
	if r.at >= end {
		return 0
	}
	return r.members[end-1].end - r.members[r.at].offset
}

// stopAt returns end() under the lock, for the reader's own use.
func (r *request) stopAt() int {
	r.stealMu.Lock()
	defer r.stealMu.Unlock()
	return r.end()
}
