//go:build !unix

package blob

import "os"

// tryLock is a no-op where flock is not available.
func tryLock(*os.File) error { return nil }
