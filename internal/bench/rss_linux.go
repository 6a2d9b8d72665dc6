package main

import (
	"os"
	"syscall"
)

// maxRSS is the peak resident set size of an exited process in bytes
// (Linux reports ru_maxrss in KiB).
func maxRSS(ps *os.ProcessState) int64 {
	if ps == nil {
		return -1
	}
	ru, ok := ps.SysUsage().(*syscall.Rusage)
	if !ok {
		return -1
	}
	return ru.Maxrss * 1024
}
