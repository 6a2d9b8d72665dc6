package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The machine may be shared (other builds and tests on the same cores), so
// every run measures the CPU time spent by processes that are not part of
// the benchmark: all busy CPU time of the machine (/proc/stat) minus this
// process (the proxy), the registry and the measured process. Runs with
// more of it than -max-noise cores on average are repeated.

// clockTick is USER_HZ, the unit of /proc/stat and /proc/PID/stat times;
// 100 on every Linux architecture Go supports.
const clockTick = time.Second / 100

// cpuSnap is a moment's CPU counters.
type cpuSnap struct {
	at       time.Time
	busy     time.Duration // all CPUs, all processes
	self     time.Duration // this process
	registry time.Duration
	ok       bool
}

func takeSnap(registryPID int) cpuSnap {
	s := cpuSnap{at: time.Now()}
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return s
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 9 || f[0] != "cpu" {
		return s
	}
	// user nice system idle iowait irq softirq steal
	for i, v := range f[1:9] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		s.busy += time.Duration(n) * clockTick
	}
	s.self = selfCPU()
	if registryPID > 0 {
		s.registry, _ = procCPU(registryPID)
	}
	s.ok = true
	return s
}

// foreign returns the CPU time of other processes between a and b, given
// the CPU time of the measured process tree, and the average number of
// cores it kept busy.
func foreign(a, b cpuSnap, measured time.Duration) (time.Duration, float64) {
	if !a.ok || !b.ok {
		return 0, 0
	}
	d := (b.busy - a.busy) - (b.self - a.self) - (b.registry - a.registry) - measured
	d = max(d, 0)
	wall := b.at.Sub(a.at)
	if wall <= 0 {
		return d, 0
	}
	return d, float64(d) / float64(wall)
}

// procCPU is utime+stime of process pid.
func procCPU(pid int) (time.Duration, bool) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, false
	}
	// The command name is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, false
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+st) * clockTick, true
}

// childNamed finds a direct child of this process by command name (the
// registry testenv started), or 0.
func childNamed(comm string) int {
	ents, _ := os.ReadDir("/proc")
	me := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		open, close := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
		if open < 0 || close < open {
			continue
		}
		f := strings.Fields(string(b[close+1:]))
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		if ppid == me && string(b[open+1:close]) == comm {
			return pid
		}
	}
	return 0
}

// loadAvg is the first field of /proc/loadavg, or "".
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return ""
	}
	return f[0]
}
