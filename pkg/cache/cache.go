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
	"strings"
	"sync"
	"time"
)

// DefaultMaxBytes caps each kind of entry that has no cap of its own: a few
// hundred seek indexes of large layers (a 250 MB layer's index is a few
// MB).
const DefaultMaxBytes = 2 << 30

// sweepSlack is how far, as a fraction of a kind's cap, the bytes written
// since the last sweep may take the kind over its cap before the next sweep:
// a sweep lists the kind's whole directory, so it runs once per cap/16
// bytes written, not after every Put (thousands of small chunk entries).
const sweepSlack = 16

// magic starts every entry's header line.
const magic = "sg-cache v1"

// Cache is a directory of entries. A nil *Cache is a cache that holds
// nothing and keeps nothing (--no-cache).
type Cache struct {
	dir      string
	maxBytes int64
	kindMax  map[string]int64
	warnf    func(format string, args ...any)

	mu      sync.Mutex
	used    map[string]int64 // bytes of each kind, from its last sweep plus Puts since
	touched map[string]bool  // packs marked recently used (see touch)
}

// Option configures Open.
type Option func(*Cache) error

// WithMaxBytes sets the size cap of each kind of entry that has no cap of
// its own (DefaultMaxBytes by default).
func WithMaxBytes(n int64) Option {
	return func(c *Cache) error {
		if n <= 0 {
			return fmt.Errorf("cache size cap must be positive, got %d", n)
		}
		c.maxBytes = n
		return nil
	}
}

// WithKindMaxBytes sets the size cap of the entries of one kind. Each kind
// is evicted on its own, so that many cheap entries (chunks) never push out
// a few costly ones (seek indexes).
func WithKindMaxBytes(kind string, n int64) Option {
	return func(c *Cache) error {
		if n <= 0 {
			return fmt.Errorf("cache size cap must be positive, got %d", n)
		}
		if !namePart.MatchString(kind) {
			return fmt.Errorf("invalid cache kind %q", kind)
		}
		if c.kindMax == nil {
			c.kindMax = map[string]int64{}
		}
		c.kindMax[kind] = n
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
	c := &Cache{dir: abs, maxBytes: DefaultMaxBytes, used: map[string]int64{}}
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

// Keys returns the keys of the entries of kind (digests as "alg:hex"),
// from one listing of its directory, without reading or checking them.
func (c *Cache) Keys(kind string) map[string]bool {
	if c == nil || !namePart.MatchString(kind) {
		return nil
	}
	f, err := os.Open(filepath.Join(c.dir, kind))
	if err != nil {
		return nil
	}
	defer f.Close()
	names, _ := f.Readdirnames(-1)
	keys := make(map[string]bool, len(names))
	for _, n := range names {
		if len(n) > 0 && n[0] == '.' || strings.HasPrefix(n, "pack-") {
			continue // a temp file, a pack (see Packed)
		}
		if alg, hx, ok := strings.Cut(n, "-"); ok && (alg == "sha256" || alg == "sha512") {
			n = alg + ":" + hx
		}
		keys[n] = true
	}
	return keys
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
	data, _, err := unseal(magic, b)
	return data, err
}

// seal is a file the cache writes: a header line "MAGIC sha256:HEX SIZE"
// describing body, then body. Every entry and pack index is one. sum is
// body's sha256 when the caller has it already, else nil.
func seal(magic string, body, sum []byte) []byte {
	if sum == nil {
		s := sha256.Sum256(body)
		sum = s[:]
	}
	header := fmt.Sprintf("%s sha256:%s %d\n", magic, hex.EncodeToString(sum), len(body))
	return append([]byte(header), body...)
}

// unseal checks a sealed file b against its header and returns its body
// and the body's digest.
func unseal(magic string, b []byte) (body []byte, digest string, err error) {
	line, body, ok := bytes.Cut(b, []byte{'\n'})
	rest, isMagic := bytes.CutPrefix(line, []byte(magic+" "))
	f := bytes.Fields(rest)
	if !ok || !isMagic || len(f) != 2 {
		return nil, "", errors.New("bad header")
	}
	if string(f[1]) != strconv.Itoa(len(body)) {
		return nil, "", fmt.Errorf("%d bytes, header says %s", len(body), f[1])
	}
	sum := sha256.Sum256(body)
	digest = "sha256:" + hex.EncodeToString(sum[:])
	if digest != string(f[0]) {
		return nil, "", fmt.Errorf("digest %s, header says %s", digest, f[0])
	}
	return body, digest, nil
}

// writeSealed writes body sealed with magic (see seal) to path: under a
// temporary name in the same directory, renamed into place once complete.
// It returns the bytes written.
func writeSealed(path, magic string, body, sum []byte) (int64, error) {
	b := seal(magic, body, sum)
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return 0, err
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return 0, err
	}
	return int64(len(b)), nil
}

// Put stores data as entry kind/key, replacing any, then evicts the least
// recently used entries beyond the size cap. A nil cache keeps nothing.
func (c *Cache) Put(kind, key string, data []byte) error {
	if c == nil {
		return nil
	}
	return c.put(kind, key, data, nil)
}

// PutContent stores data under its own digest dgst ("sha256:HEX"), which
// the caller has just computed from data (a chunk checked against its TOC
// digest): the entry's header takes it as it is, sparing a second pass over
// the bytes. LoadContent checks it on the way back.
func (c *Cache) PutContent(kind, dgst string, data []byte) error {
	if c == nil {
		return nil
	}
	alg, hx, ok := cutDigest(dgst)
	sum, err := hex.DecodeString(hx)
	if !ok || alg != "sha256" || err != nil || len(sum) != sha256.Size {
		return fmt.Errorf("cache key %q is not a sha256 digest", dgst)
	}
	return c.put(kind, dgst, data, sum)
}

// ErrDamaged is what LoadContent reports for an entry that failed its
// check; the entry has been removed.
var ErrDamaged = errors.New("damaged cache entry")

// LoadContent returns the entry stored under its digest dgst by
// PutContent, after checking that its bytes have that digest (which also
// checks its header): nil, nil when there is none; an error wrapping
// ErrDamaged when it fails the check, in which case it is removed. Unlike
// Get it warns of nothing: the caller says what it does about it.
func (c *Cache) LoadContent(kind, dgst string) ([]byte, error) {
	if c == nil {
		return nil, nil
	}
	p, err := c.path(kind, dgst)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("reading cache entry %s: %w", p, err)
	}
	data, got, err := unseal(magic, b)
	switch {
	case err != nil:
		err = fmt.Errorf("cache entry %s: %w: %w", p, ErrDamaged, err)
	case got != dgst:
		err = fmt.Errorf("cache entry %s: %w: its bytes have digest %s, wanted %s", p, ErrDamaged, got, dgst)
	}
	if err != nil {
		_ = os.Remove(p)
		return nil, err
	}
	now := time.Now()
	_ = os.Chtimes(p, now, now) // recently used: evicted last
	return data, nil
}

// put writes an entry whose data has sha256 digest sum.
func (c *Cache) put(kind, key string, data, sum []byte) error {
	p, err := c.path(kind, key)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("making cache directory: %w", err)
	}
	n, err := writeSealed(p, magic, data, sum)
	if err != nil {
		return fmt.Errorf("writing cache entry %s: %w", p, err)
	}
	c.added(kind, p, n)
	return nil
}

// capOf returns the size cap of kind.
func (c *Cache) capOf(kind string) int64 {
	if n, ok := c.kindMax[kind]; ok {
		return n
	}
	return c.maxBytes
}

// added counts n more bytes (an entry's, header included) of kind,
// and sweeps the kind when it is over its cap by more than the slack. The
// first Put of a kind sweeps it, to learn how much it holds; after that the
// count is kept here, so a sweep (a listing of the kind's directory) runs
// once per cap/sweepSlack bytes written at most. Entries other runs write
// meanwhile are counted at the next sweep.
func (c *Cache) added(kind, keep string, n int64) {
	limit := c.capOf(kind)
	c.mu.Lock()
	defer c.mu.Unlock()
	used, known := c.used[kind]
	if known {
		used += n
		c.used[kind] = used
		if used <= limit+limit/sweepSlack {
			return
		}
	}
	c.used[kind] = c.sweep(kind, keep, limit)
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

// sweep removes the least recently used entries of kind (never keep, the
// one just written) until the rest fit in limit bytes, and temp files
// killed runs left; it returns the bytes left.
func (c *Cache) sweep(kind, keep string, limit int64) int64 {
	type file struct {
		path string
		size int64
		mod  time.Time
	}
	var files []file
	var total int64
	_ = filepath.WalkDir(filepath.Join(c.dir, kind), func(p string, d fs.DirEntry, err error) error {
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
	if total <= limit {
		return total
	}
	sort.Slice(files, func(i, j int) bool { return files[i].mod.Before(files[j].mod) })
	sizes := make(map[string]int64, len(files))
	for _, f := range files {
		sizes[f.path] = f.size
	}
	remove := func(p string) {
		if n, ok := sizes[p]; ok && os.Remove(p) == nil {
			total -= n
			delete(sizes, p)
		}
	}
	for _, f := range files {
		if total <= limit {
			break
		}
		if f.path == keep || strings.TrimSuffix(f.path, indexExt)+packExt == keep {
			continue
		}
		remove(f.path)
		// A pack and its index go together.
		if base, ok := strings.CutSuffix(f.path, packExt); ok {
			remove(base + indexExt)
		} else if base, ok := strings.CutSuffix(f.path, indexExt); ok {
			remove(base + packExt)
		}
	}
	return total
}

func (c *Cache) warn(format string, args ...any) {
	if c.warnf != nil {
		c.warnf(format, args...)
	}
}
