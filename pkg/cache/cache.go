package cache

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"time"
)

// DefaultMaxBytes caps the directory: a few hundred seek indexes of large
// layers (a 250 MB layer's index is a few MB).
const DefaultMaxBytes = 2 << 30

// magic starts every entry's header line.
const magic = "sg-cache v1"

// Cache is a directory of entries. A nil *Cache is a cache that holds
// nothing and keeps nothing (--no-cache).
type Cache struct {
	dir      string
	maxBytes int64
	warnf    func(format string, args ...any)
}

// Option configures Open.
type Option func(*Cache) error

// WithMaxBytes sets the size cap (DefaultMaxBytes by default).
func WithMaxBytes(n int64) Option {
	return func(c *Cache) error {
		if n <= 0 {
			return fmt.Errorf("cache size cap must be positive, got %d", n)
		}
		c.maxBytes = n
		return nil
	}
}

// WithWarnf sets where warnings go (a damaged entry removed, an entry that
// could not be kept); by default they are dropped.
func WithWarnf(f func(format string, args ...any)) Option {
	return func(c *Cache) error {
		c.warnf = f
		return nil
	}
}

// DefaultDir is the cache directory when none is given: stargz-get under
// the user's cache directory (os.UserCacheDir, e.g. ~/.cache).
func DefaultDir() (string, error) {
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("finding the user cache directory: %w", err)
	}
	return filepath.Join(d, "stargz-get"), nil
}

// Open returns the cache in dir. The directory is made when first written,
// not here: a run that only reads needs no writable directory.
func Open(dir string, opts ...Option) (*Cache, error) {
	if dir == "" {
		return nil, errors.New("cache directory: empty path")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("cache directory %s: %w", dir, err)
	}
	c := &Cache{dir: abs, maxBytes: DefaultMaxBytes}
	for _, o := range opts {
		if err := o(c); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Dir returns the cache's directory ("" for a nil cache).
func (c *Cache) Dir() string {
	if c == nil {
		return ""
	}
	return c.dir
}

var namePart = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,127}$`)

// path returns the file of entry kind/key, refusing names that could leave
// the directory.
func (c *Cache) path(kind, key string) (string, error) {
	if !namePart.MatchString(kind) {
		return "", fmt.Errorf("invalid cache kind %q", kind)
	}
	k := key
	if alg, hex, ok := cutDigest(key); ok {
		k = alg + "-" + hex
	}
	if !namePart.MatchString(k) {
		return "", fmt.Errorf("invalid cache key %q", key)
	}
	return filepath.Join(c.dir, kind, k), nil
}

// cutDigest splits "sha256:HEX".
func cutDigest(s string) (alg, hex string, ok bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == ':' {
			return s[:i], s[i+1:], true
		}
	}
	return "", "", false
}

// Has reports whether an entry is there, without reading or checking it.
func (c *Cache) Has(kind, key string) bool {
	if c == nil {
		return false
	}
	p, err := c.path(kind, key)
	if err != nil {
		return false
	}
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// Get returns the contents of an entry, and false when there is none. An
// entry whose header does not match its contents is removed with a warning
// and reported as missing.
func (c *Cache) Get(kind, key string) ([]byte, bool) {
	if c == nil {
		return nil, false
	}
	p, err := c.path(kind, key)
	if err != nil {
		return nil, false
	}
	b, err := os.ReadFile(p)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			c.warn("cache entry %s cannot be read: %v", p, err)
		}
		return nil, false
	}
	data, err := decode(b)
	if err != nil {
		c.warn("cache entry %s is damaged (%v): removed it, it will be built again", p, err)
		c.Remove(kind, key)
		return nil, false
	}
	now := time.Now()
	_ = os.Chtimes(p, now, now) // recently used: evicted last
	return data, true
}

// decode checks an entry's header against its contents.
func decode(b []byte) ([]byte, error) {
	line, data, ok := bytes.Cut(b, []byte{'\n'})
	if !ok {
		return nil, errors.New("no header")
	}
	f := bytes.Fields(line)
	if len(f) != 4 || string(f[0])+" "+string(f[1]) != magic {
		return nil, errors.New("bad header")
	}
	n, err := strconv.ParseInt(string(f[3]), 10, 64)
	if err != nil || n != int64(len(data)) {
		return nil, fmt.Errorf("%d bytes, header says %s", len(data), f[3])
	}
	sum := sha256.Sum256(data)
	if got := "sha256:" + hex.EncodeToString(sum[:]); got != string(f[2]) {
		return nil, fmt.Errorf("digest %s, header says %s", got, f[2])
	}
	return data, nil
}

// Put stores data as entry kind/key, replacing any, then evicts the least
// recently used entries beyond the size cap. A nil cache keeps nothing.
func (c *Cache) Put(kind, key string, data []byte) error {
	if c == nil {
		return nil
	}
	p, err := c.path(kind, key)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("making cache directory: %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(p), ".tmp-*")
	if err != nil {
		return fmt.Errorf("writing cache entry: %w", err)
	}
	sum := sha256.Sum256(data)
	_, err = fmt.Fprintf(f, "%s sha256:%s %d\n", magic, hex.EncodeToString(sum[:]), len(data))
	if err == nil {
		_, err = f.Write(data)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), p)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("writing cache entry %s: %w", p, err)
	}
	c.evict(p)
	return nil
}

// Remove deletes an entry, if it is there.
func (c *Cache) Remove(kind, key string) {
	if c == nil {
		return
	}
	if p, err := c.path(kind, key); err == nil {
		_ = os.Remove(p)
	}
}

// staleTemp is how old a temp file of a Put must be to be taken for one a
// killed run left behind.
const staleTemp = time.Hour

// evict removes the least recently used entries (never keep, the one just
// written) until the directory fits the cap, and temp files killed runs
// left.
func (c *Cache) evict(keep string) {
	type file struct {
		path string
		size int64
		mod  time.Time
	}
	var files []file
	var total int64
	_ = filepath.WalkDir(c.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		fi, err := d.Info()
		if err != nil || !fi.Mode().IsRegular() {
			return nil
		}
		if len(d.Name()) > 5 && d.Name()[:5] == ".tmp-" {
			if time.Since(fi.ModTime()) > staleTemp {
				_ = os.Remove(p)
			}
			return nil
		}
		files = append(files, file{p, fi.Size(), fi.ModTime()})
		total += fi.Size()
		return nil
	})
	if total <= c.maxBytes {
		return
	}
	sort.Slice(files, func(i, j int) bool { return files[i].mod.Before(files[j].mod) })
	for _, f := range files {
		if total <= c.maxBytes {
			break
		}
		if f.path == keep {
			continue
		}
		if os.Remove(f.path) == nil {
			total -= f.size
		}
	}
}

func (c *Cache) warn(format string, args ...any) {
	if c.warnf != nil {
		c.warnf(format, args...)
	}
}
