package heapfloor

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
)

// DefaultFloor is the heap goal the tools keep at least: well under their
// 100 MiB memory budget, and above the working set of a 20k-entry layer.
const DefaultFloor = 64 << 20

// RunFloor is the floor once a tool's working set is built (sg-fetch's
// TOCs and entries, before the downloads): the collection a lower floor
// costs there is one or two, and the memory it frees is the buffers'
// room (W3's peak RSS, see BENCHMARKS.md).
const RunFloor = 32 << 20

// Set keeps the heap goal at floor bytes or more, for the life of the
// process, unless GOGC is set in the environment. Above the floor the GC
// percentage in force when Set is first called applies (a tool may lower
// it from GOGC's 100 to keep its peak memory down). Call it early; a
// later call changes the floor.
func Set(floor uint64) {
	if _, ok := os.LookupEnv("GOGC"); ok || floor == 0 {
		return
	}
	if active.Load() != 0 {
		// Set before: base is the percentage then, not the one this
		// package has put in force since.
		active.Store(floor)
		apply(floor)
		return
	}
	pct := debug.SetGCPercent(100)
	debug.SetGCPercent(pct)
	if pct <= 0 {
		return // collection off, or a setting this package cannot improve on
	}
	base.Store(int64(pct))
	if active.Swap(floor) == 0 {
		arm()
	}
	apply(floor)
}

// active is the floor in force, 0 for none (the cleanup chain then ends);
// base is the GC percentage above it.
var (
	active atomic.Uint64
	base   atomic.Int64
)

// sentinel is an object made unreachable at once, so that a cleanup runs
// after each collection. It holds a pointer so that it is not a tiny
// allocation, whose cleanups may wait for neighbours to die.
type sentinel struct{ p *int }

func arm() {
	s := &sentinel{p: new(int)}
	runtime.AddCleanup(s, func(struct{}) {
		if floor := active.Load(); floor != 0 {
			apply(floor)
			arm()
		}
	}, struct{}{})
}

// apply sets the GC percentage for the live heap measured last.
func apply(floor uint64) {
	debug.SetGCPercent(Percent(floor, liveHeap(), int(base.Load())))
}

// Percent is the GC percentage that puts the next heap goal at
// max(floor, live×(1+pct/100)) for a live heap of live bytes.
func Percent(floor, live uint64, pct int) int {
	if live == 0 {
		live = 4 << 20 // the runtime's goal before the first collection
	}
	if live*uint64(100+pct)/100 >= floor {
		return pct
	}
	return int((floor*100+live-1)/live) - 100 // rounded up: the goal is not under the floor
}

// liveHeap is the heap the last collection found live, 0 before the first.
func liveHeap() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}
