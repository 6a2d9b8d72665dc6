//go:build !linux

package main

import (
	"os"
	"os/exec"
	"time"
)

// maxRSS is unknown off Linux (ru_maxrss units differ by system).
func maxRSS(*os.ProcessState) int64 { return -1 }

// dieWithParent is a no-op off Linux.
func dieWithParent(*exec.Cmd) {}

// selfCPU is not measured off Linux (neither is the rest of noise.go's
// /proc accounting).
func selfCPU() time.Duration { return 0 }
