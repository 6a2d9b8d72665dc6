//go:build !linux

package testenv

import (
	"os"
	"os/exec"
)

// setDeathSignal is a no-op outside Linux: there is no portable way to tie
// a child's life to its parent's. Call Close.
func setDeathSignal(cmd *exec.Cmd) {}

// lockFile is a no-op outside Linux; concurrent first builds then simply
// duplicate work, and the final rename keeps the result consistent.
func lockFile(f *os.File) error { return nil }
