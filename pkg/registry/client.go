package registry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// DefaultMaxConnsPerHost bounds idle connections kept per host. It is well
// above the fetch engine's default number of parallel downloaders, so every
// downloader keeps its connection between requests.
const DefaultMaxConnsPerHost = 64

// Option configures a Client.
type Option func(*options) error

type options struct {
	user, password string
	hasCredential  bool
	keychain       authn.Keychain
	plainHTTP      bool
	insecure       bool
	rootCAs        *x509.CertPool
	transport      http.RoundTripper
	userAgent      string
	logf           func(format string, args ...any)
	retry          RetryPolicy
	idle           time.Duration
}

// WithCredential authenticates with HTTP Basic credentials (used directly
// by Basic registries, exchanged for a token by Bearer ones) instead of
// the docker config keychain.
func WithCredential(user, password string) Option {
	return func(o *options) error {
		if user == "" {
			return errors.New("credential has an empty user name")
		}
		o.user, o.password, o.hasCredential = user, password, true
		return nil
	}
}

// WithKeychain resolves credentials from k when no WithCredential is
// given. The default is DefaultKeychain: docker's config.json with its
// credential helpers, then containers auth.json.
func WithKeychain(k authn.Keychain) Option {
	return func(o *options) error { o.keychain = k; return nil }
}

// WithPlainHTTP lets the client speak plain HTTP to any registry. Without
// it, go-containerregistry tries HTTPS first and falls back to plain HTTP
// only for registries on loopback ("localhost:PORT", 127.0.0.0/8, ::1),
// "*.local" names and private RFC 1918 addresses.
func WithPlainHTTP(on bool) Option {
	return func(o *options) error { o.plainHTTP = on; return nil }
}

// WithInsecure skips TLS certificate verification.
func WithInsecure(on bool) Option {
	return func(o *options) error { o.insecure = on; return nil }
}

// WithCAFile trusts the PEM certificates in path, on top of the system's
// roots, for registries and blob storage with a private CA.
func WithCAFile(path string) Option {
	return func(o *options) error {
		pem, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("reading CA file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("reading CA file %s: no PEM certificates in it", path)
		}
		o.rootCAs = pool
		return nil
	}
}

// WithRetry sets how idempotent requests are retried; the default is
// DefaultRetryPolicy().
func WithRetry(p RetryPolicy) Option {
	return func(o *options) error {
		if err := p.check(); err != nil {
			return err
		}
		o.retry = p
		return nil
	}
}

// WithIdleTimeout sets how long a request may wait for its response
// headers, and then for each read of its body, before it fails with
// ErrStalled (and is retried). The default is DefaultIdleTimeout; zero
// turns the watch off.
func WithIdleTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d < 0 {
			return fmt.Errorf("negative idle timeout %v", d)
		}
		o.idle = d
		return nil
	}
}

// WithTransport sets the base transport below authentication and retries
// (for tests, proxies and link shaping); WithInsecure and WithCAFile do not
// apply to it. The default is a clone of http.DefaultTransport with
// DefaultMaxConnsPerHost idle connections.
func WithTransport(t http.RoundTripper) Option {
	return func(o *options) error { o.transport = t; return nil }
}

// WithUserAgent sets the User-Agent sent to registries.
func WithUserAgent(ua string) Option {
	return func(o *options) error { o.userAgent = ua; return nil }
}

// WithLogf receives one line per HTTP request (method, URL without query,
// status, duration), and one per retry, fallback and credential source,
// for --verbose. Credentials and signed URL query parameters are never
// logged.
func WithLogf(logf func(format string, args ...any)) Option {
	return func(o *options) error { o.logf = logf; return nil }
}

// Client reads manifests and blob ranges from registries. It is safe for
// concurrent use.
type Client struct {
	opts options
	base http.RoundTripper

	mu    sync.Mutex
	repos map[string]*repoConn

	// multi says, per registry (host[:port]), whether it serves requests
	// for several ranges; see multiTurn.
	multiMu sync.Mutex
	multi   map[string]*multiState
}

// multiState is what a client knows of one registry's multi-range answers.
type multiState struct {
	known, served bool
	// probing is closed when the request finding out is answered.
	probing chan struct{}
}

// multiRefused reports whether registry refused a multi-range request
// before.
func (c *Client) multiRefused(registry string) bool {
	c.multiMu.Lock()
	defer c.multiMu.Unlock()
	st := c.multi[registry]
	return st != nil && st.known && !st.served
}

// multiTurn says whether to ask registry for several ranges in one
// request. Registries differ (see Blob.ReadSpans), and a refusal is to be
// learnt once per run: while the first such request to a registry is
// unanswered, others wait for its answer. When send is true, the caller
// must call learnt with what the answer said (served, or refused), or
// with neither when it failed for another reason, so that the next request
// finds out.
func (c *Client) multiTurn(ctx context.Context, registry string) (send bool, learnt func(served, refused bool), err error) {
	for {
		c.multiMu.Lock()
		if c.multi == nil {
			c.multi = map[string]*multiState{}
		}
		st := c.multi[registry]
		if st == nil {
			st = &multiState{}
			c.multi[registry] = st
		}
		switch {
		case st.known:
			send := st.served // read under the lock: a refusal may be learnt meanwhile
			c.multiMu.Unlock()
			return send, func(served, refused bool) {
				if refused {
					c.refuseMulti(registry)
				}
			}, nil
		case st.probing == nil:
			ch := make(chan struct{})
			st.probing = ch
			c.multiMu.Unlock()
			return true, func(served, refused bool) {
				c.multiMu.Lock()
				if served || refused {
					st.known, st.served = true, served && !refused
				}
				st.probing = nil
				c.multiMu.Unlock()
				close(ch)
			}, nil
		}
		ch := st.probing
		c.multiMu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return false, nil, ctx.Err()
		}
	}
}

type repoConn struct {
	mu sync.Mutex // held during the handshake, so it happens once
	rt http.RoundTripper
}

// refuseMulti remembers that registry refused a multi-range request; it
// reports whether that was news.
func (c *Client) refuseMulti(registry string) bool {
	c.multiMu.Lock()
	defer c.multiMu.Unlock()
	if c.multi == nil {
		c.multi = map[string]*multiState{}
	}
	st := c.multi[registry]
	if st == nil {
		st = &multiState{}
		c.multi[registry] = st
	}
	news := !st.known || st.served
	st.known, st.served = true, false
	return news
}

// New returns a Client configured by opts.
func New(opts ...Option) (*Client, error) {
	c := &Client{repos: map[string]*repoConn{}}
	c.opts.keychain = DefaultKeychain
	c.opts.userAgent = "stargz-get"
	c.opts.retry = DefaultRetryPolicy()
	c.opts.idle = DefaultIdleTimeout
	for _, opt := range opts {
		if err := opt(&c.opts); err != nil {
			return nil, err
		}
	}
	base := c.opts.transport
	if base == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = DefaultMaxConnsPerHost
		t.MaxIdleConns = 4 * DefaultMaxConnsPerHost
		t.DialContext = (&net.Dialer{Timeout: 15 * time.Second, KeepAlive: 30 * time.Second}).DialContext
		if c.opts.insecure || c.opts.rootCAs != nil {
			t.TLSClientConfig = &tls.Config{
				InsecureSkipVerify: c.opts.insecure, //nolint:gosec // asked for with --insecure
				RootCAs:            c.opts.rootCAs,
			}
		}
		base = t
	}
	if c.opts.logf != nil {
		base = &logTransport{inner: base, logf: c.opts.logf}
	}
	// Retries below authentication: a retried request keeps its token, and
	// an expired token (401) is the bearer transport's to renew.
	base = &retryTransport{inner: base, policy: c.opts.retry, idle: c.opts.idle, logf: c.opts.logf}
	c.base = transport.NewUserAgent(base, c.opts.userAgent)
	return c, nil
}

// ParseReference parses s honouring the client's plain-HTTP setting.
func (c *Client) ParseReference(s string) (name.Reference, error) {
	return ParseReference(s, c.opts.plainHTTP)
}

// authenticator returns the credentials for repo's registry.
func (c *Client) authenticator(ctx context.Context, repo name.Repository) (authn.Authenticator, error) {
	if c.opts.hasCredential {
		c.logf("%s: using the credentials given", repo.RegistryStr())
		return authn.FromConfig(authn.AuthConfig{Username: c.opts.user, Password: c.opts.password}), nil
	}
	a, err := authn.Resolve(ctx, c.opts.keychain, repo)
	if err != nil {
		return nil, fmt.Errorf("reading credentials for %s: %w", repo.RegistryStr(), err)
	}
	switch s, ok := a.(*sourcedAuth); {
	case ok:
		c.logf("%s: using credentials from %s", repo.RegistryStr(), s.source)
	case a == authn.Anonymous:
		c.logf("%s: no credentials found; asking anonymously", repo.RegistryStr())
	default:
		c.logf("%s: using credentials from the keychain", repo.RegistryStr())
	}
	return a, nil
}

// transport returns the authorized transport for repo, pinging the
// registry and fetching a pull token on first use. Only a successful
// handshake is kept: a failed one (a deadline, a registry briefly down) is
// tried again by the next caller.
func (c *Client) transport(ctx context.Context, repo name.Repository) (http.RoundTripper, error) {
	key := repo.String()
	c.mu.Lock()
	rc, ok := c.repos[key]
	if !ok {
		rc = &repoConn{}
		c.repos[key] = rc
	}
	c.mu.Unlock()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.rt != nil {
		return rc.rt, nil
	}
	auth, err := c.authenticator(ctx, repo)
	if err != nil {
		return nil, err
	}
	if auth == authn.Anonymous {
		if rc.rt, err = newAnonFirst(ctx, c, repo); err != nil {
			return nil, err
		}
		return rc.rt, nil
	}
	rt, err := transport.NewWithContext(ctx, repo.Registry, auth, c.base, []string{repo.Scope(transport.PullScope)})
	if err != nil {
		return nil, classify(repo.RegistryStr(), err)
	}
	rc.rt = rt
	return rt, nil
}

// logTransport logs one line per request for --verbose.
type logTransport struct {
	inner http.RoundTripper
	logf  func(format string, args ...any)
}

func (t *logTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := t.inner.RoundTrip(req)
	what := req.Method + " " + RedactURL(req.URL.String())
	if r := req.Header.Get("Range"); r != "" {
		what += " (Range: " + r + ")"
	}
	if err != nil {
		t.logf("%s: %v (%s)", what, err, time.Since(start).Round(time.Millisecond))
		return nil, err
	}
	t.logf("%s: %s (%s)", what, resp.Status, time.Since(start).Round(time.Millisecond))
	return resp, nil
}

// RedactURL drops the query and any user info from u, which is where
// signed blob-storage URLs and tokens live.
func RedactURL(u string) string {
	if i := strings.IndexAny(u, "?#"); i >= 0 {
		u = u[:i] + "?…"
	}
	if i := strings.Index(u, "://"); i >= 0 {
		rest := u[i+3:]
		authority := rest[:strings.IndexByte(rest+"/", '/')]
		if at := strings.LastIndex(authority, "@"); at >= 0 {
			u = u[:i+3] + rest[at+1:]
		}
	}
	return u
}

// drain discards a little of a response body so its connection can be
// reused, then closes it.
func drain(body io.ReadCloser) {
	_, _ = io.CopyN(io.Discard, body, 64<<10)
	_ = body.Close()
}
