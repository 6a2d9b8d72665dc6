package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"time"
)

// measured is what the measure subcommand reports about its child.
type measured struct {
	WallNs int64 `json:"wallNs"`
	MaxRSS int64 `json:"maxRSS"` // bytes, -1 when unknown
	CPUNs  int64 `json:"cpuNs"`  // user + system CPU time
	Exit   int   `json:"exit"`
}

// measure is the hidden subcommand "bench measure RESULT CMD ARGS...": it
// runs CMD with this process's stdin, stdout and stderr, and writes its
// wall time and peak RSS to the file RESULT as JSON.
//
// It exists because on Linux a child's ru_maxrss is at least the peak RSS
// of the process it was exec'd from: Go starts children with
// clone(CLONE_VM|CLONE_VFORK), so at exec the kernel folds the parent's
// high-water mark into the child's maxrss. Started from the benchmark
// itself (which holds layers' TOCs and entries), every child would read
// as large as the benchmark. Started from this small process, a child's
// reading is max(its own peak, this process's peak), a floor of a few MiB
// that the report prints.
func measure(args []string) (int, error) {
	if len(args) < 2 {
		return 2, errors.New("usage: bench measure RESULT CMD [ARGS...]")
	}
	cmd := exec.Command(args[1], args[2:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	dieWithParent(cmd)
	start := time.Now()
	err := cmd.Run()
	m := measured{WallNs: int64(time.Since(start)), MaxRSS: maxRSS(cmd.ProcessState)}
	if ps := cmd.ProcessState; ps != nil {
		m.CPUNs = int64(ps.UserTime() + ps.SystemTime())
	}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		m.Exit = ee.ExitCode()
	case err != nil:
		return 1, err
	}
	b, err := json.Marshal(m)
	if err != nil {
		return 1, err
	}
	if err := os.WriteFile(args[0], b, 0o644); err != nil {
		return 1, fmt.Errorf("writing result: %w", err)
	}
	return m.Exit, nil
}
