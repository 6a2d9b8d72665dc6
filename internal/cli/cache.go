package cli

import (
	"flag"
	"fmt"
	"io"
	"sync"

	"github.com/stargz-get/stargz-get/pkg/cache"
)

// CacheFlags choose the cache directory the tools keep seek indexes of
// plain layers in across runs.
type CacheFlags struct {
	Dir     string
	NoCache bool
}

// CacheUsage documents CacheFlags for the help texts.
const CacheUsage = `Cache (seek indexes of plain gzip layers, kept across runs):
  --cache-dir DIR           where to keep them (default stargz-get under the
                            user cache directory, e.g. ~/.cache/stargz-get;
                            capped at 2 GiB, least recently used first out)
                                                             SG_CACHE_DIR
  --no-cache                neither read nor write the cache  SG_NO_CACHE
`

// Register adds the flags to fs.
func (f *CacheFlags) Register(fs *flag.FlagSet) {
	fs.StringVar(&f.Dir, "cache-dir", "", "cache directory")
	fs.BoolVar(&f.NoCache, "no-cache", false, "do not use the cache")
}

// Warnf returns a function printing "tool: warning: ..." lines to stderr.
func Warnf(tool string, stderr io.Writer) func(format string, args ...any) {
	var mu sync.Mutex
	return func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(stderr, "%s: warning: %s\n", tool, fmt.Sprintf(format, args...))
	}
}

// Open returns the cache the flags choose: nil (nothing kept) for
// --no-cache, or when no directory can be found, which is a warning on
// stderr, not an error.
func (f *CacheFlags) Open(tool string, stderr io.Writer) *cache.Cache {
	if f.NoCache {
		return nil
	}
	dir := f.Dir
	if dir == "" {
		d, err := cache.DefaultDir()
		if err != nil {
			fmt.Fprintf(stderr, "%s: warning: %v; nothing is cached (give --cache-dir)\n", tool, err)
			return nil
		}
		dir = d
	}
	c, err := cache.Open(dir, cache.WithWarnf(Warnf(tool, stderr)))
	if err != nil {
		fmt.Fprintf(stderr, "%s: warning: %v; nothing is cached\n", tool, err)
		return nil
	}
	return c
}
