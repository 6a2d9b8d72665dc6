package cli

import (
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"

	"github.com/stargz-get/stargz-get/pkg/cache"
	"github.com/stargz-get/stargz-get/pkg/fetch"
)

// DefaultCacheMax is --cache-max: the verified chunks kept across runs,
// enough for a few versions of a large image's most used files.
const DefaultCacheMax = 1 << 30

// CacheFlags choose the cache directory the tools keep seek indexes of
// plain layers and verified chunks in across runs.
type CacheFlags struct {
	Dir     string
	NoCache bool
	// Max caps the chunk entries (--cache-max); seek indexes keep their
	// own cap, cache.DefaultMaxBytes.
	Max int64
}

// CacheUsage documents CacheFlags for the help texts.
const CacheUsage = `Cache (verified chunks of files by digest, and seek indexes of plain gzip
layers, kept across runs and shared by concurrent runs):
  --cache-dir DIR           where to keep them (default stargz-get under the
                            user cache directory, e.g. ~/.cache/stargz-get)
                                                             SG_CACHE_DIR
  --cache-max SIZE          cap of the chunks kept, least recently used
                            first out (default 1GiB; seek indexes have a
                            2 GiB cap of their own)          SG_CACHE_MAX
  --no-cache                neither read nor write the cache  SG_NO_CACHE
`

// Register adds the flags to fs.
func (f *CacheFlags) Register(fs *flag.FlagSet) {
	fs.StringVar(&f.Dir, "cache-dir", "", "cache directory")
	fs.BoolVar(&f.NoCache, "no-cache", false, "do not use the cache")
	f.Max = DefaultCacheMax
	fs.Func("cache-max", "cap of the chunks kept", func(s string) error {
		n, err := ParseSize(s)
		if err != nil {
			return err
		}
		if n <= 0 {
			return fmt.Errorf("must be positive, got %s", s)
		}
		f.Max = n
		return nil
	})
}

// ParseSize reads a byte count: a number with an optional unit, k, M, G
// (powers of 1000, with or without B) or KiB, MiB, GiB (powers of 1024).
func ParseSize(s string) (int64, error) {
	num := strings.TrimRight(s, "kKMGiB")
	unit := s[len(num):]
	mult := map[string]int64{"": 1, "B": 1, "k": 1e3, "kB": 1e3, "K": 1e3, "KB": 1e3, "M": 1e6, "MB": 1e6, "G": 1e9, "GB": 1e9,
		"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}[unit]
	n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
	if err != nil || mult == 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size (for example 500MiB, 2GiB or 1000000)", s)
	}
	return n * mult, nil
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
	max := f.Max
	if max <= 0 {
		max = DefaultCacheMax
	}
	c, err := cache.Open(dir, cache.WithWarnf(Warnf(tool, stderr)), cache.WithKindMaxBytes(fetch.ChunkKind, max))
	if err != nil {
		fmt.Fprintf(stderr, "%s: warning: %v; nothing is cached\n", tool, err)
		return nil
	}
	return c
}
