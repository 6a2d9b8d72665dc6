package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Retry defaults. A request is tried DefaultTries times in all before the
// client gives up: enough to ride out a registry restarting or a burst of
// 503s from a CDN, few enough that a broken registry is reported within
// seconds. The fetch engine retries failed range reads on top of this.
const (
	DefaultTries = 4
	// DefaultMinBackoff is the wait before the second try; each further
	// wait doubles, up to DefaultMaxBackoff.
	DefaultMinBackoff = 250 * time.Millisecond
	DefaultMaxBackoff = 4 * time.Second
	// DefaultMaxRetryAfter caps how long a Retry-After header (429, 503)
	// holds a request back: registries under load ask for a few seconds,
	// and a tool that waits minutes looks hung.
	DefaultMaxRetryAfter = 30 * time.Second
	// DefaultIdleTimeout is how long a request may wait for its response
	// headers, and a response body for its next bytes, before the
	// connection counts as stalled. Registries answer within a second or
	// two; a connection silent for this long is not coming back.
	DefaultIdleTimeout = 30 * time.Second
)

// ErrStalled means a connection sent nothing for the idle timeout (see
// WithIdleTimeout). A stalled request is retried like a reset one.
var ErrStalled = errors.New("connection stalled")

// RetryPolicy says how idempotent requests (GET and HEAD: pings,
// manifests, tokens, blob ranges) are retried on connection resets, stalls,
// timeouts, 408, 429 and 5xx answers.
type RetryPolicy struct {
	// Tries is how many times a request is tried in all; 1 turns retries
	// off.
	Tries int
	// MinBackoff is the wait before the second try. Each further wait
	// doubles, up to MaxBackoff. Every wait is drawn at random between
	// half and all of that (jitter), so parallel downloaders hit by one
	// failure do not come back in lockstep.
	MinBackoff, MaxBackoff time.Duration
	// MaxRetryAfter caps the wait a Retry-After header asks for.
	MaxRetryAfter time.Duration
}

// DefaultRetryPolicy returns the policy New uses unless WithRetry says
// otherwise.
func DefaultRetryPolicy() RetryPolicy {
	return RetryPolicy{
		Tries:         DefaultTries,
		MinBackoff:    DefaultMinBackoff,
		MaxBackoff:    DefaultMaxBackoff,
		MaxRetryAfter: DefaultMaxRetryAfter,
	}
}

func (p RetryPolicy) check() error {
	switch {
	case p.Tries < 1:
		return fmt.Errorf("retry policy: Tries is %d, want at least 1", p.Tries)
	case p.MinBackoff < 0 || p.MaxBackoff < p.MinBackoff:
		return fmt.Errorf("retry policy: want 0 <= MinBackoff (%v) <= MaxBackoff (%v)", p.MinBackoff, p.MaxBackoff)
	case p.MaxRetryAfter < 0:
		return fmt.Errorf("retry policy: negative MaxRetryAfter %v", p.MaxRetryAfter)
	}
	return nil
}

// backoff is the wait after the failed try number try (1-based).
func (p RetryPolicy) backoff(try int) time.Duration {
	d := p.MinBackoff
	for i := 1; i < try && d < p.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, p.MaxBackoff)
	if d <= 0 {
		return 0
	}
	return d/2 + rand.N(d/2+1)
}

// retryTransport retries idempotent requests and turns a connection that
// stays silent for idle into ErrStalled. It sits below authentication, so
// a retried request carries the same token, and a 401 (an expired token)
// is left to the bearer transport above, which fetches a new one.
type retryTransport struct {
	inner  http.RoundTripper
	policy RetryPolicy
	idle   time.Duration
	logf   func(format string, args ...any)
}

func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodGet && req.Method != http.MethodHead || req.Body != nil && req.Body != http.NoBody {
		return t.once(req)
	}
	ctx := req.Context()
	for try := 1; ; try++ {
		resp, err := t.once(req)
		why, wait, retry := t.judge(ctx, resp, err, try)
		if !retry {
			return resp, err
		}
		if try >= t.policy.Tries {
			return nil, &triesError{method: req.Method, url: RedactURL(req.URL.String()), tries: try, err: giveUp(resp, err)}
		}
		if resp != nil {
			drain(resp.Body)
		}
		t.log("%s %s: %v; retrying in %s (try %d of %d)", req.Method, RedactURL(req.URL.String()), why, wait.Round(time.Millisecond), try+1, t.policy.Tries)
		timer := time.NewTimer(wait)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return nil, ctx.Err()
		}
	}
}

// judge says whether a try's outcome is worth another try, why, and how
// long to wait first.
func (t *retryTransport) judge(ctx context.Context, resp *http.Response, err error, try int) (why any, wait time.Duration, retry bool) {
	if ctx.Err() != nil {
		return nil, 0, false
	}
	if err != nil {
		return err, t.policy.backoff(try), retryableError(err)
	}
	switch resp.StatusCode {
	case http.StatusRequestTimeout, http.StatusTooManyRequests,
		http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
	default:
		return nil, 0, false
	}
	wait = t.policy.backoff(try)
	if ra, ok := retryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
		wait = min(ra, t.policy.MaxRetryAfter)
	}
	return resp.Status, wait, true
}

// once makes one try, with the idle timeout watching the wait for the
// response headers and then every read of the body.
func (t *retryTransport) once(req *http.Request) (*http.Response, error) {
	if t.idle <= 0 {
		return t.inner.RoundTrip(req)
	}
	ctx, cancel := context.WithCancelCause(req.Context())
	stall := fmt.Errorf("%w: no data for %s", ErrStalled, t.idle)
	timer := time.AfterFunc(t.idle, func() { cancel(stall) })
	resp, err := t.inner.RoundTrip(req.WithContext(ctx))
	timer.Stop()
	if err != nil {
		if context.Cause(ctx) == stall && req.Context().Err() == nil {
			err = stall
		}
		cancel(nil)
		return nil, err
	}
	resp.Body = &idleBody{rc: resp.Body, ctx: ctx, cancel: cancel, timer: timer, idle: t.idle, stall: stall}
	return resp, nil
}

func (t *retryTransport) log(format string, args ...any) {
	if t.logf != nil {
		t.logf(format, args...)
	}
}

// idleBody fails a read that waits longer than idle for data.
type idleBody struct {
	rc     io.ReadCloser
	ctx    context.Context
	cancel context.CancelCauseFunc
	timer  *time.Timer
	idle   time.Duration
	stall  error
}

func (b *idleBody) Read(p []byte) (int, error) {
	b.timer.Reset(b.idle)
	n, err := b.rc.Read(p)
	b.timer.Stop()
	if err != nil && err != io.EOF && context.Cause(b.ctx) == b.stall {
		err = b.stall
	}
	return n, err
}

func (b *idleBody) Close() error {
	b.timer.Stop()
	err := b.rc.Close()
	b.cancel(nil)
	return err
}

// retryableError reports whether a failure before or while reading a
// response is worth another try: the connection was reset, closed early,
// timed out or stalled. Refused connections, unknown hosts and TLS errors
// are not: trying again will not change them.
func retryableError(err error) bool {
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return false
	}
	var nerr net.Error
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return false
	case errors.Is(err, ErrStalled),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNABORTED), errors.Is(err, syscall.EPIPE),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return true
	case errors.As(err, &nerr) && nerr.Timeout():
		return true
	}
	return false
}

// retryAfter parses a Retry-After header: seconds, or an HTTP date.
func retryAfter(h string, now time.Time) (time.Duration, bool) {
	if h == "" {
		return 0, false
	}
	if s, err := strconv.Atoi(h); err == nil {
		if s < 0 {
			return 0, false
		}
		return time.Duration(s) * time.Second, true
	}
	if t, err := http.ParseTime(h); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

// giveUp turns the last try's outcome into the error reported.
func giveUp(resp *http.Response, err error) error {
	if resp == nil {
		return err
	}
	defer resp.Body.Close()
	cerr := transport.CheckError(resp)
	var terr *transport.Error
	if errors.As(cerr, &terr) {
		return errors.New(registryWords(terr))
	}
	return fmt.Errorf("HTTP %s", resp.Status)
}

// triesError is the last failure of a request that failed every try.
type triesError struct {
	method, url string // the URL without query or user info
	tries       int
	err         error
}

func (e *triesError) Error() string {
	s := "tries"
	if e.tries == 1 {
		s = "try"
	}
	return fmt.Sprintf("%s %s: %v (gave up after %d %s)", e.method, e.url, e.err, e.tries, s)
}

func (e *triesError) Unwrap() error { return e.err }

// Is makes every request that failed all its tries an ErrUnavailable.
func (e *triesError) Is(target error) bool { return target == ErrUnavailable }
