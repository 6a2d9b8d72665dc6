package heapfloor

import (
	"os"
	"runtime"
	"runtime/debug"
	"testing"
)

func TestPercent(t *testing.T) {
	const floor = 64 << 20
	for _, c := range []struct {
		live uint64
		pct  int
		want int
	}{
		{0, 100, 1500},        // before the first collection: 4 MiB x 16
		{4 << 20, 100, 1500},  // the same, measured
		{16 << 20, 100, 300},  // 16 MiB x 4 = the floor
		{31 << 20, 100, 107},  // just under half the floor
		{32 << 20, 100, 100},  // 2 x live reaches the floor
		{500 << 20, 100, 100}, // far above: the percentage set
		{40 << 20, 50, 60},    // under the floor at 50%: raised
		{43 << 20, 50, 50},    // 1.5 x live is over the floor
		{500 << 20, 50, 50},
	} {
		got := Percent(floor, c.live, c.pct)
		if got != c.want {
			t.Errorf("Percent(64 MiB, %d MiB, %d) = %d, want %d", c.live>>20, c.pct, got, c.want)
		}
		if live := max(c.live, 4<<20); live*uint64(100+got)/100 < floor {
			t.Errorf("Percent(64 MiB, %d MiB, %d) = %d puts the goal under the floor", c.live>>20, c.pct, got)
		}
	}
}

var sink []byte

// churn allocates n bytes of garbage in 64 KiB pieces, and returns how many
// collections ran meanwhile.
func churn(n int) uint32 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := 0; i < n; i += 64 << 10 {
		sink = make([]byte, 64<<10)
	}
	runtime.ReadMemStats(&after)
	return after.NumGC - before.NumGC
}

// TestSetRaisesTheGoal measures the point of the package: a small heap
// churning 56 MiB of garbage collects many times at the runtime's default,
// and at most once above a 64 MiB floor. A collection between the two runs
// starts both from the same small live heap.
func TestSetRaisesTheGoal(t *testing.T) {
	if _, ok := os.LookupEnv("GOGC"); ok {
		t.Skip("GOGC is set, and Set leaves the user's setting alone")
	}
	active.Store(0) // a floor of an earlier run (-count) ends with the next cleanup
	runtime.GC()
	old := debug.SetGCPercent(100)
	defer func() {
		active.Store(0)
		debug.SetGCPercent(old)
	}()
	runtime.GC()
	without := churn(56 << 20)
	if without < 2 {
		t.Fatalf("without a floor 56 MiB of garbage ran %d collections; the test expects several", without)
	}
	runtime.GC()
	Set(DefaultFloor)
	with := churn(56 << 20)
	if with > 1 || with >= without {
		t.Errorf("with a 64 MiB floor 56 MiB of garbage ran %d collections, want at most 1 (without: %d)", with, without)
	}
	t.Logf("collections for 56 MiB of garbage: %d without the floor, %d with it", without, with)
}

// TestSetAgainChangesTheFloor: a later Set lowers the floor, and the
// percentage above it stays the one in force at the first Set, not the
// one the floor had put in force since.
func TestSetAgainChangesTheFloor(t *testing.T) {
	if _, ok := os.LookupEnv("GOGC"); ok {
		t.Skip("GOGC is set, and Set leaves the user's setting alone")
	}
	active.Store(0)
	runtime.GC()
	old := debug.SetGCPercent(50)
	defer func() {
		active.Store(0)
		debug.SetGCPercent(old)
	}()
	runtime.GC()
	Set(DefaultFloor)
	high := churn(56 << 20)
	Set(4 << 20)
	if got := base.Load(); got != 50 {
		t.Errorf("percentage above the floor %d after a second Set, want the first's 50", got)
	}
	low := churn(56 << 20)
	if low <= high {
		t.Errorf("56 MiB of garbage ran %d collections under a 4 MiB floor, %d under 64 MiB; want more", low, high)
	}
}
