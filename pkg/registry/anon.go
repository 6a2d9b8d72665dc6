package registry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// anonFirst is the transport of a repository for which no credentials are
// configured. The handshake (ping, then a token if the registry wants
// one) costs one or two round trips before the first request; registries
// that need no token (a local registry, a mirror, a CI cache) answer
// without it. So while the handshake runs, requests go out anonymously
// at once (retried as any request is); an answer other than success, a
// redirect or 416 (a 401 asking for a token, a TLS port answering plain
// HTTP, a 404 that may mean "not for you") sends the
// request again through the transport the handshake makes, which all
// requests use once it is there.
type anonFirst struct {
	c    *Client
	repo name.Repository
	// direct sends anonymous requests, with retries.
	direct http.RoundTripper

	mu   sync.Mutex
	done chan struct{} // closed when the handshake in flight ends
	rt   http.RoundTripper
	err  error
}

// newAnonFirst starts the handshake for repo and returns its anonFirst
// transport, made a transport.Wrapper, which go-containerregistry's remote
// package uses as it is (no handshake of its own, no retries on top of
// ours). Only transport.NewWithContext makes those, so it is given a
// transport that answers its ping itself: 200 (no auth) over the
// repository's scheme.
func newAnonFirst(ctx context.Context, c *Client, repo name.Repository) (http.RoundTripper, error) {
	a := &anonFirst{c: c, repo: repo, direct: c.base}
	a.handshake()
	return transport.NewWithContext(ctx, repo.Registry, authn.Anonymous, pingAnswered{a}, nil)
}

// pingAnswered answers GET /v2/ itself, for newAnonFirst.
type pingAnswered struct{ a *anonFirst }

func (p pingAnswered) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodGet || req.URL.Path != "/v2/" || req.URL.Host != p.a.repo.RegistryStr() {
		return p.a.RoundTrip(req)
	}
	if req.URL.Scheme != p.a.repo.Scheme() {
		return nil, fmt.Errorf("%s is reached over %s", req.URL.Host, p.a.repo.Scheme())
	}
	return &http.Response{
		Status: "200 OK", StatusCode: http.StatusOK, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{}, Body: http.NoBody, Request: req,
	}, nil
}

// handshake starts a handshake unless one is in flight or succeeded, and
// returns the channel closed when it ends. A failed handshake is tried
// again by the next request.
func (a *anonFirst) handshake() chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.done != nil {
		select {
		case <-a.done:
			if a.err == nil {
				return a.done
			}
		default:
			return a.done
		}
	}
	done := make(chan struct{})
	a.done, a.rt, a.err = done, nil, nil
	go func() {
		// Not the first request's context: its end must not fail the
		// handshake every later request waits for.
		rt, err := transport.NewWithContext(context.Background(), a.repo.Registry, authn.Anonymous, a.c.base, []string{a.repo.Scope(transport.PullScope)})
		a.mu.Lock()
		a.rt, a.err = rt, err
		a.mu.Unlock()
		close(done)
	}()
	return done
}

func (a *anonFirst) RoundTrip(req *http.Request) (*http.Response, error) {
	done := a.handshake()
	select {
	case <-done:
	default:
		resp, err := a.direct.RoundTrip(req)
		var tries *triesError
		switch {
		case err == nil && (resp.StatusCode < 400 || resp.StatusCode == http.StatusRequestedRangeNotSatisfiable):
			return resp, nil
		case errors.As(err, &tries):
			return nil, err // the registry answered, and was retried already
		}
		if err == nil {
			drain(resp.Body)
		}
		select {
		case <-done:
		case <-req.Context().Done():
			return nil, req.Context().Err()
		}
	}
	a.mu.Lock()
	rt, err := a.rt, a.err
	a.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return rt.RoundTrip(req)
}
