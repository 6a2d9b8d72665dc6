package fetch

import "github.com/stargz-get/stargz-get/internal/libdeflate"

// SetWholeMembers turns decoding small gzip members whole with
// libdeflate on or off, and returns the setting to restore.
func SetWholeMembers(on bool) (restore func()) {
	was := useLibdeflate
	useLibdeflate = func() bool { return on && libdeflate.Load() == nil }
	return func() { useLibdeflate = was }
}

// WholeMembers returns how many gzip members were decoded whole so far.
func WholeMembers() int64 { return wholeMembers.Load() }

// Claimed returns how many of a's spans a run took over.
func (a *Ahead) Claimed() (n int) {
	for _, s := range a.spans {
		if s.claimed.Load() && !s.dropped.Load() {
			n++
		}
	}
	return n
}

// LargeMembers returns how many large gzip members were decoded whole.
func LargeMembers() int64 { return largeMembers.Load() }
